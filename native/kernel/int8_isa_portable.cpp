// Portable instantiation of the int8 kernels: plain C++ over GCC/Clang vector extensions, 4 pixels per vector,
// compiled with the target's baseline flags (SSE2 on x86-64, NEON on aarch64; -ffp-contract=off, so that the
// epilogue's float operations are exactly the contract's).  A K step of one pixel is a 4-byte dot product, written
// as four widening multiply-adds per lane, which the compiler turns into the target's integer multiply-accumulate
// instructions.
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "plan_int8.h"

namespace {

struct V8 {
  static constexpr int L = 4;
  typedef uint32_t xvec __attribute__((vector_size(16)));
  typedef int32_t acc __attribute__((vector_size(16)));
  typedef acc ivec;
  typedef float fvec __attribute__((vector_size(16)));
  struct wvec {
    int32_t b0, b1, b2, b3;  // the word's 4 weights, sign-extended
  };
  static inline acc azero() { return acc{0, 0, 0, 0}; }
  static inline ivec izero() { return ivec{0, 0, 0, 0}; }
  static inline xvec loadx(const uint32_t* p) {
    xvec v;
    memcpy(&v, p, sizeof(v));
    return v;
  }
  static inline wvec wprep(int32_t w) {
    const uint32_t u = (uint32_t)w;
    return wvec{(int8_t)(u & 0xFF), (int8_t)((u >> 8) & 0xFF), (int8_t)((u >> 16) & 0xFF), (int8_t)(u >> 24)};
  }
  static inline acc dot(acc a, xvec x, const wvec& w) {
    const acc x0 = (acc)(x & 0xFFu), x1 = (acc)((x >> 8) & 0xFFu), x2 = (acc)((x >> 16) & 0xFFu), x3 = (acc)(x >> 24);
    return a + x0 * w.b0 + x1 * w.b1 + x2 * w.b2 + x3 * w.b3;
  }
  static inline ivec finish(acc a) { return a; }
  static inline fvec cvt(ivec v) { return __builtin_convertvector(v, fvec); }
  static inline fvec set1(float f) { return fvec{f, f, f, f}; }
  static inline fvec fmadd(fvec a, fvec b, fvec c) {
    fvec r;
    for (int i = 0; i < 4; ++i) r[i] = __builtin_fmaf(a[i], b[i], c[i]);
    return r;
  }
  static inline fvec add(fvec a, fvec b) { return a + b; }
  static inline fvec relu(fvec v) {
    fvec r;
    for (int i = 0; i < 4; ++i) r[i] = 0.0f > v[i] ? 0.0f : v[i];
    return r;
  }
  static inline fvec loadf(const float* p, int n) {
    fvec v = set1(0.0f);
    if (n >= 4)
      memcpy(&v, p, sizeof(v));
    else
      for (int i = 0; i < n; ++i) v[i] = p[i];
    return v;
  }
  static inline void storef(float* p, fvec v, int n) {
    if (n >= 4)
      memcpy(p, &v, sizeof(v));
    else
      for (int i = 0; i < n; ++i) p[i] = v[i];
  }
  static inline void storei(uint32_t* p, ivec v, int n) {
    if (n >= 4)
      memcpy(p, &v, sizeof(v));
    else
      for (int i = 0; i < n; ++i) p[i] = (uint32_t)v[i];
  }
  static inline ivec quant(fvec v, fvec s) {
    ivec r;
    for (int i = 0; i < 4; ++i) {
      float q = v[i] / s[i];
      q = q > 0.0f ? q : 0.0f;  // NaN -> 0
      q = q < 255.0f ? q : 255.0f;
      r[i] = (int32_t)__builtin_roundevenf(q);
    }
    return r;
  }
  static inline ivec combine(ivec a, ivec b, ivec c, ivec d) { return a | (b << 8) | (c << 16) | (d << 24); }
  static inline ivec zero_lanes(ivec v, uint32_t bits) {
    for (int i = 0; i < 4; ++i)
      if (bits & (1u << i)) v[i] = 0;
    return v;
  }
  static inline uint32_t nonfinite(fvec v) {
    uint32_t bad = 0;
    for (int i = 0; i < 4; ++i) bad |= !(std::fabs(v[i]) <= FLT_MAX);
    return bad;
  }
  static inline int32_t lane(ivec v, int i) { return v[i]; }
  static inline void prefetch(const void* p) { __builtin_prefetch(p); }
};

#if defined(__aarch64__)
// 32 NEON registers; a dot holds 4 temporaries per pixel vector.
constexpr int C1_MRMAX = 12;
constexpr int c1_nrmax(int mr) { return mr <= 4 ? 4 : mr <= 8 ? 2 : 1; }
constexpr int C2_MRMAX = 16;
constexpr int c2_nrmax(int mr) { return mr <= 4 ? 4 : mr <= 8 ? 2 : 1; }
#else
// 16 SSE registers.
constexpr int C1_MRMAX = 8;
constexpr int c1_nrmax(int mr) { return mr <= 4 ? 2 : 1; }
constexpr int C2_MRMAX = 8;
constexpr int c2_nrmax(int mr) { return mr <= 4 ? 2 : 1; }
#endif
constexpr double kDotCycles = 2.0;
constexpr double kWordCycles = 0.0;

#include "int8_impl.h"

}  // namespace

namespace gatekit {
namespace detail8 {
const IsaOps8 isa8_portable_ops = {"portable", V8::L, &prep_impl, &conv1_impl, &conv2_impl, &interleave_impl};
}  // namespace detail8
}  // namespace gatekit
