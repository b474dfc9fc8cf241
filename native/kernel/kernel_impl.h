// The GatedBlock kernels, written once over a small vector-traits interface and compiled once per ISA.
//
// Included by isa_*.cpp inside an anonymous namespace, after they define:
//   struct V                      vector traits: L (lanes), vec, zero, set1, load, load_n, bcast, fma, add, mul,
//                                 max, store_n, zero_lanes, load_keep, deint, shift_prev, prefetch
//                                 (see isa_avx512.cpp)
//   constexpr int C1_NRMAX        conv1 tiles: up to C1_NRMAX pixel vectors ...
//   constexpr int c1_mrmax(int)   ... times c1_mrmax(nr) active channels
//   constexpr int C2_NRMAX        conv2 tiles: up to C2_NRMAX pixel vectors ...
//   constexpr int c2_mrmax(int)   ... times c2_mrmax(nr) output channels, a multiple of C2_STEP
//   constexpr int C2_STEP         4 or 8 (pixel tiles address conv2's weights in groups of 8 output channels)
//   constexpr int MRCAP           >= every c1_mrmax / c2_mrmax
//   constexpr int W2B             output channels per block of packed W2 / Ws (PackedView::wb)
//
// Both convolutions are "indirect GEMMs" vectorised over output pixels: a tile keeps MR x NR accumulators
// (MR channels x NR vectors of L consecutive pixels), each step broadcasts MR weights and loads NR pixel
// vectors.  The 9 taps of a 3x3 kernel read the same pixel range at 9 offsets in pre-shifted planes (see
// plan.h), so every load is contiguous and no lane is wasted on padding columns.
//
// Nothing here may use std:: templates (see plan.h).

typedef V::vec vec;
constexpr int L = V::L;

using gatekit::detail::IsaOps;
using gatekit::detail::Plan;
using gatekit::detail::PrepGeom;
using gatekit::detail::Task1;
using gatekit::detail::Task2;
using gatekit::detail::kRowGroup;

static inline int imin(int a, int b) { return a < b ? a : b; }

// ReLU that keeps NaN, as ONNX Relu does on ONNX Runtime and PyTorch's relu: max(0, NaN) = NaN.  Every path's
// max returns its second operand when either is NaN (maxps / vmaxps; the portable select a > b ? a : b), so zero
// goes first; max(v, 0) would turn a NaN into 0.
static inline vec relu(vec v) { return V::max(V::zero(), v); }

static inline void zero_floats(float* p, size_t n) { memset(p, 0, n * sizeof(float)); }

// ---------------------------------------------------------------------------------------------------------
// Input preparation: the planes conv1 reads for output rows [r0, r1) of sample n.
//   stride 1: plane kx (0..2), row r = padded row r0 + r, column c = padded column c + kx.
//   stride 2: plane kx*2 + py, row r = padded row 2*(r0 + r) + py, column c = padded column 2*c + kx.
// Tap (ky, kx) of output pixel q (band-local, row-major over Wo) then reads, at offset q, plane kx row ky
// (stride 1) or plane kx*2 + (ky & 1) row ky >> 1 (stride 2); see ktaps().
//
// At stride 1 (W == Wo) plane kx is one contiguous window of x, starting at x[r0 - 1][kx - 1], with the lanes
// of one column zeroed (column 0 in plane 0, the last in plane 2) and the lanes outside x (the padding rows
// above and below the map) zero.  It is written in whole vectors from the plane's aligned start (plane
// strides are multiples of 16 floats), with the lanes to keep worked out once for all input channels.
// Writing row by row instead would take three pieces per 34 px row, one masked, nearly all split across cache
// lines, with the zeroed lanes found per vector.
#if defined(GATEKIT_CONV1_DOT)
static void prep_dot(const Plan& p, int n, int r0, float* dst, const PrepGeom& g);
#endif

