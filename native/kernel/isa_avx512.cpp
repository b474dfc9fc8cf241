// AVX-512 (F + BW + VL + FMA) instantiation of the kernels: 16 lanes, 32 vector registers.
// Compiled with -mavx512f -mavx512bw -mavx512vl -mfma; only called after a CPU check.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "plan.h"

namespace {

struct V {
  static constexpr int L = 16;
  typedef __m512 vec;
  static inline vec zero() { return _mm512_setzero_ps(); }
  static inline vec set1(float f) { return _mm512_set1_ps(f); }
  static inline vec load(const float* p) { return _mm512_loadu_ps(p); }
  static inline __mmask16 first(int n) { return (__mmask16)((n >= 16) ? 0xFFFFu : ((1u << (n > 0 ? n : 0)) - 1u)); }
  static inline vec load_n(const float* p, int n) {
    return n >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(first(n), p);
  }
  static inline vec bcast(const float* p) { return _mm512_set1_ps(*p); }
  static inline vec fma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
  static inline vec add(vec a, vec b) { return _mm512_add_ps(a, b); }
  static inline vec mul(vec a, vec b) { return _mm512_mul_ps(a, b); }
  // (maskz form: GCC 12 warns about _mm512_undefined_ps inside _mm512_max_ps)
  static inline vec max(vec a, vec b) { return _mm512_maskz_max_ps((__mmask16)0xFFFF, a, b); }
  static inline void store_n(float* p, vec v, int n) {
    if (n >= 16)
      _mm512_storeu_ps(p, v);
    else
      _mm512_mask_storeu_ps(p, first(n), v);
  }
  // Zero the lanes whose bit is set.
  static inline vec zero_lanes(vec v, uint32_t bits) { return _mm512_maskz_mov_ps((__mmask16)(~bits & 0xFFFFu), v); }
  // Even and odd elements of src[0 .. 2L), reading only the first n (the rest read as zero).
  static inline void deint(const float* s, int n, vec& ev, vec& od) {
    const vec lo = load_n(s, n < 16 ? n : 16);
    const vec hi = load_n(s + 16, n > 16 ? n - 16 : 0);
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    ev = _mm512_permutex2var_ps(lo, ie, hi);
    od = _mm512_permutex2var_ps(lo, io, hi);
  }
  // Lane i = v[i - 1], lane 0 = prev[L - 1].
  static inline vec shift_prev(vec v, vec prev) {
    return _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(v), _mm512_castps_si512(prev), 15));
  }
  // The lanes whose bit is set loaded from p[lane], the others zero (their memory is not touched).
  static inline vec load_keep(const float* p, uint32_t keep) { return _mm512_maskz_loadu_ps((__mmask16)keep, p); }
  static inline void prefetch(const void* p) { _mm_prefetch((const char*)p, _MM_HINT_T0); }
  // Pairwise sums: lanes 0..7 = a[2i] + a[2i+1], lanes 8..15 = b[2i] + b[2i+1] (four of these in a tree put
  // the sums of 16 vectors in the lanes of one, see reduce_lanes).
  static inline vec hpair(vec a, vec b) {
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    return _mm512_add_ps(_mm512_permutex2var_ps(a, ie, b), _mm512_permutex2var_ps(a, io, b));
  }
  // In place 16 x 16 transpose: afterwards lane i of r[c] is what lane c of r[i] was.  Rows interleaved by
  // float, then by pair of floats, then 128-bit chunks exchanged twice (maskz forms: see max).
  static inline void transpose(vec (&r)[16]) {
    vec t[16];
    for (int i = 0; i < 8; ++i) {
      t[2 * i] = _mm512_maskz_unpacklo_ps(0xFFFF, r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm512_maskz_unpackhi_ps(0xFFFF, r[2 * i], r[2 * i + 1]);
    }
    // u[4i + m], 128-bit chunk j: rows 4i .. 4i+3 of column 4j + m.
    vec u[16];
    for (int i = 0; i < 4; ++i) {
      const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
      const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
      u[4 * i + 0] = _mm512_castpd_ps(_mm512_maskz_unpacklo_pd(0xFF, a, c));
      u[4 * i + 1] = _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(0xFF, a, c));
      u[4 * i + 2] = _mm512_castpd_ps(_mm512_maskz_unpacklo_pd(0xFF, b, d));
      u[4 * i + 3] = _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(0xFF, b, d));
    }
    // Column 4j + m gathers chunk j of u[m], u[4 + m], u[8 + m], u[12 + m].
    for (int m = 0; m < 4; ++m) {
      const vec v0 = _mm512_maskz_shuffle_f32x4(0xFFFF, u[m], u[4 + m], 0x88);      // chunks 0, 2 of u[m]; 0, 2 of u[4+m]
      const vec v1 = _mm512_maskz_shuffle_f32x4(0xFFFF, u[m], u[4 + m], 0xdd);      // chunks 1, 3
      const vec v2 = _mm512_maskz_shuffle_f32x4(0xFFFF, u[8 + m], u[12 + m], 0x88);
      const vec v3 = _mm512_maskz_shuffle_f32x4(0xFFFF, u[8 + m], u[12 + m], 0xdd);
      r[m] = _mm512_maskz_shuffle_f32x4(0xFFFF, v0, v2, 0x88);       // j = 0
      r[4 + m] = _mm512_maskz_shuffle_f32x4(0xFFFF, v1, v3, 0x88);   // j = 1
      r[8 + m] = _mm512_maskz_shuffle_f32x4(0xFFFF, v0, v2, 0xdd);   // j = 2
      r[12 + m] = _mm512_maskz_shuffle_f32x4(0xFFFF, v1, v3, 0xdd);  // j = 3
    }
  }
};

// conv1 tiles (MR channels x NR vectors): (12,1) (8,2) (8,3) (6,4).  conv1 reads one weight row per active
// channel, so a tile holds MR row pointers: beyond about 12 the 15 general registers of x86-64 spill and
// every FMA pays a reload (on 4x4 maps (24,1) measured slower than (12,1)).
constexpr int C1_NRMAX = 4;
constexpr int c1_mrmax(int nr) { return nr == 1 ? 12 : nr == 2 ? 8 : nr == 3 ? 8 : 6; }
// conv2 tiles: (24,1) (8,2) (8,3) in blocks of 8 output channels.
constexpr int C2_STEP = 8;
constexpr int C2_NRMAX = 3;
constexpr int c2_mrmax(int nr) { return nr == 1 ? 24 : 8; }
constexpr int MRCAP = 24;

// Output channels per block of packed W2 and Ws: one vector, so that conv2 also has output-channel tiles.
constexpr int W2B = 16;
#define GATEKIT_CHANNEL_TILES 1
#define GATEKIT_CONV1_DOT 1

#include "kernel_impl.h"

}  // namespace

namespace gatekit {
namespace detail {
const IsaOps isa_avx512_ops = {"avx512", V::L, W2B, true, &channel_tile_blocks_impl, C1D_MAXW, &prep_impl, &conv1_impl, &conv2_impl, &gate_sum_impl, &gate_fc_impl,
    &conv1_cycles_impl, &conv2_cycles_impl};
}  // namespace detail
}  // namespace gatekit
