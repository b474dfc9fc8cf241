// Portable instantiation of the kernels, compiled with the target's baseline flags (SSE2 on x86-64, NEON on
// aarch64) through GCC/Clang vector extensions: 4 lanes.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "plan.h"

namespace {

struct V {
  static constexpr int L = 4;
  typedef float vec __attribute__((vector_size(16)));
  typedef int32_t ivec __attribute__((vector_size(16)));
  static inline vec zero() { return vec{0.0f, 0.0f, 0.0f, 0.0f}; }
  static inline vec set1(float f) { return vec{f, f, f, f}; }
  static inline vec load(const float* p) {
    vec v;
    memcpy(&v, p, sizeof(v));
    return v;
  }
  static inline vec load_n(const float* p, int n) {
    if (n >= 4) return load(p);
    vec v = zero();
    for (int i = 0; i < n; ++i) v[i] = p[i];
    return v;
  }
  static inline vec bcast(const float* p) { return set1(*p); }
  static inline vec fma(vec a, vec b, vec c) { return a * b + c; }
  static inline vec add(vec a, vec b) { return a + b; }
  static inline vec mul(vec a, vec b) { return a * b; }
  static inline vec max(vec a, vec b) {
    const ivec gt = a > b;
    return (vec)(((ivec)a & gt) | ((ivec)b & ~gt));
  }
  static inline void store_n(float* p, vec v, int n) {
    if (n >= 4) {
      memcpy(p, &v, sizeof(v));
      return;
    }
    for (int i = 0; i < n; ++i) p[i] = v[i];
  }
  static inline vec zero_lanes(vec v, uint32_t bits) {
    for (int i = 0; i < 4; ++i)
      if (bits & (1u << i)) v[i] = 0.0f;
    return v;
  }
  static inline void deint(const float* s, int n, vec& ev, vec& od) {
    ev = zero();
    od = zero();
    for (int i = 0; i < 4; ++i) {
      if (2 * i < n) ev[i] = s[2 * i];
      if (2 * i + 1 < n) od[i] = s[2 * i + 1];
    }
  }
  static inline vec shift_prev(vec v, vec prev) { return vec{prev[3], v[0], v[1], v[2]}; }
  static inline vec load_keep(const float* p, uint32_t keep) {
    vec v = zero();
    for (int i = 0; i < 4; ++i)
      if (keep & (1u << i)) v[i] = p[i];
    return v;
  }
  static inline void prefetch(const void* p) { __builtin_prefetch(p); }
};

#if defined(__aarch64__)
// 32 NEON registers.
constexpr int C1_NRMAX = 4;
constexpr int c1_mrmax(int nr) { return nr == 1 ? 24 : nr == 2 ? 12 : nr == 3 ? 8 : 6; }
constexpr int C2_STEP = 8;
constexpr int C2_NRMAX = 3;
constexpr int c2_mrmax(int nr) { return nr == 1 ? 24 : 8; }
constexpr int MRCAP = 24;
#else
// 16 SSE registers.
constexpr int C1_NRMAX = 3;
constexpr int c1_mrmax(int nr) { return nr == 1 ? 12 : nr == 2 ? 6 : 4; }
constexpr int C2_STEP = 4;
constexpr int C2_NRMAX = 3;
constexpr int c2_mrmax(int nr) { return nr == 1 ? 8 : 4; }
constexpr int MRCAP = 12;
#endif

// Output channels per block of packed W2 and Ws.
constexpr int W2B = 8;

#include "kernel_impl.h"

}  // namespace

namespace gatekit {
namespace detail {
const IsaOps isa_portable_ops = {"portable", V::L, W2B, false, nullptr, 0, &prep_impl, &conv1_impl, &conv2_impl, &gate_sum_impl, &gate_fc_impl,
    &conv1_cycles_impl, &conv2_cycles_impl};
}  // namespace detail
}  // namespace gatekit