static void prep_impl(const Plan& p, int n, int r0, int r1, float* dst, const PrepGeom& g) {
  const int Cin = p.w.Cin, H = p.H, W = p.W, Wo = p.Wo;
  const size_t ps = g.ps;
  const float* xn = p.x + (size_t)n * Cin * H * W;
#if defined(GATEKIT_CONV1_DOT)
  if (p.conv1_dot) {
    prep_dot(p, n, r0, dst, g);
    return;
  }
#endif
  if (p.S == 1) {
    // Vectors of each plane, in chunks: the lanes each vector keeps are the same for every input channel.
    constexpr int kChunk = 128;
    constexpr uint32_t kAll = (1u << L) - 1;
    const long HW = (long)H * W;
    const int nvec = (g.R * Wo + L - 1) / L;  // whole vectors covering the floats the tiles read
    for (int v0 = 0; v0 < nvec; v0 += kChunk) {
      const int v1 = imin(nvec, v0 + kChunk);
      uint32_t keep[3][kChunk];
      for (int kx = 0; kx < 3; ++kx) {
        const long x0 = (long)(r0 - 1) * W + kx - 1;  // x index of the plane's first float
        const int bad = kx == 0 ? 0 : Wo - 1;        // the zeroed column (none in plane 1)
        int col = (int)(((long)v0 * L) % Wo);        // column of the vector's first lane
        for (int v = v0; v < v1; ++v) {
          const long j = x0 + (long)v * L;
          uint32_t k = kAll;
          if (j < 0) k &= j + L > 0 ? ~((1u << (-j)) - 1) : 0u;  // above the map
          if (j + L > HW) k &= j < HW ? (1u << (HW - j)) - 1 : 0u;  // below it
          if (kx != 1)
            for (int l = bad >= col ? bad - col : bad - col + Wo; l < L; l += Wo) k &= ~(1u << l);
          keep[kx][v - v0] = k;
          col += L;
          while (col >= Wo) col -= Wo;
        }
      }
      for (int ci = 0; ci < Cin; ++ci) {
        const float* xc = xn + (size_t)ci * H * W;
        float* d = dst + (size_t)ci * g.cs;
        for (int kx = 0; kx < 3; ++kx) {
          const float* src = xc + ((long)(r0 - 1) * W + kx - 1);
          float* dk = d + (size_t)kx * ps;
          const uint32_t* kk = keep[kx] - v0;
          for (int v = v0; v < v1; ++v) {
            const vec x = kk[v] == kAll ? V::load(src + (long)v * L) : V::load_keep(src + (long)v * L, kk[v]);
            V::store_n(dk + (size_t)v * L, x, L);
          }
        }
      }
    }
    return;
  }
  // Stride 2: row by row, even and odd columns split in registers.
  for (int ci = 0; ci < Cin; ++ci) {
    const float* xc = xn + (size_t)ci * H * W;
    float* d = dst + (size_t)ci * g.cs;
    for (int r = 0; r < g.R; ++r) {
      for (int py = 0; py < 2; ++py) {
        const int yy = 2 * (r0 + r) + py - 1;
        float* e0 = d + (size_t)(0 + py) * ps + (size_t)r * Wo;  // kx = 0: column 2c - 1
        float* e1 = d + (size_t)(2 + py) * ps + (size_t)r * Wo;  // kx = 1: column 2c
        float* e2 = d + (size_t)(4 + py) * ps + (size_t)r * Wo;  // kx = 2: column 2c + 1
        if (yy < 0 || yy >= H) {
          zero_floats(e0, Wo);
          zero_floats(e1, Wo);
          zero_floats(e2, Wo);
          continue;
        }
        const float* s = xc + (size_t)yy * W;
        vec prev = V::zero();
        for (int c = 0; c < Wo; c += L) {
          const int m = imin(L, Wo - c);
          vec ev, od;
          V::deint(s + 2 * c, imin(2 * L, W - 2 * c), ev, od);
          V::store_n(e1 + c, ev, m);
          V::store_n(e2 + c, od, m);
          V::store_n(e0 + c, V::shift_prev(od, prev), m);
          prev = od;
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Tile cost model (cycles per K step), used to pick the tile width: FMA throughput (2 per cycle), load
// throughput (about 2 per cycle: NR vector loads + MR broadcasts) and FMA latency (one chain per
// accumulator, 4 cycles), plus what a step costs beyond those bounds: 2.5 cycles, and 0.7 more per pixel
// vector past 3.  That overhead is fitted to conv1's AVX-512 tiles looped on cache-resident data (64 input
// channels, 34 px rows), whose measured throughput ranks (8,3) first, then (6,4), (8,2), (5,4), (4,5), and
// (12,1) and (4,4) last.  Without it the model rates (8,2) and (8,3) alike and picks (8,2) for conv1 on 34x34
// maps, the slower of the two.
static inline double step_cycles(int mr, int nr) {
  double f = 0.5 * mr * nr, l = 0.5 * (mr + nr) + 0.5;
  double c = f > l ? f : l;
  return (c < 4.0 ? 4.0 : c) + 2.5 + (nr > 3 ? 0.7 * (nr - 3) : 0.0);
}

// ---------------------------------------------------------------------------------------------------------
// conv1: h[j] = mval[j] * relu(sum_{ci,tap} w1[c_j][ci][tap] * x[...] + b1[c_j]) for active channels j.
struct T1Args {
  const float* rows[MRCAP];  // w1 row of each active channel of the tile
  float bias[MRCAP];
  float mv[MRCAP];
  float* hd[MRCAP];          // h of the channel: plane 0, row 1 (plane 1 at +hps, plane 2 at +2*hps)
  const float* b;            // prep planes of input channel 0 at the tile's first pixel
  ptrdiff_t ps;              // prep plane stride
  ptrdiff_t rs;              // prep row stride (Wo)
  size_t cs;                 // prep stride per input channel
  int cin;
  int q0;                    // global pixel index of the tile's first vector
  int qend;                  // global end of the band (exclusive)
  int Wo;
  size_t hps;
};

// Weight addresses of a tile: G = 1, one pointer per channel row (conv1); G = 8, one pointer per block of 8
// output channels, channel m at w[m / 8] + m % 8 (conv2).  With m a compile-time constant the G = 8 form is
// a base register plus a displacement, so a 24-channel tile needs 3 pointer registers instead of 24.
template <int MR, int G>
struct WPtr {
  static constexpr int N = (MR + G - 1) / G;
};

// One K step: NR pixel vectors at bp times the MR weights of step woff.
template <int MR, int NR, int G>
static inline __attribute__((always_inline)) void kstep(vec (&acc)[MR][NR], const float* bp,
                                                       const float* const (&w)[WPtr<MR, G>::N], int woff) {
  vec bv[NR];
#pragma GCC unroll 8
  for (int v = 0; v < NR; ++v) bv[v] = V::load(bp + v * L);
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m) {
    const vec wv = V::bcast(w[m / G] + (m % G) + woff);
#pragma GCC unroll 8
    for (int v = 0; v < NR; ++v) acc[m][v] = V::fma(wv, bv[v], acc[m][v]);
  }
}

// The 9 taps of one input channel.  Stride 1: plane kx at b + kx*ps, row ky at + ky*rs.  Stride 2: plane
// kx*2 + (ky & 1) at b + (2*kx + (ky & 1))*ps, row ky >> 1.  Written as 3 base pointers plus the two strides
// so that every load is one addressing mode (base + index*scale + displacement).
template <int MR, int NR, int S, int TS, int G>
static inline __attribute__((always_inline)) void ktaps(vec (&acc)[MR][NR], const float* b, ptrdiff_t ps,
                                                       ptrdiff_t rs, const float* const (&w)[WPtr<MR, G>::N],
                                                       int off) {
  const float* p0 = b;
  const float* p1 = b + (S == 1 ? ps : 2 * ps);
  const float* p2 = b + (S == 1 ? 2 * ps : 4 * ps);
  const ptrdiff_t o1 = S == 1 ? rs : ps;      // ky = 1
  const ptrdiff_t o2 = S == 1 ? 2 * rs : rs;  // ky = 2
  kstep<MR, NR, G>(acc, p0, w, off + 0 * TS);
  kstep<MR, NR, G>(acc, p1, w, off + 1 * TS);
  kstep<MR, NR, G>(acc, p2, w, off + 2 * TS);
  kstep<MR, NR, G>(acc, p0 + o1, w, off + 3 * TS);
  kstep<MR, NR, G>(acc, p1 + o1, w, off + 4 * TS);
  kstep<MR, NR, G>(acc, p2 + o1, w, off + 5 * TS);
  kstep<MR, NR, G>(acc, p0 + o2, w, off + 6 * TS);
  kstep<MR, NR, G>(acc, p1 + o2, w, off + 7 * TS);
  kstep<MR, NR, G>(acc, p2 + o2, w, off + 8 * TS);
}

// conv1's epilogue for one active channel: h = mask * relu(sum + bias) at pixels [q, q + n), stored to the
// three planes of h at hd (plane 0 row 1): plane 1 as is, plane 0 shifted right with lanes z0 zeroed (the
// row's last column), plane 2 shifted left with lanes z2 zeroed (its first column).
static inline __attribute__((always_inline)) void store_h(float* hd, size_t hps, int q, int n, vec sum, float bias,
                                                         float mv, uint32_t z0, uint32_t z2) {
  vec hv = relu(V::add(sum, V::set1(bias)));
  if (mv != 1.0f) hv = V::mul(hv, V::set1(mv));
  V::store_n(hd + hps + q, hv, n);
  V::store_n(hd + q + 1, V::zero_lanes(hv, z0), n);
  V::store_n(hd + 2 * hps + q - 1, V::zero_lanes(hv, z2), n);
}

template <int MR, int NR, int S>
static void tile1(const T1Args& a) {
  vec acc[MR][NR];
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NR; ++v) acc[m][v] = V::zero();

  const float* rows[MR];
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m) rows[m] = a.rows[m];
  const float* b = a.b;
  const size_t cs = a.cs;
  const ptrdiff_t ps = a.ps, rs = a.rs;
  const int cin = a.cin;
  for (int ci = 0, off = 0; ci < cin; ++ci, off += 9, b += cs) ktaps<MR, NR, S, 1, 1>(acc, b, ps, rs, rows, off);

  const int Wo = a.Wo;
  const size_t hps = a.hps;
#pragma GCC unroll 8
  for (int v = 0; v < NR; ++v) {
    const int q = a.q0 + v * L;
    const int nvalid = imin(L, a.qend - q);
    // Lanes in the last column are zero in plane 0 (shifted right); lanes in column 0 are zero in plane 2.
    uint32_t z0 = 0, z2 = 0;
    const int col = q % Wo;
    for (int l = Wo - 1 - col; l < L; l += Wo) z0 |= 1u << l;
    for (int l = col == 0 ? 0 : Wo - col; l < L; l += Wo) z2 |= 1u << l;
#pragma GCC unroll 32
    for (int m = 0; m < MR; ++m) store_h(a.hd[m], hps, q, nvalid, acc[m][v], a.bias[m], a.mv[m], z0, z2);
  }
}

typedef void (*T1Fn)(const T1Args&);

template <int NR, int MR>
struct Fill1 {
  static void run(T1Fn (*tab)[C1_NRMAX + 1][MRCAP + 1]) {
    tab[0][NR][MR] = &tile1<MR, NR, 1>;
    tab[1][NR][MR] = &tile1<MR, NR, 2>;
    Fill1<NR, MR - 1>::run(tab);
  }
};
template <int NR>
struct Fill1<NR, 0> {
  static void run(T1Fn (*)[C1_NRMAX + 1][MRCAP + 1]) {}
};

template <int NR>
struct FillAll1 {
  static void run(T1Fn (*tab)[C1_NRMAX + 1][MRCAP + 1]) {
    Fill1<NR, c1_mrmax(NR)>::run(tab);
    FillAll1<NR - 1>::run(tab);
  }
};
template <>
struct FillAll1<0> {
  static void run(T1Fn (*)[C1_NRMAX + 1][MRCAP + 1]) {}
};

struct Table1 {
  T1Fn fn[2][C1_NRMAX + 1][MRCAP + 1];  // [stride - 1][NR][MR]
  Table1() {
    memset(fn, 0, sizeof(fn));
    FillAll1<C1_NRMAX>::run(fn);
  }
};
static const Table1 table1;

// Modelled cycles of conv1's tiles over one group of r pixel vectors and M channels (split into equal tiles).
static double group_cost1(int M, int r, int K) {
  const int mrmax = c1_mrmax(r);
  const int nt = (M + mrmax - 1) / mrmax;
  double cost = 0;
  for (int k = 0, done = 0; k < nt; ++k) {
    const int mr = (M - done + (nt - k) - 1) / (nt - k);
    cost += K * step_cycles(mr, r) + 6.0 * mr * r + 20.0;
    done += mr;
  }
  return cost;
}

// Pick the pixel-vector count per tile for an M x nv problem with K steps: nv / nr full groups of nr vectors,
// then one group of the rest.  *cycles: the modelled cost of that choice.
static int pick_nr1(int M, int nv, int K, double* cycles = nullptr) {
  int best = 1;
  double best_cost = 1e300;
  for (int nr = 1; nr <= C1_NRMAX; ++nr) {
    const int full = nv / nr, rest = nv % nr;
    const double cost = full * group_cost1(M, nr, K) + (rest ? group_cost1(M, rest, K) : 0.0);
    if (cost < best_cost * 0.999) {
      best_cost = cost;
      best = nr;
    }
  }
  if (cycles) *cycles = best_cost;
  return best;
}

static double conv1_cycles_impl(int M, int nv, int K) {
  double c = 0;
  pick_nr1(M, nv, K, &c);
  return c;
}

// Zero the padding rows of h that no pixel writes (top/bottom rows, and the two corner cells), for the task's
// active channels.
static void zero_h_pads(const Plan& p, const Task1& t, float* hn) {
  const int Wo = p.Wo;
  const size_t hps = p.h_ps;
  for (int j = t.j0; j < t.j1; ++j) {
    float* hj = hn + (size_t)j * p.h_cs;
    if (t.r0 == 0) {
      for (int k = 0; k < 3; ++k) zero_floats(hj + k * hps, Wo);
      hj[Wo] = 0.0f;  // plane 0, row 1, column 0
    }
    if (t.r1 == p.Ho) {
      for (int k = 0; k < 3; ++k) zero_floats(hj + k * hps + (size_t)(p.Ho + 1) * Wo, Wo);
      hj[2 * hps + Wo + p.P - 1] = 0.0f;  // plane 2, row Ho, last column
    }
  }
}

// A conv1 tile's channels: active channels j .. j + mr of sample n, each with its weight row in w (Cin * 9
// floats per inner channel, in either packing), bias, mask value and h (plane 0, row 1).
template <typename Args>
static inline void set_tile_channels(Args& a, const Plan& p, int n, const float* w, int j, int mr) {
  const int32_t* act = p.act + (size_t)n * p.w.C;
  const float* mv = p.mval + (size_t)n * p.w.C;
  float* hn = p.h + p.hoff[n];
  const size_t K9 = (size_t)p.w.Cin * 9;
  for (int m = 0; m < mr; ++m) {
    const int c = act[j + m];
    a.rows[m] = w + (size_t)c * K9;
    a.bias[m] = p.w.b1[c];
    a.mv[m] = mv[j + m];
    a.hd[m] = hn + (size_t)(j + m) * p.h_cs + p.Wo;
  }
}

#if defined(GATEKIT_CONV1_DOT)
static void conv1d_impl(const Plan& p, const Task1& t, const float* prep, const PrepGeom& g);
#endif

static void conv1_impl(const Plan& p, const Task1& t, const float* prep, const PrepGeom& g) {
#if defined(GATEKIT_CONV1_DOT)
  if (p.conv1_dot) {
    conv1d_impl(p, t, prep, g);
    return;
  }
#endif
  const int Wo = p.Wo, Cin = p.w.Cin, S = p.S;
  const int n = t.n;
  const int qb = t.r0 * Wo, qe = t.r1 * Wo;
  const int nv = (qe - qb + L - 1) / L;
  zero_h_pads(p, t, p.h + p.hoff[n]);

  const int M = t.j1 - t.j0;
  if (M <= 0) return;
  const int NR = pick_nr1(M, nv, 9 * Cin);

  T1Args a;
  a.ps = (ptrdiff_t)g.ps;
  a.rs = Wo;
  a.cs = g.cs;
  a.cin = Cin;
  a.qend = qe;
  a.Wo = Wo;
  a.hps = p.h_ps;
  // Channel tiles outside, pixel groups of NR vectors inside (then the group of the rest, whose tiles may
  // hold another channel count): a tile's weight rows stay in L1 across the band, and each tile is set up once.
  const int nfull = nv / NR;
  for (int part = 0; part < 2; ++part) {
    const int nr = part == 0 ? NR : nv - nfull * NR;
    const int g0 = part == 0 ? 0 : nfull, g1 = part == 0 ? nfull : nfull + 1;
    if (nr == 0 || g0 == g1) continue;
    const int mrmax = c1_mrmax(nr);
    const int nt = (M + mrmax - 1) / mrmax;
    const T1Fn* fns = table1.fn[S - 1][nr];
    int j = t.j0;
    for (int k = 0; k < nt; ++k) {
      const int mr = (t.j1 - j + (nt - k) - 1) / (nt - k);
      set_tile_channels(a, p, n, p.w.w1, j, mr);
      for (int gi = g0; gi < g1; ++gi) {
        a.b = prep + (size_t)gi * NR * L;
        a.q0 = qb + gi * NR * L;
        fns[mr](a);
      }
      j += mr;
    }
  }
}

#if defined(GATEKIT_CONV1_DOT)
// ---------------------------------------------------------------------------------------------------------
// conv1 in channel dots (Plan::conv1_dot), for small maps: pixel vectors waste lanes there (25 pixels fill 2
// vectors of 16) and multiply the taps that read the padding (25% of them on a 5x5 map, 14% on 9x9), which
// oneDNN skips.  Here x is copied channels-last per band (prep_dot), W1 is packed [C][9][Cin] (w1d), and a tile
// is MR active channels times one output row of WO pixels: each K step loads MR weight vectors and WO input
// vectors of L consecutive input channels, and every accumulator is a dot product spread over the lanes, summed
// across them at the end (reduce_lanes).  The kernel rows above the first output row and below the last are
// skipped at run time, the left tap of the row's first pixel at compile time (and the right tap of its last at
// stride 1; at stride 2 it may be inside the map and reads the zero padding otherwise).

// x of sample n, padded rows S*r0 .. S*r0 + R - 1 (padded index = input row + 1), as [R][W + 2][Cin].
static void prep_dot(const Plan& p, int n, int r0, float* dst, const PrepGeom& g) {
  const int Cin = p.w.Cin, H = p.H, W = p.W;
  const size_t HW = (size_t)H * W;
  const float* xn = p.x + (size_t)n * Cin * HW;
  for (int i = 0; i < g.R; ++i) {
    float* d = dst + (size_t)i * g.ps;
    const int yy = p.S * r0 + i - 1;
    if (yy < 0 || yy >= H) {
      zero_floats(d, g.ps);
      continue;
    }
    zero_floats(d, Cin);                           // column -1
    zero_floats(d + (size_t)(W + 1) * Cin, Cin);   // column W
    // Blocks of L input channels x up to L columns, transposed in registers.
    for (int ci = 0; ci < Cin; ci += L) {
      const float* src = xn + (size_t)ci * HW + (size_t)yy * W;
      for (int c0 = 0; c0 < W; c0 += L) {
        const int nc = imin(L, W - c0);
        vec t[L];
#pragma GCC unroll 16
        for (int k = 0; k < L; ++k) t[k] = V::load_n(src + (size_t)k * HW + c0, nc);
        V::transpose(t);  // t[c]: column c0 + c, input channels ci .. ci + L
        for (int c = 0; c < nc; ++c) V::store_n(d + (size_t)(c0 + c + 1) * Cin + ci, t[c], L);
      }
    }
  }
}

// Lane i of the result: the sum of the lanes of v[i], for i < N <= L (a tree of pairwise sums, V::hpair).
template <int N>
static inline __attribute__((always_inline)) vec reduce_lanes(const vec (&v)[N]) {
  vec t[L];
  int n = N;
#pragma GCC unroll 16
  for (int i = 0; i < N; ++i) t[i] = v[i];
#pragma GCC unroll 8
  for (int w = L; w > 1; w /= 2) {
    const int pairs = (n + 1) / 2;
#pragma GCC unroll 16
    for (int i = 0; i < pairs; ++i) t[i] = V::hpair(t[2 * i], 2 * i + 1 < n ? t[2 * i + 1] : V::zero());
    n = pairs;
  }
  return t[0];
}

struct T1dArgs {
  const float* rows[MRCAP];  // w1d row of each active channel of the tile
  float bias[MRCAP];
  float mv[MRCAP];
  float* hd[MRCAP];          // h of the channel: plane 0, row 1 (plane 1 at +hps, plane 2 at +2*hps)
  const float* x;            // prep_dot rows: padded row S*r (kernel row 0 of output row r), column -1
  size_t rs;                 // prep_dot row stride ((W + 2) * Cin)
  int cin;
  int ky0, ky1;              // kernel rows inside the map
  int q;                     // the row's first pixel (r * Wo)
  size_t hps;
  // The next tile's weight rows, prefetched while this one computes (from memory once per call: the active
  // rows change from input to input): lines [pf_line0, pf_line0 + pf_lines) of each of pf_n rows,
  // pf_lpi lines per input step.
  const float* pf[MRCAP];
  int pf_n, pf_line0, pf_lines, pf_lpi;
};

// One K step: MR weight vectors at w[m] + off times the input vectors of pixels [C0, C1) at x + S*c*cin.
template <int MR, int WO, int S, int C0, int C1>
static inline __attribute__((always_inline)) void dstep(vec (&acc)[MR][WO], const float* const (&w)[MR], size_t off,
                                                       const float* x, int cin) {
  vec wv[MR];
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m) wv[m] = V::load(w[m] + off);
#pragma GCC unroll 16
  for (int c = C0; c < C1; ++c) {
    const vec xv = V::load(x + (size_t)(S * c) * cin);
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) acc[m][c] = V::fma(wv[m], xv, acc[m][c]);
  }
}

