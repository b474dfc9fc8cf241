// AVX-VNNI instantiation of the int8 kernels: 8 pixels per vector (one ymm of words), the VEX vpdpbusd, 16 registers.
// Compiled with -mavx2 -mfma -mavxvnni -ffp-contract=off; only called after a CPU check.
#include <immintrin.h>

#include <cfloat>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "plan_int8.h"

namespace {

struct V8 {
  static constexpr int L = 8;
  typedef __m256i xvec;
  typedef __m256i wvec;
  typedef __m256i acc;
  typedef __m256i ivec;
  typedef __m256 fvec;
  static inline __m256i first(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static inline acc azero() { return _mm256_setzero_si256(); }
  static inline ivec izero() { return _mm256_setzero_si256(); }
  static inline xvec loadx(const uint32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static inline wvec wprep(int32_t w) { return _mm256_set1_epi32(w); }
  static inline acc dot(acc a, xvec x, wvec w) { return _mm256_dpbusd_avx_epi32(a, x, w); }
  static inline ivec finish(acc a) { return a; }
  static inline fvec cvt(ivec v) { return _mm256_cvtepi32_ps(v); }
  static inline fvec set1(float f) { return _mm256_set1_ps(f); }
  static inline fvec fmadd(fvec a, fvec b, fvec c) { return _mm256_fmadd_ps(a, b, c); }
  static inline fvec add(fvec a, fvec b) { return _mm256_add_ps(a, b); }
  // max(0, v): the second operand where the first is not greater, so a NaN passes.
  static inline fvec relu(fvec v) { return _mm256_max_ps(_mm256_setzero_ps(), v); }
  static inline fvec loadf(const float* p, int n) { return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, first(n)); }
  static inline void storef(float* p, fvec v, int n) {
    if (n >= 8)
      _mm256_storeu_ps(p, v);
    else
      _mm256_maskstore_ps(p, first(n), v);
  }
  static inline void storei(uint32_t* p, ivec v, int n) {
    if (n >= 8)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
    else
      _mm256_maskstore_epi32(reinterpret_cast<int*>(p), first(n), v);
  }
  static inline ivec quant(fvec v, fvec s) {
    fvec q = _mm256_div_ps(v, s);
    q = _mm256_max_ps(q, _mm256_setzero_ps());  // NaN -> 0
    q = _mm256_min_ps(q, _mm256_set1_ps(255.0f));
    return _mm256_cvtps_epi32(_mm256_round_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static inline ivec combine(ivec a, ivec b, ivec c, ivec d) {
    return _mm256_or_si256(_mm256_or_si256(a, _mm256_slli_epi32(b, 8)),
                           _mm256_or_si256(_mm256_slli_epi32(c, 16), _mm256_slli_epi32(d, 24)));
  }
  static inline ivec zero_lanes(ivec v, uint32_t bits) {
    const __m256i lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i set = _mm256_and_si256(_mm256_set1_epi32((int)bits), lane);
    return _mm256_and_si256(v, _mm256_cmpeq_epi32(set, _mm256_setzero_si256()));
  }
  static inline uint32_t nonfinite(fvec v) {
    const fvec a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
    return (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(a, _mm256_set1_ps(FLT_MAX), _CMP_NLE_UQ));
  }
  static inline int32_t lane(ivec v, int i) {
    int32_t t[8];
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(t), v);
    return t[i];
  }
  static inline void prefetch(const void* p) { _mm_prefetch((const char*)p, _MM_HINT_T0); }
};

// No memory broadcast operand in the VEX form: each weight word is broadcast into a register.
// conv1 and conv2: (4,3) (8,1) (12,1): MR x NR + NR + 1 of the 16 registers.
constexpr int C1_MRMAX = 12;
constexpr int c1_nrmax(int mr) { return mr <= 4 ? 3 : 1; }
constexpr int C2_MRMAX = 12;
constexpr int c2_nrmax(int mr) { return mr <= 4 ? 3 : 1; }
constexpr double kDotCycles = 0.5;
constexpr double kWordCycles = 0.5;

#include "int8_impl.h"

}  // namespace

namespace gatekit {
namespace detail8 {
const IsaOps8 isa8_avxvnni_ops = {"avxvnni", V8::L, &prep_impl, &conv1_impl, &conv2_impl, &interleave_impl};
}  // namespace detail8
}  // namespace gatekit
