// Portable instantiation of the int8 kernels: plain C++ (GCC/Clang vector extensions for the input preparation),
// compiled with the target's flags (SSE2 on x86-64; on aarch64 NEON, and sdot / usdot where -march names the
// dot-product / i8mm extensions), -O3 so that the dot-product loops are vectorised, -ffp-contract=off so that the
// epilogues' float operations are exactly the contract's.
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "plan_int8.h"

namespace {

using gatekit::detail8::kQuantTie;

struct V8 {
  static constexpr int L = 4;
  typedef int32_t ivec __attribute__((vector_size(16)));
  typedef float fvec __attribute__((vector_size(16)));
  static inline ivec izero() { return ivec{0, 0, 0, 0}; }
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
  static inline ivec quant(fvec v, fvec s, fvec inv) {
    ivec r;
    for (int i = 0; i < 4; ++i) {
      float q;
      if (inv[i] != 0.0f) {
        q = v[i] * inv[i];
        const float d = q - __builtin_floorf(q) - 0.5f;
        if (!(d > kQuantTie || d < -kQuantTie)) q = v[i] / s[i];  // near a half-integer (NaN: no matter)
      } else {
        q = v[i] / s[i];
      }
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

// The convolutions as dot products over contiguous K (int8_dot_impl.h), which compilers map onto the target's
// dot-product instructions; the tiles of int8_impl.h are not compiled here.
#define GATEKIT_INT8_DOT_KERNELS 1
#include "int8_impl.h"
#include "int8_dot_impl.h"

}  // namespace

namespace gatekit {
namespace detail8 {
const IsaOps8 isa8_portable_ops = {"portable", V8::L, &prep_impl, &conv1_impl, &conv2_impl, work_bytes1_impl,
                                   work_bytes2_impl, &interleave_impl};
}  // namespace detail8
}  // namespace gatekit