template <int MR, int WO, int S>
static void tile1d(const T1dArgs& a) {
  vec acc[MR][WO];
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 16
    for (int c = 0; c < WO; ++c) acc[m][c] = V::zero();
  const float* w[MR];
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m) w[m] = a.rows[m];
  const int cin = a.cin;
  int line = a.pf_line0;
  const int line_end = a.pf_line0 + a.pf_lines;
  for (int ky = a.ky0; ky < a.ky1; ++ky) {
    const float* xr = a.x + (size_t)ky * a.rs;
    const size_t t0 = (size_t)(3 * ky) * cin;
    for (int ci = 0; ci < cin; ci += L) {
      for (int u = 0; u < a.pf_lpi && line < line_end; ++u, ++line)
        for (int m = 0; m < a.pf_n; ++m) V::prefetch(a.pf[m] + (size_t)line * L);
      dstep<MR, WO, S, 1, WO>(acc, w, t0 + ci, xr + ci, cin);                              // kx = 0
      dstep<MR, WO, S, 0, WO>(acc, w, t0 + cin + ci, xr + cin + ci, cin);                  // kx = 1
      dstep<MR, WO, S, 0, S == 1 ? WO - 1 : WO>(acc, w, t0 + 2 * cin + ci, xr + 2 * cin + ci, cin);  // kx = 2
    }
  }
  const size_t hps = a.hps;
  const int q = a.q;
  const uint32_t z0 = 1u << (WO - 1), z2 = 1u;  // plane 0 zeroes the row's last pixel, plane 2 its first
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m) store_h(a.hd[m], hps, q, WO, reduce_lanes<WO>(acc[m]), a.bias[m], a.mv[m], z0, z2);
}

