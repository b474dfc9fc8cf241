// AVX-512 VNNI instantiation of the int8 kernels: 16 pixels per vector (one zmm of words), vpdpbusd, 32 registers.
// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mfma -ffp-contract=off; only called after a CPU check.
#include <immintrin.h>

#include <cfloat>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "plan_int8.h"

namespace {

struct V8 {
  static constexpr int L = 16;
  typedef __m512i xvec;
  typedef __m512i wvec;
  typedef __m512i acc;
  typedef __m512i ivec;
  typedef __m512 fvec;
  static inline __mmask16 first(int n) { return (__mmask16)(n >= 16 ? 0xFFFFu : (1u << (n > 0 ? n : 0)) - 1u); }
  static inline acc azero() { return _mm512_setzero_si512(); }
  static inline ivec izero() { return _mm512_setzero_si512(); }
  static inline xvec loadx(const uint32_t* p) { return _mm512_loadu_si512(p); }
  static inline wvec wprep(int32_t w) { return _mm512_set1_epi32(w); }
  static inline acc dot(acc a, xvec x, wvec w) { return _mm512_dpbusd_epi32(a, x, w); }
  static inline ivec finish(acc a) { return a; }
  static inline fvec cvt(ivec v) {
    return _mm512_maskz_cvt_roundepi32_ps((__mmask16)0xFFFF, v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static inline fvec set1(float f) { return _mm512_set1_ps(f); }
  static inline fvec fmadd(fvec a, fvec b, fvec c) { return _mm512_fmadd_ps(a, b, c); }
  static inline fvec add(fvec a, fvec b) { return _mm512_add_ps(a, b); }
  // max(0, v): the second operand where the first is not greater, so a NaN passes.  (maskz forms here and below:
  // GCC 12 warns about the _mm512_undefined_* inside the unmasked intrinsics.)
  static inline fvec relu(fvec v) { return _mm512_maskz_max_ps((__mmask16)0xFFFF, _mm512_setzero_ps(), v); }
  static inline fvec loadf(const float* p, int n) {
    return n >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(first(n), p);
  }
  static inline void storef(float* p, fvec v, int n) {
    if (n >= 16)
      _mm512_storeu_ps(p, v);
    else
      _mm512_mask_storeu_ps(p, first(n), v);
  }
  static inline void storei(uint32_t* p, ivec v, int n) {
    if (n >= 16)
      _mm512_storeu_si512(p, v);
    else
      _mm512_mask_storeu_epi32(p, first(n), v);
  }
  static inline ivec quant(fvec v, fvec s) {
    fvec q = _mm512_div_ps(v, s);
    q = _mm512_maskz_max_ps((__mmask16)0xFFFF, q, _mm512_setzero_ps());  // NaN -> 0
    q = _mm512_maskz_min_ps((__mmask16)0xFFFF, q, _mm512_set1_ps(255.0f));
    return _mm512_maskz_cvt_roundps_epi32((__mmask16)0xFFFF, q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static inline ivec combine(ivec a, ivec b, ivec c, ivec d) {
    const __mmask16 all = 0xFFFF;
    return _mm512_or_si512(_mm512_or_si512(a, _mm512_maskz_slli_epi32(all, b, 8)),
                           _mm512_or_si512(_mm512_maskz_slli_epi32(all, c, 16), _mm512_maskz_slli_epi32(all, d, 24)));
  }
  static inline ivec zero_lanes(ivec v, uint32_t bits) { return _mm512_maskz_mov_epi32((__mmask16)(~bits & 0xFFFFu), v); }
  static inline uint32_t nonfinite(fvec v) {
    return _mm512_cmp_ps_mask(_mm512_abs_ps(v), _mm512_set1_ps(FLT_MAX), _CMP_NLE_UQ);
  }
  static inline int32_t lane(ivec v, int i) {
    int32_t t[16];
    _mm512_storeu_si512(t, v);
    return t[i];
  }
  static inline void prefetch(const void* p) { _mm_prefetch((const char*)p, _MM_HINT_T0); }
};

// conv1: (12,2) (8,3) (4,6): MR row pointers (up to 12, as the fp32 conv1), MR x NR + NR registers of the 32.
constexpr int C1_MRMAX = 12;
constexpr int c1_nrmax(int mr) { return mr <= 4 ? 6 : mr <= 8 ? 3 : 2; }
// conv2: one weight pointer per tile (channel m at a constant displacement): (24,1) (12,2) (8,3) (4,6).
constexpr int C2_MRMAX = 24;
constexpr int c2_nrmax(int mr) { return mr <= 4 ? 6 : mr <= 8 ? 3 : mr <= 12 ? 2 : 1; }
constexpr double kDotCycles = 1.0;
constexpr double kWordCycles = 0.0;

#include "int8_impl.h"

}  // namespace

namespace gatekit {
namespace detail8 {
const IsaOps8 isa8_avx512vnni_ops = {"avx512vnni", V8::L, &prep_impl, &conv1_impl, &conv2_impl, &interleave_impl};
}  // namespace detail8
}  // namespace gatekit
