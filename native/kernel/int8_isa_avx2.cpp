// AVX2 instantiation of the int8 kernels, exact without VNNI: 4 pixels per vector.  A K step widens the 4 pixels'
// words to int16 (vpmovzxbw: 16 values of at most 255) and the weight word to int16 (vpmovsxbw), and vpmaddwd sums
// pairs of products into int32 lanes (lanes 2i and 2i + 1: pixel i's channels 0-1 and 2-3; added at the end).
// vpmaddubsw is not used: its int16 sums saturate (2 x 255 x 127 > 32767).
// Compiled with -mavx2 -mfma -ffp-contract=off; only called after a CPU check.
#include <immintrin.h>

#include <cfloat>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "plan_int8.h"

namespace {

struct V8 {
  static constexpr int L = 4;
  typedef __m256i xvec;
  typedef __m256i wvec;
  typedef __m256i acc;
  typedef __m128i ivec;
  typedef __m128 fvec;
  static inline __m128i first(int n) { return _mm_cmpgt_epi32(_mm_set1_epi32(n), _mm_setr_epi32(0, 1, 2, 3)); }
  static inline acc azero() { return _mm256_setzero_si256(); }
  static inline ivec izero() { return _mm_setzero_si128(); }
  static inline xvec loadx(const uint32_t* p) {
    return _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static inline wvec wprep(int32_t w) { return _mm256_cvtepi8_epi16(_mm_set1_epi32(w)); }
  static inline acc dot(acc a, xvec x, wvec w) { return _mm256_add_epi32(a, _mm256_madd_epi16(x, w)); }
  // Lanes (p0 01, p0 23, p1 01, p1 23 | p2 01, p2 23, p3 01, p3 23) -> (p0, p1, p2, p3).
  static inline ivec finish(acc a) {
    const __m256i h = _mm256_hadd_epi32(a, a);  // (p0, p1, p0, p1 | p2, p3, p2, p3)
    return _mm256_castsi256_si128(_mm256_permute4x64_epi64(h, 0x08));
  }
  static inline fvec cvt(ivec v) { return _mm_cvtepi32_ps(v); }
  static inline fvec set1(float f) { return _mm_set1_ps(f); }
  static inline fvec fmadd(fvec a, fvec b, fvec c) { return _mm_fmadd_ps(a, b, c); }
  static inline fvec add(fvec a, fvec b) { return _mm_add_ps(a, b); }
  // max(0, v): the second operand where the first is not greater, so a NaN passes.
  static inline fvec relu(fvec v) { return _mm_max_ps(_mm_setzero_ps(), v); }
  static inline fvec loadf(const float* p, int n) { return n >= 4 ? _mm_loadu_ps(p) : _mm_maskload_ps(p, first(n)); }
  static inline void storef(float* p, fvec v, int n) {
    if (n >= 4)
      _mm_storeu_ps(p, v);
    else
      _mm_maskstore_ps(p, first(n), v);
  }
  static inline void storei(uint32_t* p, ivec v, int n) {
    if (n >= 4)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v);
    else
      _mm_maskstore_epi32(reinterpret_cast<int*>(p), first(n), v);
  }
  static inline ivec quant(fvec v, fvec s) {
    fvec q = _mm_div_ps(v, s);
    q = _mm_max_ps(q, _mm_setzero_ps());  // NaN -> 0
    q = _mm_min_ps(q, _mm_set1_ps(255.0f));
    return _mm_cvtps_epi32(_mm_round_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static inline ivec combine(ivec a, ivec b, ivec c, ivec d) {
    return _mm_or_si128(_mm_or_si128(a, _mm_slli_epi32(b, 8)), _mm_or_si128(_mm_slli_epi32(c, 16), _mm_slli_epi32(d, 24)));
  }
  static inline ivec zero_lanes(ivec v, uint32_t bits) {
    const __m128i lane = _mm_setr_epi32(1, 2, 4, 8);
    const __m128i set = _mm_and_si128(_mm_set1_epi32((int)bits), lane);
    return _mm_and_si128(v, _mm_cmpeq_epi32(set, _mm_setzero_si128()));
  }
  static inline uint32_t nonfinite(fvec v) {
    const fvec a = _mm_andnot_ps(_mm_set1_ps(-0.0f), v);
    return (uint32_t)_mm_movemask_ps(_mm_cmp_ps(a, _mm_set1_ps(FLT_MAX), _CMP_NLE_UQ));
  }
  static inline int32_t lane(ivec v, int i) {
    int32_t t[4];
    _mm_storeu_si128(reinterpret_cast<__m128i*>(t), v);
    return t[i];
  }
  static inline void prefetch(const void* p) { _mm_prefetch((const char*)p, _MM_HINT_T0); }
};

// conv1 and conv2: (4,2) (8,1) (12,1): MR x NR accumulators + NR widened pixel vectors + a weight and a product
// of the 16 registers.
constexpr int C1_MRMAX = 12;
constexpr int c1_nrmax(int mr) { return mr <= 4 ? 2 : 1; }
constexpr int C2_MRMAX = 12;
constexpr int c2_nrmax(int mr) { return mr <= 4 ? 2 : 1; }
constexpr double kDotCycles = 1.0;
constexpr double kWordCycles = 1.0;

#include "int8_impl.h"

}  // namespace

namespace gatekit {
namespace detail8 {
const IsaOps8 isa8_avx2_ops = {"avx2", V8::L, &prep_impl, &conv1_impl, &conv2_impl, &interleave_impl};
}  // namespace detail8
}  // namespace gatekit