// Row widths up to C1D_MAXW; channels per tile up to c1d_mrmax(WO): MR x WO accumulators, MR weights and one
// input vector within the 32 vector registers.
constexpr int C1D_MAXW = 12;
constexpr int c1d_mrmax(int wo) { return 31 / (wo + 1) < 8 ? 31 / (wo + 1) : 8; }
typedef void (*T1dFn)(const T1dArgs&);

template <int WO, int MR>
struct Fill1d {
  static void run(T1dFn (*tab)[C1D_MAXW + 1][9]) {
    tab[0][WO][MR] = &tile1d<MR, WO, 1>;
    tab[1][WO][MR] = &tile1d<MR, WO, 2>;
    Fill1d<WO, MR - 1>::run(tab);
  }
};
template <int WO>
struct Fill1d<WO, 0> {
  static void run(T1dFn (*)[C1D_MAXW + 1][9]) {}
};
template <int WO>
struct FillAll1d {
  static void run(T1dFn (*tab)[C1D_MAXW + 1][9]) {
    Fill1d<WO, c1d_mrmax(WO)>::run(tab);
    FillAll1d<WO - 1>::run(tab);
  }
};
template <>
struct FillAll1d<0> {
  static void run(T1dFn (*)[C1D_MAXW + 1][9]) {}
};

struct Table1d {
  T1dFn fn[2][C1D_MAXW + 1][9];  // [stride - 1][WO][MR]
  Table1d() {
    memset(fn, 0, sizeof(fn));
    FillAll1d<C1D_MAXW>::run(fn);
  }
};
static const Table1d table1d;

static void conv1d_impl(const Plan& p, const Task1& t, const float* prep, const PrepGeom& g) {
  const int Wo = p.Wo, Cin = p.w.Cin, S = p.S;
  zero_h_pads(p, t, p.h + p.hoff[t.n]);
  const int M = t.j1 - t.j0;
  if (M <= 0) return;

  T1dArgs a;
  a.rs = g.ps;
  a.cin = Cin;
  a.hps = p.h_ps;
  const T1dFn* fns = table1d.fn[S - 1][Wo];
  const int mrmax = c1d_mrmax(Wo);
  const int nt = (M + mrmax - 1) / mrmax;
  const int32_t* act = p.act + (size_t)t.n * p.w.C;
  const size_t K9 = (size_t)Cin * 9;
  const int row_lines = (int)((K9 + L - 1) / L);
  const int nrows = t.r1 - t.r0;
  // Channel tiles outside (their weight rows stay in cache across the band's rows), rows inside; each row
  // prefetches its share of the next tile's rows.
  int j = t.j0;
  for (int k = 0; k < nt; ++k) {
    const int mr = (t.j1 - j + (nt - k) - 1) / (nt - k);
    set_tile_channels(a, p, t.n, p.w.w1d, j, mr);
    a.pf_n = k + 1 < nt ? (t.j1 - j - mr + (nt - k - 1) - 1) / (nt - k - 1) : 0;  // the next tile's mr
    for (int m = 0; m < a.pf_n; ++m) a.pf[m] = p.w.w1d + (size_t)act[j + mr + m] * K9;
    const int share = (row_lines + nrows - 1) / nrows;
    for (int r = t.r0; r < t.r1; ++r) {
      a.x = prep + (size_t)(S * (r - t.r0)) * g.ps;
      a.ky0 = r == 0 ? 1 : 0;
      a.ky1 = imin(3, p.H - S * r + 1);
      a.q = r * Wo;
      a.pf_line0 = (r - t.r0) * share;
      a.pf_lines = row_lines > a.pf_line0 ? imin(share, row_lines - a.pf_line0) : 0;
      const int steps = (a.ky1 - a.ky0) * (Cin / L);
      a.pf_lpi = steps > 0 ? (a.pf_lines + steps - 1) / steps : 0;
      fns[mr](a);
    }
    j += mr;
  }
}
#endif  // GATEKIT_CONV1_DOT

