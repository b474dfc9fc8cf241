// AVX2 + FMA instantiation of the kernels: 8 lanes, 16 vector registers.
// Compiled with -mavx2 -mfma; only called after a CPU check.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "plan.h"

namespace {

struct V {
  static constexpr int L = 8;
  typedef __m256 vec;
  static inline vec zero() { return _mm256_setzero_ps(); }
  static inline vec set1(float f) { return _mm256_set1_ps(f); }
  static inline vec load(const float* p) { return _mm256_loadu_ps(p); }
  static inline __m256i first(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static inline vec load_n(const float* p, int n) {
    return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, first(n));
  }
  static inline vec bcast(const float* p) { return _mm256_broadcast_ss(p); }
  static inline vec fma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
  static inline vec add(vec a, vec b) { return _mm256_add_ps(a, b); }
  static inline vec mul(vec a, vec b) { return _mm256_mul_ps(a, b); }
  static inline vec max(vec a, vec b) { return _mm256_max_ps(a, b); }
  static inline void store_n(float* p, vec v, int n) {
    if (n >= 8)
      _mm256_storeu_ps(p, v);
    else
      _mm256_maskstore_ps(p, first(n), v);
  }
  static inline vec zero_lanes(vec v, uint32_t bits) {
    const __m256i lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i set = _mm256_and_si256(_mm256_set1_epi32((int)bits), lane);
    const __m256i keep = _mm256_cmpeq_epi32(set, _mm256_setzero_si256());
    return _mm256_and_ps(v, _mm256_castsi256_ps(keep));
  }
  static inline void deint(const float* s, int n, vec& ev, vec& od) {
    const vec lo = load_n(s, n < 8 ? n : 8);
    const vec hi = load_n(s + 8, n > 8 ? n - 8 : 0);
    const vec e = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));  // lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6
    const vec o = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
    ev = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8));
    od = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xD8));
  }
  static inline vec shift_prev(vec v, vec prev) {
    const __m256i rot = _mm256_setr_epi32(7, 0, 1, 2, 3, 4, 5, 6);
    return _mm256_blend_ps(_mm256_permutevar8x32_ps(v, rot), _mm256_permutevar8x32_ps(prev, rot), 0x01);
  }
  static inline vec load_keep(const float* p, uint32_t keep) {
    const __m256i lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i set = _mm256_and_si256(_mm256_set1_epi32((int)keep), lane);
    return _mm256_maskload_ps(p, _mm256_cmpeq_epi32(set, lane));
  }
  static inline void prefetch(const void* p) { _mm_prefetch((const char*)p, _MM_HINT_T0); }
};

// conv1 tiles: (12,1) (6,2) (4,3); conv2 tiles: (8,1) (4,2) (4,3).
constexpr int C1_NRMAX = 3;
constexpr int c1_mrmax(int nr) { return nr == 1 ? 12 : nr == 2 ? 6 : 4; }
constexpr int C2_STEP = 4;
constexpr int C2_NRMAX = 3;
constexpr int c2_mrmax(int nr) { return nr == 1 ? 8 : 4; }
constexpr int MRCAP = 12;

// Output channels per block of packed W2 and Ws.
constexpr int W2B = 8;

#include "kernel_impl.h"

}  // namespace

namespace gatekit {
namespace detail {
const IsaOps isa_avx2_ops = {"avx2", V::L, W2B, false, nullptr, 0, &prep_impl, &conv1_impl, &conv2_impl, &gate_sum_impl, &gate_fc_impl,
    &conv1_cycles_impl, &conv2_cycles_impl};
}  // namespace detail
}  // namespace gatekit