// ---------------------------------------------------------------------------------------------------------
// conv2: y[co] = relu(sum_{j active, tap} w2[co][c_j][tap] * h[j][...] + b2[co] + res[co]); with a projection
// shortcut, res[co] = sum_ci ws[co][ci] * xs[ci][...] (its bias is in b2) is Cin more K steps of the same tile.
struct T2Args {
  const float* a;          // w2p block of the tile's first output channel, at lane co0 % W2B
  ptrdiff_t woff[(MRCAP + 7) / 8];  // from a: the tile's k-th group of 8 output channels (in W2B-wide blocks)
  const int32_t* aoff;     // per active channel: c * 9 * W2B
  int nact;
  const float* b;          // h of active channel 0 at the tile's first pixel
  size_t cs;               // h stride per active channel
  ptrdiff_t ps;            // h plane stride
  ptrdiff_t rs;            // h row stride (Wo)
  float* y;                // sample's output
  const float* res;        // sample's residual, or null with a shortcut
  const float* ws;         // shortcut: wsp block of the tile's first output channel, at lane co0 % W2B; or null
  ptrdiff_t wsoff[(MRCAP + 7) / 8];  // from ws: the tile's k-th group of 8 output channels
  const float* xs;         // shortcut: sample's xs at the tile's first pixel
  int cin;
  int P0;                  // xs stride per input channel (Ho * Wo)
  const float* bias;       // b2 + co0
  int co0, Cout, P, q0, qend;
};

template <int MR, int NR>
static void tile2(const T2Args& a) {
  constexpr int NB = (MR + 7) / 8;
  vec acc[MR][NR];
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NR; ++v) acc[m][v] = V::zero();

  const int32_t* aoff = a.aoff;
  const int nact = a.nact;
  const float* b = a.b;
  const size_t cs = a.cs;
  const ptrdiff_t ps = a.ps, rs = a.rs;

  for (int j = 0; j < nact; ++j, b += cs) {
    const float* ab = a.a + aoff[j];
    // The active blocks are scattered (inactive channels are skipped), so the hardware prefetcher does
    // not see a stream: fetch the blocks of the channel after next.
    if (j + 2 < nact) {
#pragma GCC unroll 4
      for (int k = 0; k < NB; ++k) {
        const float* nx = a.a + aoff[j + 2] + a.woff[k];
#pragma GCC unroll 9
        for (int t = 0; t < 9 * W2B; t += 16) V::prefetch(nx + t);
        V::prefetch(nx + 9 * W2B - 1);
      }
    }
    const float* w[NB];
#pragma GCC unroll 4
    for (int k = 0; k < NB; ++k) w[k] = ab + a.woff[k];
    ktaps<MR, NR, 1, W2B, 8>(acc, b, ps, rs, w, 0);
  }

  if (a.ws) {  // projection shortcut: one K step per input channel, weights contiguous per group of 8
    const float* w[NB];
#pragma GCC unroll 4
    for (int k = 0; k < NB; ++k) w[k] = a.ws + a.wsoff[k];
    const float* xb = a.xs;
    const ptrdiff_t xst = a.P0;
    for (int ci = 0; ci < a.cin; ++ci, xb += xst) kstep<MR, NR, 8>(acc, xb, w, ci * W2B);
  }

  const int P = a.P;
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m) {
    const int co = a.co0 + m;
    if (co >= a.Cout) break;
    const vec bias = V::set1(a.bias[m]);
    float* yy = a.y + (size_t)co * P;
    if (a.res) {
      const float* rr = a.res + (size_t)co * P;
#pragma GCC unroll 8
      for (int v = 0; v < NR; ++v) {
        const int q = a.q0 + v * L;
        const int nvalid = imin(L, a.qend - q);
        const vec r = V::load_n(rr + q, nvalid);
        V::store_n(yy + q, relu(V::add(V::add(acc[m][v], bias), r)), nvalid);
      }
    } else {
#pragma GCC unroll 8
      for (int v = 0; v < NR; ++v) {
        const int q = a.q0 + v * L;
        V::store_n(yy + q, relu(V::add(acc[m][v], bias)), imin(L, a.qend - q));
      }
    }
  }
}

typedef void (*T2Fn)(const T2Args&);
constexpr int C2_MRSLOTS = MRCAP / C2_STEP;

template <int NR, int MR>
struct Fill2 {
  static void run(T2Fn (*tab)[C2_MRSLOTS + 1]) {
    tab[NR][MR / C2_STEP] = &tile2<MR, NR>;
    Fill2<NR, MR - C2_STEP>::run(tab);
  }
};
template <int NR>
struct Fill2<NR, 0> {
  static void run(T2Fn (*)[C2_MRSLOTS + 1]) {}
};
template <int NR>
struct FillAll2 {
  static void run(T2Fn (*tab)[C2_MRSLOTS + 1]) {
    Fill2<NR, c2_mrmax(NR)>::run(tab);
    FillAll2<NR - 1>::run(tab);
  }
};
template <>
struct FillAll2<0> {
  static void run(T2Fn (*)[C2_MRSLOTS + 1]) {}
};

struct Table2 {
  T2Fn fn[C2_NRMAX + 1][C2_MRSLOTS + 1];
  Table2() {
    memset(fn, 0, sizeof(fn));
    FillAll2<C2_NRMAX>::run(fn);
  }
};
static const Table2 table2;

// As group_cost1 for conv2's pixel tiles (full tiles of c2_mrmax(r) channels, then the rest).
static double group_cost2(int M, int r, int K) {
  const int mrmax = c2_mrmax(r);
  double cost = 0;
  for (int done = 0; done < M;) {
    const int mr = imin(mrmax, M - done);
    cost += K * step_cycles(mr, r) + 6.0 * mr * r + 20.0;
    done += mr;
  }
  return cost;
}

static int pick_nr2(int M, int nv, int K, double* cycles = nullptr) {
  int best = 1;
  double best_cost = 1e300;
  for (int nr = 1; nr <= C2_NRMAX; ++nr) {
    const int full = nv / nr, rest = nv % nr;
    const double cost = full * group_cost2(M, nr, K) + (rest ? group_cost2(M, rest, K) : 0.0);
    if (cost < best_cost * 0.999) {
      best_cost = cost;
      best = nr;
    }
  }
  if (cycles) *cycles = best_cost;
  return best;
}

static double conv2_cycles_impl(int M, int nv, int K) {
  double c = 0;
  pick_nr2(M, nv, K, &c);
  return c;
}

#if defined(GATEKIT_CHANNEL_TILES)
// ---------------------------------------------------------------------------------------------------------
// conv2 in output-channel vectors (Task2::channels; paths whose W2 blocks are one vector, W2B == L).  A
// tile keeps NP x MV accumulators: NP consecutive pixels times MV vectors of L output channels.  Each K step
// loads MV weight vectors (one tap of one active channel) and broadcasts NP pixels of h.  Pixels are read as
// scalars, so a map width that is not a multiple of L costs nothing (a pixel-vector load one row down then
// spans two cache lines) and no lane is lost on the tail of a small map (a 5x5 map is 2 tiles of 13 and 12
// pixels, not 2 vectors of 16).  The epilogue transposes each L x L block back to pixel vectors (NCHW y).
static_assert(W2B == L, "channel tiles load one packed W2 block per vector");
struct T2cArgs {
  const float* w;          // w2p block of the tile's first output channel (co0 % L == 0)
  size_t ablk;             // stride between blocks of L output channels (C * 9 * L)
  const int32_t* aoff;     // per active channel: c * 9 * L
  int nact;
  const float* b;          // h of active channel 0 at the tile's first pixel (padding row 0, plane 0)
  size_t cs;               // h stride per active channel
  ptrdiff_t ps, rs;        // h plane and row strides
  float* y;                // sample's output
  const float* res;        // sample's residual, or null with a shortcut
  const float* ws;         // shortcut: wsp block of the tile's first output channel, or null
  size_t wsblk;            // stride between shortcut blocks (Cin * L)
  const float* xs;         // shortcut: sample's xs at the tile's first pixel
  int cin;
  int P0;                  // xs stride per input channel
  const float* bias;       // b2 + co0
  int co0, Cout, P, q0;
  int ky0, ky1;            // row tiles (tile2r): the kernel rows that read inside the map
  // Row tiles read W2 from w2r (PackedView::w2r): wr[k] is vector k of the tile's output channels at inner
  // channel 0, tap 0 (tap stride kRowGroup, inner channel c at 9 * kRowGroup * c).  They prefetch their own
  // blocks two active channels ahead, and the next channel group's (pf_mv vectors at pfr, or none) while this
  // group's rows compute: tile call pf_ri of pf_nr fetches active channels pf_ri, pf_ri + pf_nr, ...
  const float* wr[4];
  const float* pfr[4];
  int pf_mv, pf_ri, pf_nr;
};

// One K step: MV weight vectors at w, w + blk, ... times NP broadcast pixels at src.
template <int MV, int NP>
static inline __attribute__((always_inline)) void cstep(vec (&acc)[NP][MV], const float* src, const float* w,
                                                       size_t blk) {
  vec wv[MV];
#pragma GCC unroll 4
  for (int k = 0; k < MV; ++k) wv[k] = V::load(w + k * blk);
#pragma GCC unroll 32
  for (int q = 0; q < NP; ++q) {
    const vec xv = V::bcast(src + q);
#pragma GCC unroll 4
    for (int k = 0; k < MV; ++k) acc[q][k] = V::fma(wv[k], xv, acc[q][k]);
  }
}

// The epilogue of a channel tile: each L x L block of acc transposed back to pixel vectors, + bias (+ residual),
// relu, stored to y at pixels [q0, q0 + NP) of output channels co0 + [0, MV * L).
template <int MV, int NP>
static inline __attribute__((always_inline)) void store2c(const T2cArgs& a, vec (&acc)[NP][MV]) {
  const int P = a.P;
#pragma GCC unroll 4
  for (int k = 0; k < MV; ++k) {
#pragma GCC unroll 2
    for (int q0 = 0; q0 < NP; q0 += L) {
      const int nq = imin(L, NP - q0);
      vec t[L];
#pragma GCC unroll 16
      for (int i = 0; i < L; ++i) t[i] = q0 + i < NP ? acc[imin(q0 + i, NP - 1)][k] : V::zero();
      V::transpose(t);  // t[c]: channel co0 + k*L + c at the nq pixels
#pragma GCC unroll 16
      for (int c = 0; c < L; ++c) {
        const int co = a.co0 + k * L + c;
        if (co >= a.Cout) break;
        const size_t off = (size_t)co * P + a.q0 + q0;
        vec v = V::add(t[c], V::set1(a.bias[k * L + c]));
        if (a.res) v = V::add(v, V::load_n(a.res + off, nq));
        V::store_n(a.y + off, relu(v), nq);
      }
    }
  }
}

template <int MV, int NP>
static void tile2c(const T2cArgs& a) {
  vec acc[NP][MV];
#pragma GCC unroll 32
  for (int q = 0; q < NP; ++q)
#pragma GCC unroll 4
    for (int k = 0; k < MV; ++k) acc[q][k] = V::zero();

  const int32_t* aoff = a.aoff;
  const int nact = a.nact;
  const size_t ablk = a.ablk;
  const float* b = a.b;
  const size_t cs = a.cs;
  const ptrdiff_t ps = a.ps, rs = a.rs;
  for (int j = 0; j < nact; ++j, b += cs) {
    const float* wj = a.w + aoff[j];
    if (j + 2 < nact) {  // scattered active blocks: no stream for the hardware prefetcher to follow
      const float* nx = a.w + aoff[j + 2];
#pragma GCC unroll 4
      for (int k = 0; k < MV; ++k)
#pragma GCC unroll 9
        for (int t = 0; t < 9; ++t) V::prefetch(nx + k * ablk + t * L);
    }
    const float* p0 = b;
    const float* p1 = b + ps;
    const float* p2 = b + 2 * ps;
    cstep<MV, NP>(acc, p0, wj + 0 * L, ablk);
    cstep<MV, NP>(acc, p1, wj + 1 * L, ablk);
    cstep<MV, NP>(acc, p2, wj + 2 * L, ablk);
    cstep<MV, NP>(acc, p0 + rs, wj + 3 * L, ablk);
    cstep<MV, NP>(acc, p1 + rs, wj + 4 * L, ablk);
    cstep<MV, NP>(acc, p2 + rs, wj + 5 * L, ablk);
    cstep<MV, NP>(acc, p0 + 2 * rs, wj + 6 * L, ablk);
    cstep<MV, NP>(acc, p1 + 2 * rs, wj + 7 * L, ablk);
    cstep<MV, NP>(acc, p2 + 2 * rs, wj + 8 * L, ablk);
  }
  if (a.ws) {
    const float* xb = a.xs;
    for (int ci = 0; ci < a.cin; ++ci, xb += a.P0) cstep<MV, NP>(acc, xb, a.ws + (size_t)ci * L, a.wsblk);
  }

  store2c<MV, NP>(a, acc);
}

typedef void (*T2cFn)(const T2cArgs&);
// Pixel tiles: up to C2C_NP2 pixels with 2 channel vectors, C2C_NP1 with 1 (a last block of L channels).
// On 9x9 and 5x5 blocks 12 pixels x 2 vectors measured faster than 10 x 2 and 6 x 4.
constexpr int C2C_NP2 = 12;
constexpr int C2C_NP1 = 24;

template <int MV, int NP>
struct Fill2c {
  static void run(T2cFn (*tab)[C2C_NP1 + 1]) {
    tab[MV][NP] = &tile2c<MV, NP>;
    Fill2c<MV, NP - 1>::run(tab);
  }
};
template <int MV>
struct Fill2c<MV, 0> {
  static void run(T2cFn (*)[C2C_NP1 + 1]) {}
};

struct Table2c {
  T2cFn fn[3][C2C_NP1 + 1];  // [MV][NP]
  Table2c() {
    memset(fn, 0, sizeof(fn));
    Fill2c<1, C2C_NP1>::run(fn);
    Fill2c<2, C2C_NP2>::run(fn);
  }
};
static const Table2c table2c;

// Row tiles for small maps (Wo <= C2R_MAXW): a tile is one whole output row of WO pixels times MV vectors of L
// output channels, so that the taps that read the zero padding are skipped instead of multiplied: the kernel
// rows above the first output row and below the last (runtime bounds ky0, ky1) and, per kernel row, the left tap
// of the row's first pixel and the right tap of its last (compile time).  Every tap reads plane 1 of h (the
// unshifted map), at column c - 1, c, c + 1.  A 3x3 convolution on a 5x5 map has 25% of its taps in the
// padding (oneDNN skips them; MLAS multiplies them), 14% on 9x9, 8% on 17x17.

// NR output rows (1 to 3) per tile: each weight vector is loaded once for all of them (a half or a third of
// the weight reads).
template <int MV, int WO, int NR>
static void tile2r(const T2cArgs& a) {
  vec acc[NR][WO][MV];
#pragma GCC unroll 3
  for (int i = 0; i < NR; ++i)
#pragma GCC unroll 32
    for (int q = 0; q < WO; ++q)
#pragma GCC unroll 4
      for (int k = 0; k < MV; ++k) acc[i][q][k] = V::zero();

  const int32_t* aoff = a.aoff;  // c * 9 * L: times kRowGroup / L in w2r
  constexpr int GL = kRowGroup / L;
  const int nact = a.nact;
  const float* b = a.b;  // plane 1 of h, padded row r (kernel row 0 of output row r)
  const size_t cs = a.cs;
  const ptrdiff_t rs = a.rs;
  // Kernel rows inside the map: [ky0, 3) for the first row, [0, ky1) for the last (one row: [ky0, ky1)).
  bool ok[3][NR];
  for (int ky = 0; ky < 3; ++ky)
    for (int i = 0; i < NR; ++i) ok[ky][i] = (i > 0 || ky >= a.ky0) && (i < NR - 1 || ky < a.ky1);
  int pfc = a.pf_ri;  // prefetches the next group's blocks of channel j when it reaches 0
  for (int j = 0; j < nact; ++j, b += cs) {
    const size_t off = (size_t)aoff[j] * GL;
    if (j + 2 < nact) {  // scattered active blocks: no stream for the hardware prefetcher to follow
      const size_t nx = (size_t)aoff[j + 2] * GL;
#pragma GCC unroll 4
      for (int k = 0; k < MV; ++k)
#pragma GCC unroll 9
        for (int t = 0; t < 9; ++t) V::prefetch(a.wr[k] + nx + t * kRowGroup);
    }
    if (a.pf_mv) {
      if (pfc == 0) {
        for (int k = 0; k < a.pf_mv; ++k)
#pragma GCC unroll 9
          for (int t = 0; t < 9; ++t) V::prefetch(a.pfr[k] + off + t * kRowGroup);
        pfc = a.pf_nr;
      }
      --pfc;
    }
#pragma GCC unroll 3
    for (int ky = 0; ky < 3; ++ky) {
      if (NR == 1 && !ok[ky][0]) continue;
#pragma GCC unroll 3
      for (int kx = 0; kx < 3; ++kx) {
        const size_t tap = off + (size_t)(3 * ky + kx) * kRowGroup;
        vec wv[MV];
#pragma GCC unroll 4
        for (int k = 0; k < MV; ++k) wv[k] = V::load(a.wr[k] + tap);
#pragma GCC unroll 3
        for (int i = 0; i < NR; ++i) {
          if (NR > 1 && !ok[ky][i]) continue;
          const float* src = b + (ky + i) * rs + kx - 1;  // column c + kx - 1 of plane 1
          // kx = 0: none for the row's first pixel; kx = 2: none for its last
#pragma GCC unroll 32
          for (int q = 0; q < WO; ++q) {
            if ((kx == 0 && q == 0) || (kx == 2 && q == WO - 1)) continue;
            const vec xv = V::bcast(src + q);
#pragma GCC unroll 4
            for (int k = 0; k < MV; ++k) acc[i][q][k] = V::fma(wv[k], xv, acc[i][q][k]);
          }
        }
      }
    }
  }
  if (a.ws) {
    const float* xb = a.xs;
    for (int ci = 0; ci < a.cin; ++ci, xb += a.P0) {
      vec wv[MV];
#pragma GCC unroll 4
      for (int k = 0; k < MV; ++k) wv[k] = V::load(a.ws + (size_t)ci * L + k * a.wsblk);
#pragma GCC unroll 3
      for (int i = 0; i < NR; ++i)
#pragma GCC unroll 32
        for (int q = 0; q < WO; ++q) {
          const vec xv = V::bcast(xb + i * WO + q);
#pragma GCC unroll 4
          for (int k = 0; k < MV; ++k) acc[i][q][k] = V::fma(wv[k], xv, acc[i][q][k]);
        }
    }
  }
  T2cArgs b2 = a;
#pragma GCC unroll 3
  for (int i = 0; i < NR; ++i) {
    b2.q0 = a.q0 + i * WO;
    store2c<MV, WO>(b2, acc[i]);
  }
}

// Row tiles up to C2R_MAXW pixels wide; channel vectors per tile up to c2r_mvmax(WO, NR) (accumulators, MV
// weights and one broadcast within the 32 vector registers).
// Three rows per tile on maps up to C2R_TRIW wide (a 3x3 map in one tile): each weight vector loaded from L2
// feeds up to 9 pixels instead of 3.
constexpr int C2R_MAXW = 12;
constexpr int C2R_PAIRW = 6;
constexpr int C2R_TRIW = 4;
constexpr int c2r_mvmax1(int wo) { return wo <= 6 ? 4 : wo <= 9 ? 3 : 2; }
constexpr int c2r_fit(int px) { return 27 / px < 4 ? 27 / px : 4; }
static_assert(c2r_fit(2 * C2R_MAXW) >= 1 && c2r_fit(3 * C2R_TRIW) >= 1, "multi-row tiles need one channel vector");
constexpr int c2r_mvmax(int wo, int nr) { return nr == 1 ? c2r_mvmax1(wo) : c2r_fit(nr * wo); }

template <int WO, int MV, int NR>
struct Fill2r {
  static void run(T2cFn (*tab)[5][C2R_MAXW + 1]) {
    tab[NR - 1][MV][WO] = &tile2r<MV, WO, NR>;
    Fill2r<WO, MV - 1, NR>::run(tab);
  }
};
template <int WO, int NR>
struct Fill2r<WO, 0, NR> {
  static void run(T2cFn (*)[5][C2R_MAXW + 1]) {}
};
template <int WO>
struct FillAll2r {
  static void run(T2cFn (*tab)[5][C2R_MAXW + 1]) {
    Fill2r<WO, c2r_mvmax(WO, 1), 1>::run(tab);
    Fill2r<WO, c2r_mvmax(WO, 2), 2>::run(tab);
    Fill2r<WO, WO <= C2R_TRIW ? c2r_mvmax(WO, 3) : 0, 3>::run(tab);
    FillAll2r<WO - 1>::run(tab);
  }
};
template <>
struct FillAll2r<0> {
  static void run(T2cFn (*)[5][C2R_MAXW + 1]) {}
};

struct Table2r {
  T2cFn fn[3][5][C2R_MAXW + 1];  // [NR - 1][MV][WO]
  Table2r() {
    memset(fn, 0, sizeof(fn));
    FillAll2r<C2R_MAXW>::run(fn);
  }
};
static const Table2r table2r;

// Blocks of L output channels in the widest channel tile conv2c_impl runs on a map Wo wide (the planner cuts
// channel ranges in these units).
static int channel_tile_blocks_impl(int wo) { return wo <= C2R_MAXW ? c2r_mvmax1(wo) : 2; }

static void conv2c_impl(const Plan& p, const Task2& t) {
  const int Wo = p.Wo, C = p.w.C, P = p.P;
  const int n = t.n;
  const int qb = t.r0 * Wo, qe = t.r1 * Wo;
  const float* hn = p.h + p.hoff[n];

  T2cArgs a;
  a.ablk = (size_t)C * 9 * L;
  a.aoff = p.aoff2 + (size_t)n * C;
  a.nact = p.nact[n];
  a.cs = p.h_cs;
  a.ps = (ptrdiff_t)p.h_ps;
  a.rs = Wo;
  a.y = p.y + (size_t)n * p.w.Cout * P;
  a.res = p.res ? p.res + (size_t)n * p.w.Cout * P : nullptr;
  a.wsblk = (size_t)p.w.Cin * L;
  a.cin = p.w.Cin;
  a.P0 = P;
  a.Cout = p.w.Cout;
  a.P = P;

  const int co_end = imin(t.co1, p.w.CoutB);
  if (Wo <= C2R_MAXW && p.w.w2r) {
    // Row tiles, channel vectors outside, rows inside; in pairs of rows on maps wider than C2R_PAIRW where the
    // band has two rows or more: a pair shares each weight load between two rows, which pays on 9x9 maps; on
    // 5x5 maps single rows of 4 channel vectors measured faster than pairs of 2 at partial activity.
    const int rows = t.r1 - t.r0;
    const int nrmax = rows >= 3 && Wo <= C2R_TRIW ? 3 : rows >= 2 && Wo > C2R_PAIRW ? 2 : 1;
    const int mvmax = c2r_mvmax(Wo, nrmax);
    // Tile calls per group (rows, pairs or triples of rows): each prefetches its share of the next group's
    // blocks (from memory: the active channels change from input to input), so that only a task's first group
    // waits.
    const int ncalls = (rows + nrmax - 1) / nrmax;
    const size_t gblk = (size_t)C * 9 * kRowGroup;  // stride between groups of kRowGroup output channels in w2r
    auto w2r_at = [&](int co) { return p.w.w2r + (size_t)(co / kRowGroup) * gblk + co % kRowGroup; };
    for (int co = t.co0; co < co_end;) {
      const int mv = imin(mvmax, (co_end - co) / L);
      const int next = co + mv * L;
      for (int k = 0; k < mv; ++k) a.wr[k] = w2r_at(co + k * L);
      a.ws = p.w.wsp ? p.w.wsp + (size_t)(co / L) * a.wsblk : nullptr;
      a.bias = p.w.b2 + co;
      a.co0 = co;
      a.pf_mv = next < co_end ? imin(mvmax, (co_end - next) / L) : 0;
      for (int k = 0; k < a.pf_mv; ++k) a.pfr[k] = w2r_at(next + k * L);
      a.pf_nr = ncalls;
      a.pf_ri = 0;
      for (int r = t.r0; r < t.r1; ++a.pf_ri) {
        const int nr = imin(nrmax, t.r1 - r);
        a.q0 = r * Wo;
        a.b = hn + p.h_ps + (size_t)r * Wo;
        a.xs = p.xs ? p.xs + (size_t)n * p.w.Cin * P + a.q0 : nullptr;
        a.ky0 = r == 0 ? 1 : 0;
        a.ky1 = r + nr - 1 == p.Ho - 1 ? 2 : 3;
        table2r.fn[nr - 1][mv][Wo](a);
        r += nr;
      }
      co += mv * L;
    }
    return;
  }
  // Output channels outside (each block's weights stay in cache across the band's pixel tiles), pixel tiles
  // inside, split evenly (a band of 25 pixels: 13 + 12, not 12 + 12 + 1).
  for (int co = t.co0; co < co_end;) {
    const int mv = co_end - co >= 2 * L ? 2 : 1;
    const int npmax = mv == 2 ? C2C_NP2 : C2C_NP1;
    const int ntile = (qe - qb + npmax - 1) / npmax;
    a.w = p.w.w2p + (size_t)(co / L) * a.ablk;
    a.ws = p.w.wsp ? p.w.wsp + (size_t)(co / L) * a.wsblk : nullptr;
    a.bias = p.w.b2 + co;
    a.co0 = co;
    for (int i = 0, q = qb; i < ntile; ++i) {
      const int np = (qe - q + (ntile - i) - 1) / (ntile - i);
      a.q0 = q;
      a.b = hn + q;
      a.xs = p.xs ? p.xs + (size_t)n * p.w.Cin * P + q : nullptr;
      table2c.fn[mv][np](a);
      q += np;
    }
    co += mv * L;
  }
}
#endif  // GATEKIT_CHANNEL_TILES

static void conv2_impl(const Plan& p, const Task2& t) {
#if defined(GATEKIT_CHANNEL_TILES)
  if (t.channels) {
    conv2c_impl(p, t);
    return;
  }
#endif
  const int Wo = p.Wo, C = p.w.C, P = p.P;
  const int n = t.n;
  const int qb = t.r0 * Wo, qe = t.r1 * Wo;
  const int nv = (qe - qb + L - 1) / L;
  const int nact = p.nact[n];
  const float* hn = p.h + p.hoff[n];
  const size_t ablk = (size_t)C * 9 * W2B;  // stride between blocks of W2B output channels

  T2Args a;
  a.aoff = p.aoff2 + (size_t)n * C;
  a.nact = nact;
  a.cs = p.h_cs;
  a.ps = (ptrdiff_t)p.h_ps;
  a.rs = Wo;
  a.y = p.y + (size_t)n * p.w.Cout * P;
  a.res = p.res ? p.res + (size_t)n * p.w.Cout * P : nullptr;
  const size_t wsblk = (size_t)p.w.Cin * W2B;
  a.cin = p.w.Cin;
  a.P0 = P;
  a.Cout = p.w.Cout;
  a.P = P;
  a.qend = qe;

  // Output channels in steps of C2_STEP (weights are padded to a multiple of 8 channels).
  const int co_end = imin(t.co1, (p.w.Cout + C2_STEP - 1) / C2_STEP * C2_STEP);
  const int M = co_end - t.co0;
  if (M <= 0) return;
  const int NR = pick_nr2(M, nv, 9 * nact + (p.w.wsp ? p.w.Cin : 0));

  for (int v0 = 0; v0 < nv; v0 += NR) {
    const int nr = imin(NR, nv - v0);
    a.b = hn + qb + (size_t)v0 * L;
    a.q0 = qb + v0 * L;
    a.xs = p.xs ? p.xs + (size_t)n * p.w.Cin * P + a.q0 : nullptr;
    const int mrmax = c2_mrmax(nr);
    for (int co = t.co0; co < co_end;) {
      const int mr = imin(mrmax, co_end - co);
      a.a = p.w.w2p + (size_t)(co / W2B) * ablk + (co % W2B);
      a.ws = p.w.wsp ? p.w.wsp + (size_t)(co / W2B) * wsblk + (co % W2B) : nullptr;
      // Group k of 8 channels starts at channel co + 8k (co % 8 == 0 whenever the tile has more than one group).
      for (int k = 0; k * 8 < mr; ++k) {
        const int c0 = co + 8 * k;
        a.woff[k] = (ptrdiff_t)((size_t)(c0 / W2B) * ablk + c0 % W2B) - (ptrdiff_t)((size_t)(co / W2B) * ablk + co % W2B);
        a.wsoff[k] = (ptrdiff_t)((size_t)(c0 / W2B) * wsblk + c0 % W2B) - (ptrdiff_t)((size_t)(co / W2B) * wsblk + co % W2B);
      }
      a.bias = p.w.b2 + co;
      a.co0 = co;
      table2.fn[nr][mr / C2_STEP](a);
      co += mr;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// The channel gate's kernels (IsaOps::gate_sum, gate_fc; channel_gate.cpp).

// Sum of n floats: 4 independent vector sums, then a float tree across the lanes.  Channels are independent,
// so consecutive calls overlap (no long chain of dependent scalar adds).
static float gate_sum_impl(const float* p, size_t n) {
  vec a0 = V::zero(), a1 = V::zero(), a2 = V::zero(), a3 = V::zero();
  size_t i = 0;
  for (; i + 4 * L <= n; i += 4 * L) {
    a0 = V::add(a0, V::load(p + i));
    a1 = V::add(a1, V::load(p + i + L));
    a2 = V::add(a2, V::load(p + i + 2 * L));
    a3 = V::add(a3, V::load(p + i + 3 * L));
  }
  for (; i + L <= n; i += L) a0 = V::add(a0, V::load(p + i));
  if (i < n) a1 = V::add(a1, V::load_n(p + i, (int)(n - i)));
  float t[L];
  V::store_n(t, V::add(V::add(a0, a1), V::add(a2, a3)), L);
#pragma GCC unroll 8
  for (int w = L / 2; w >= 1; w /= 2)
#pragma GCC unroll 8
    for (int j = 0; j < w; ++j) t[j] += t[j + w];
  return t[0];
}

// One FC as a sum of scaled weight rows: y[0:m) = bias[0:m) (or 0) + sum_k s[k] * a[k][0:m), with a [kn][m] and
// m a multiple of 128 (kGateChunk): 128 outputs at a time stay in registers (8 vectors of 16 lanes, or 2 x 8 /
// 4 x 8 passes on narrower paths).  skip_nonpositive: rows whose s[k] <= 0 are skipped (s after a ReLU); a NaN
// s[k] is not, so that it makes every output NaN, as a NaN through ReLU and MatMul does.
static void gate_fc_impl(float* y, const float* bias, const float* a, const float* s, int kn, int m,
                         bool skip_nonpositive) {
  constexpr int NV = 8;
  for (int j0 = 0; j0 < m; j0 += NV * L) {
    vec acc[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[v] = bias ? V::load(bias + j0 + v * L) : V::zero();
    for (int k = 0; k < kn; ++k) {
      if (skip_nonpositive && s[k] <= 0.0f) continue;
      const vec sv = V::set1(s[k]);
      const float* row = a + (size_t)k * m + j0;
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[v] = V::fma(sv, V::load(row + v * L), acc[v]);
    }
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) V::store_n(y + j0 + v * L, acc[v], L);
  }
}
