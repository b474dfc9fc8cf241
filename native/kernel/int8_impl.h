// The int8 GatedBlock kernels, written once over a small traits interface and compiled once per ISA.
//
// Included by int8_isa_*.cpp inside an anonymous namespace, after they define:
//   struct V8     L (pixels per vector); types xvec (L words of u8 quads, as the dot consumes them), wvec (one
//                 weight word prepared for dot), acc (accumulators of L pixels), ivec (L int32), fvec (L floats);
//                 azero, loadx, wprep, dot, finish (acc -> ivec), izero, cvt (int32 -> float, to nearest), set1,
//                 fmadd (fused), add, relu ((0 > v) ? 0 : v, so NaN passes), loadf / storef / storei (first n
//                 lanes), quant (clamp(roundeven(v / s), 0, 255), NaN -> 0), combine (4 channels' ivecs into
//                 words), zero_lanes, nonfinite (any lane NaN or infinite), lane (one int32), prefetch
//   constexpr int C1_MRMAX, c1_nrmax(mr)   conv1 tiles: mr (a multiple of 4) active channels x nr pixel vectors
//   constexpr int C2_MRMAX, c2_nrmax(mr)   conv2 tiles: mr (a multiple of 4) output channels x nr pixel vectors
//   constexpr double kDotCycles, kWordCycles   the tile cost model: cycles per dot, per broadcast weight word
//
// Both convolutions are "indirect GEMMs" over pre-shifted planes exactly as the fp32 kernels (kernel_impl.h), with
// K steps of 4 channels: a tile keeps MR x NR accumulators, each K step loads NR vectors of L pixels x 4 channels
// and broadcasts one weight word per row.  The epilogues run in float with the exact operations of the contract
// (gated_block_int8.h), so every path gives the same bits.
//
// Nothing here may use std:: templates (see plan.h).

typedef V8::xvec xvec;
typedef V8::wvec wvec;
typedef V8::acc accv;
typedef V8::ivec ivec;
typedef V8::fvec fvec;
constexpr int L = V8::L;

using gatekit::Int8Probe;
using gatekit::detail8::IsaOps8;
using gatekit::detail8::Plan8;
using gatekit::detail8::Prep8;
using gatekit::detail8::Task1;
using gatekit::detail8::Task2;

static inline int imin(int a, int b) { return a < b ? a : b; }

constexpr int C1_NRMAX = c1_nrmax(4);
constexpr int C2_NRMAX = c2_nrmax(4);

// ---------------------------------------------------------------------------------------------------------
// Input preparation: qx of the band's padded rows S*r0 .. S*(r1 - 1) + 2, one input quad at a time, as words
// (row i, W + 2 columns with the padding columns zero), then the conv1 planes of plan.h copied from them.

// out[1 + c] = the word of the 4 channels' qx at column c < W (a null row is a channel past Cin: 0); out[0] and
// out[W + 1] = 0.  Returns nonzero where a value is not finite.
static uint32_t quant_row(const float* const (&xr)[4], int W, float x_scale, uint32_t* out) {
  const fvec s = V8::set1(x_scale);
  uint32_t bad = 0;
  for (int c = 0; c < W; c += L) {
    const int n = imin(L, W - c);
    ivec q[4];
    for (int k = 0; k < 4; ++k) {
      if (!xr[k]) {
        q[k] = V8::izero();
        continue;
      }
      const fvec v = V8::loadf(xr[k] + c, n);
      bad |= V8::nonfinite(v);
      q[k] = V8::quant(v, s);
    }
    V8::storei(out + 1 + c, V8::combine(q[0], q[1], q[2], q[3]), n);
  }
  out[0] = 0;
  out[W + 1] = 0;
  return bad;
}

static void prep_impl(const Plan8& p, int n, int r0, int r1, uint32_t* dst, const Prep8& g) {
  const int Cin = p.w.Cin, H = p.H, W = p.W, Wo = p.Wo, S = p.S;
  const size_t W2 = (size_t)W + 2, ps = g.ps;
  const float* xn = p.x + (size_t)n * Cin * H * W;
  uint32_t* q = dst + (size_t)p.w.G * g.cs;  // the quad's quantized band rows
  uint32_t bad = 0;
  for (int gq = 0; gq < p.w.G; ++gq) {
    for (int i = 0; i < g.RQ; ++i) {
      const int yy = S * r0 - 1 + i;
      uint32_t* row = q + (size_t)i * W2;
      if (yy < 0 || yy >= H) {
        memset(row, 0, W2 * sizeof(uint32_t));
        continue;
      }
      const float* xr[4];
      for (int k = 0; k < 4; ++k) {
        const int ci = 4 * gq + k;
        xr[k] = ci < Cin ? xn + ((size_t)ci * H + yy) * W : nullptr;
      }
      bad |= quant_row(xr, W, p.w.x_scale, row);
    }
    uint32_t* d = dst + (size_t)gq * g.cs;
    if (S == 1) {
      for (int kx = 0; kx < 3; ++kx)
        for (int r = 0; r < g.R; ++r) memcpy(d + kx * ps + (size_t)r * Wo, q + (size_t)r * W2 + kx, (size_t)Wo * 4);
    } else {
      for (int kx = 0; kx < 3; ++kx)
        for (int py = 0; py < 2; ++py) {
          uint32_t* pl = d + (size_t)(2 * kx + py) * ps;
          for (int r = 0; r < g.R; ++r) {
            uint32_t* o = pl + (size_t)r * Wo;
            const int i = 2 * r + py;
            if (i >= g.RQ) {
              memset(o, 0, (size_t)Wo * 4);
              continue;
            }
            const uint32_t* s = q + (size_t)i * W2 + kx;
            for (int c = 0; c < Wo; ++c) o[c] = s[2 * c];
          }
        }
    }
  }
  if (bad) __atomic_store_n(&p.bad[n], 1, __ATOMIC_RELAXED);
}

// ---------------------------------------------------------------------------------------------------------
// Tile cost model (cycles per K step), used to pick the tile width: dot throughput, load throughput (NR vector
// loads and MR word broadcasts, about 2 per cycle) and dot latency (one chain per accumulator, 4 cycles), plus a
// per-step overhead, as the fp32 model (kernel_impl.h, step_cycles).
static inline double step_cycles8(int mr, int nr) {
  const double f = kDotCycles * mr * nr + kWordCycles * mr, l = 0.5 * (mr + nr) + 0.5;
  const double c = f > l ? f : l;
  return (c < 4.0 ? 4.0 : c) + 2.5;
}

// Widest tile (channels, a multiple of 4) whose nrmax reaches nr.
static inline int mrmax_for(int nr, int cap, int (*nrmax)(int)) {
  int best = 4;
  for (int mr = 4; mr <= cap; mr += 4)
    if (nrmax(mr) >= nr) best = mr;
  return best;
}

static int c1_nrmax_fn(int mr) { return c1_nrmax(mr); }
static int c2_nrmax_fn(int mr) { return c2_nrmax(mr); }

// Cycles of the tiles over M channels (a multiple of 4, cut into equal tiles of whole quads) and nr vectors.
static double group_cost8(int M, int nr, int K, int cap, int (*nrmax)(int)) {
  const int mrmax = mrmax_for(nr, cap, nrmax);
  const int quads = M / 4, nt = (M + mrmax - 1) / mrmax;
  double cost = 0;
  for (int k = 0, done = 0; k < nt; ++k) {
    const int mq = (quads - done + (nt - k) - 1) / (nt - k);
    cost += K * step_cycles8(4 * mq, nr) + 6.0 * 4 * mq * nr + 20.0;
    done += mq;
  }
  return cost;
}

// The pixel-vector count per tile for M channels x nv vectors and K steps: nv / nr groups of nr, then the rest.
static int pick_nr8(int M, int nv, int K, int nrcap, int mrcap, int (*nrmax)(int)) {
  int best = 1;
  double best_cost = 1e300;
  for (int nr = 1; nr <= nrcap; ++nr) {
    const int full = nv / nr, rest = nv % nr;
    const double cost = full * group_cost8(M, nr, K, mrcap, nrmax) +
                        (rest ? group_cost8(M, rest, K, mrcap, nrmax) : 0.0);
    if (cost < best_cost * 0.999) {
      best_cost = cost;
      best = nr;
    }
  }
  return best;
}

// ---------------------------------------------------------------------------------------------------------
// conv1: qh[j] = quant(fmaf(acc1, s1[c_j], b1[c_j])) for the active channels j of a tile, stored as words of 4
// channels into the three planes of h.
struct T1Args {
  const int32_t* rows[C1_MRMAX];  // W1 row of each channel of the tile (the zero row for padding)
  float s[C1_MRMAX], b[C1_MRMAX];
  uint32_t* hd[C1_MRMAX / 4];     // h of the tile's quads: plane 0, row 1
  const uint32_t* x;              // prep planes of input quad 0 at the tile's first pixel
  ptrdiff_t ps, rs;               // prep plane and row strides
  size_t cs;                      // prep stride per input quad
  int G;
  int q0, qend, Wo;
  size_t hps;
  float h_scale;
  int32_t* pacc[C1_MRMAX];        // probe rows (channel's [P]) or null
  uint8_t* pqh[C1_MRMAX];
};

template <int MR, int NR>
static inline __attribute__((always_inline)) void kstep1(accv (&acc)[MR][NR], const uint32_t* bp,
                                                        const int32_t* const (&w)[MR], int k) {
  xvec xv[NR];
#pragma GCC unroll 8
  for (int v = 0; v < NR; ++v) xv[v] = V8::loadx(bp + v * L);
#pragma GCC unroll 24
  for (int m = 0; m < MR; ++m) {
    const wvec wv = V8::wprep(w[m][k]);
#pragma GCC unroll 8
    for (int v = 0; v < NR; ++v) acc[m][v] = V8::dot(acc[m][v], xv[v], wv);
  }
}

// The 9 taps of one input quad (plane layout of plan.h): weights K steps off .. off + 8.
template <int MR, int NR, int S>
static inline __attribute__((always_inline)) void ktaps1(accv (&acc)[MR][NR], const uint32_t* b, ptrdiff_t ps,
                                                        ptrdiff_t rs, const int32_t* const (&w)[MR], int off) {
  const uint32_t* p0 = b;
  const uint32_t* p1 = b + (S == 1 ? ps : 2 * ps);
  const uint32_t* p2 = b + (S == 1 ? 2 * ps : 4 * ps);
  const ptrdiff_t o1 = S == 1 ? rs : ps;      // ky = 1
  const ptrdiff_t o2 = S == 1 ? 2 * rs : rs;  // ky = 2
  kstep1<MR, NR>(acc, p0, w, off + 0);
  kstep1<MR, NR>(acc, p1, w, off + 1);
  kstep1<MR, NR>(acc, p2, w, off + 2);
  kstep1<MR, NR>(acc, p0 + o1, w, off + 3);
  kstep1<MR, NR>(acc, p1 + o1, w, off + 4);
  kstep1<MR, NR>(acc, p2 + o1, w, off + 5);
  kstep1<MR, NR>(acc, p0 + o2, w, off + 6);
  kstep1<MR, NR>(acc, p1 + o2, w, off + 7);
  kstep1<MR, NR>(acc, p2 + o2, w, off + 8);
}

// One lane's value of an ivec into a probe byte row.
static inline void probe_bytes(uint8_t* dst, ivec v, int n) {
  for (int l = 0; l < n; ++l) dst[l] = (uint8_t)V8::lane(v, l);
}

template <int MR, int NR, int S>
static void tile1(const T1Args& a) {
  static_assert(MR % 4 == 0, "conv1 tiles hold whole quads");
  accv acc[MR][NR];
#pragma GCC unroll 24
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NR; ++v) acc[m][v] = V8::azero();

  const int32_t* rows[MR];
#pragma GCC unroll 24
  for (int m = 0; m < MR; ++m) rows[m] = a.rows[m];
  const uint32_t* b = a.x;
  const size_t cs = a.cs;
  const ptrdiff_t ps = a.ps, rs = a.rs;
  for (int g = 0, off = 0; g < a.G; ++g, off += 9, b += cs) ktaps1<MR, NR, S>(acc, b, ps, rs, rows, off);

  const int Wo = a.Wo;
  const size_t hps = a.hps;
  const fvec hs = V8::set1(a.h_scale);
#pragma GCC unroll 8
  for (int v = 0; v < NR; ++v) {
    const int q = a.q0 + v * L;
    const int nvalid = imin(L, a.qend - q);
    // Lanes in the last column are zero in plane 0 (shifted right); lanes in column 0 are zero in plane 2.
    uint32_t z0 = 0, z2 = 0;
    const int col = q % Wo;
    for (int l = Wo - 1 - col; l < L; l += Wo) z0 |= 1u << l;
    for (int l = col == 0 ? 0 : Wo - col; l < L; l += Wo) z2 |= 1u << l;
#pragma GCC unroll 6
    for (int k = 0; k < MR / 4; ++k) {
      ivec qq[4];
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        const int m = 4 * k + i;
        const ivec s = V8::finish(acc[m][v]);
        qq[i] = V8::quant(V8::fmadd(V8::cvt(s), V8::set1(a.s[m]), V8::set1(a.b[m])), hs);
        if (a.pacc[m]) {
          V8::storei(reinterpret_cast<uint32_t*>(a.pacc[m] + q), s, nvalid);
          probe_bytes(a.pqh[m] + q, qq[i], nvalid);
        }
      }
      const ivec d = V8::combine(qq[0], qq[1], qq[2], qq[3]);
      uint32_t* hd = a.hd[k];
      V8::storei(hd + hps + q, d, nvalid);
      V8::storei(hd + q + 1, V8::zero_lanes(d, z0), nvalid);
      V8::storei(hd + 2 * hps + q - 1, V8::zero_lanes(d, z2), nvalid);
    }
  }
}

typedef void (*T1Fn)(const T1Args&);

template <int MR, int NR>
struct Fill1N {
  static void run(T1Fn (*tab)[C1_MRMAX / 4 + 1][C1_NRMAX + 1]) {
    tab[0][MR / 4][NR] = &tile1<MR, NR, 1>;
    tab[1][MR / 4][NR] = &tile1<MR, NR, 2>;
    Fill1N<MR, NR - 1>::run(tab);
  }
};
template <int MR>
struct Fill1N<MR, 0> {
  static void run(T1Fn (*)[C1_MRMAX / 4 + 1][C1_NRMAX + 1]) {}
};
template <int MR>
struct Fill1M {
  static void run(T1Fn (*tab)[C1_MRMAX / 4 + 1][C1_NRMAX + 1]) {
    Fill1N<MR, c1_nrmax(MR)>::run(tab);
    Fill1M<MR - 4>::run(tab);
  }
};
template <>
struct Fill1M<0> {
  static void run(T1Fn (*)[C1_MRMAX / 4 + 1][C1_NRMAX + 1]) {}
};

struct Table1 {
  T1Fn fn[2][C1_MRMAX / 4 + 1][C1_NRMAX + 1];  // [stride - 1][MR / 4][NR]
  Table1() {
    memset(fn, 0, sizeof(fn));
    Fill1M<C1_MRMAX>::run(fn);
  }
};
static const Table1 table1;

// Zero the padding rows of h that no pixel writes (top / bottom rows and two corner cells) for the task's quads.
static void zero_h_pads(const Plan8& p, const Task1& t, uint32_t* hn) {
  const int Wo = p.Wo;
  const size_t hps = p.h_ps;
  for (int j4 = t.j0 / 4; j4 < t.j1 / 4; ++j4) {
    uint32_t* hj = hn + (size_t)j4 * p.h_cs;
    if (t.r0 == 0) {
      for (int k = 0; k < 3; ++k) memset(hj + k * hps, 0, (size_t)Wo * 4);
      hj[Wo] = 0;  // plane 0, row 1, column 0
    }
    if (t.r1 == p.Ho) {
      for (int k = 0; k < 3; ++k) memset(hj + k * hps + (size_t)(p.Ho + 1) * Wo, 0, (size_t)Wo * 4);
      hj[2 * hps + Wo + p.P - 1] = 0;  // plane 2, row Ho, last column
    }
  }
}

static void conv1_impl(const Plan8& p, const Task1& t, const uint32_t* prep, const Prep8& g) {
  const int Wo = p.Wo, S = p.S, n = t.n;
  const int qb = t.r0 * Wo, qe = t.r1 * Wo;
  const int nv = (qe - qb + L - 1) / L;
  uint32_t* hn = p.h + p.hoff[n];
  zero_h_pads(p, t, hn);
  const int M = t.j1 - t.j0;
  if (M <= 0) return;
  const int NR = pick_nr8(M, nv, 9 * p.w.G, C1_NRMAX, C1_MRMAX, &c1_nrmax_fn);

  T1Args a;
  a.ps = (ptrdiff_t)g.ps;
  a.rs = Wo;
  a.cs = g.cs;
  a.G = p.w.G;
  a.qend = qe;
  a.Wo = Wo;
  a.hps = p.h_ps;
  a.h_scale = p.w.h_scale;
  const int32_t* act = p.act + (size_t)n * p.AC;
  const size_t K = (size_t)p.w.G * 9;
  // Channel tiles outside, pixel groups of NR vectors inside (then the group of the rest): a tile's weight rows
  // stay in L1 across the band.
  const int nfull = nv / NR;
  for (int part = 0; part < 2; ++part) {
    const int nr = part == 0 ? NR : nv - nfull * NR;
    const int g0 = part == 0 ? 0 : nfull, g1 = part == 0 ? nfull : nfull + 1;
    if (nr == 0 || g0 == g1) continue;
    const int mrmax = mrmax_for(nr, C1_MRMAX, &c1_nrmax_fn);
    const int quads = M / 4, nt = (M + mrmax - 1) / mrmax;
    int j = t.j0;
    for (int k = 0, done = 0; k < nt; ++k) {
      const int mq = (quads - done + (nt - k) - 1) / (nt - k);
      const int mr = 4 * mq;
      for (int m = 0; m < mr; ++m) {
        const int c = act[j + m];
        a.rows[m] = p.w.w1 + (size_t)c * K;
        a.s[m] = p.w.s1[c];
        a.b[m] = p.w.b1[c];
        const bool probe = p.probe && p.probe->acc1 && c < p.w.C;
        a.pacc[m] = probe ? p.probe->acc1 + ((size_t)n * p.w.C + c) * p.P : nullptr;
        a.pqh[m] = probe ? p.probe->qh + ((size_t)n * p.w.C + c) * p.P : nullptr;
      }
      for (int i = 0; i < mq; ++i) a.hd[i] = hn + (size_t)(j / 4 + i) * p.h_cs + Wo;
      const T1Fn fn = table1.fn[S - 1][mq][nr];
      for (int gi = g0; gi < g1; ++gi) {
        a.x = prep + (size_t)gi * NR * L;
        a.q0 = qb + gi * NR * L;
        fn(a);
      }
      j += mr;
      done += mq;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// conv2: y[o] = relu(fmaf(acc2, s2[o], b2[o]) + res[o]); acc2 sums over the sample's active quads and the 9 taps.
// With a projection shortcut, res[o] = fmaf(accs, ss[o], bs[o]) is computed first by the same tile (G K steps over
// xs), stored into y, and read back by the epilogue.
struct T2Args {
  const int32_t* const* qw;  // conv2 weights of the sample's quads ([9][CoutP] words each)
  int nq;
  int co0, CoutP;
  const uint32_t* h;  // h of the sample's quad 0, plane 0, at the tile's first pixel
  size_t hcs;
  ptrdiff_t hps, rs;
  const int32_t* ws;  // shortcut: wsq + co0, or null
  const uint32_t* xs;  // shortcut: the sample's xs at the tile's first pixel
  int G;
  size_t P;
  float* y;           // the sample's output channel co0 at the tile's first pixel
  const float* res;   // the sample's residual there, or null
  const float *s2, *b2, *ss, *bs;  // at co0
  int nout;           // output channels to store (Cout - co0, at most MR)
  int q0, qend;
  int32_t* pacc2;     // probe: the sample's acc2 / accs at channel co0, the tile's first pixel; or null
  int32_t* paccs;
};

template <int MR, int NR>
static inline __attribute__((always_inline)) void kstep2(accv (&acc)[MR][NR], const uint32_t* bp,
                                                        const int32_t* w) {
  xvec xv[NR];
#pragma GCC unroll 8
  for (int v = 0; v < NR; ++v) xv[v] = V8::loadx(bp + v * L);
#pragma GCC unroll 24
  for (int m = 0; m < MR; ++m) {
    const wvec wv = V8::wprep(w[m]);
#pragma GCC unroll 8
    for (int v = 0; v < NR; ++v) acc[m][v] = V8::dot(acc[m][v], xv[v], wv);
  }
}

template <int MR, int NR>
static void tile2(const T2Args& a) {
  accv acc[MR][NR];
  const size_t P = a.P;
  if (a.ws) {
#pragma GCC unroll 24
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
      for (int v = 0; v < NR; ++v) acc[m][v] = V8::azero();
    const uint32_t* xb = a.xs;
    const int32_t* w = a.ws;
    for (int g = 0; g < a.G; ++g, xb += P, w += a.CoutP) kstep2<MR, NR>(acc, xb, w);
#pragma GCC unroll 24
    for (int m = 0; m < MR; ++m) {
      if (m >= a.nout) break;
      const fvec sc = V8::set1(a.ss[m]), bi = V8::set1(a.bs[m]);
      float* yy = a.y + (size_t)m * P;
#pragma GCC unroll 8
      for (int v = 0; v < NR; ++v) {
        const int q = v * L, nvalid = imin(L, a.qend - a.q0 - q);
        const ivec s = V8::finish(acc[m][v]);
        if (a.paccs) V8::storei(reinterpret_cast<uint32_t*>(a.paccs + (size_t)m * P + q), s, nvalid);
        V8::storef(yy + q, V8::fmadd(V8::cvt(s), sc, bi), nvalid);
      }
    }
  }
#pragma GCC unroll 24
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NR; ++v) acc[m][v] = V8::azero();
  const ptrdiff_t hps = a.hps, rs = a.rs;
  const uint32_t* hb = a.h;
  for (int qi = 0; qi < a.nq; ++qi, hb += a.hcs) {
    const int32_t* wq = a.qw[qi] + a.co0;
    if (qi + 1 < a.nq) {
      // The quads' weights are scattered (built per call or picked from the dense packing): fetch the next one's.
      const int32_t* nx = a.qw[qi + 1] + a.co0;
      for (int t = 0; t < 9; ++t) V8::prefetch(nx + (size_t)t * a.CoutP);
    }
    const uint32_t* p0 = hb;
    const uint32_t* p1 = hb + hps;
    const uint32_t* p2 = hb + 2 * hps;
    const ptrdiff_t cp = a.CoutP;
    kstep2<MR, NR>(acc, p0, wq);
    kstep2<MR, NR>(acc, p1, wq + cp);
    kstep2<MR, NR>(acc, p2, wq + 2 * cp);
    kstep2<MR, NR>(acc, p0 + rs, wq + 3 * cp);
    kstep2<MR, NR>(acc, p1 + rs, wq + 4 * cp);
    kstep2<MR, NR>(acc, p2 + rs, wq + 5 * cp);
    kstep2<MR, NR>(acc, p0 + 2 * rs, wq + 6 * cp);
    kstep2<MR, NR>(acc, p1 + 2 * rs, wq + 7 * cp);
    kstep2<MR, NR>(acc, p2 + 2 * rs, wq + 8 * cp);
  }
#pragma GCC unroll 24
  for (int m = 0; m < MR; ++m) {
    if (m >= a.nout) break;
    const fvec sc = V8::set1(a.s2[m]), bi = V8::set1(a.b2[m]);
    float* yy = a.y + (size_t)m * P;
    const float* rr = a.res ? a.res + (size_t)m * P : yy;
#pragma GCC unroll 8
    for (int v = 0; v < NR; ++v) {
      const int q = v * L, nvalid = imin(L, a.qend - a.q0 - q);
      const ivec s = V8::finish(acc[m][v]);
      if (a.pacc2) V8::storei(reinterpret_cast<uint32_t*>(a.pacc2 + (size_t)m * P + q), s, nvalid);
      const fvec f = V8::fmadd(V8::cvt(s), sc, bi);
      V8::storef(yy + q, V8::relu(V8::add(f, V8::loadf(rr + q, nvalid))), nvalid);
    }
  }
}

typedef void (*T2Fn)(const T2Args&);

template <int MR, int NR>
struct Fill2N {
  static void run(T2Fn (*tab)[C2_NRMAX + 1]) {
    tab[MR / 4][NR] = &tile2<MR, NR>;
    Fill2N<MR, NR - 1>::run(tab);
  }
};
template <int MR>
struct Fill2N<MR, 0> {
  static void run(T2Fn (*)[C2_NRMAX + 1]) {}
};
template <int MR>
struct Fill2M {
  static void run(T2Fn (*tab)[C2_NRMAX + 1]) {
    Fill2N<MR, c2_nrmax(MR)>::run(tab);
    Fill2M<MR - 4>::run(tab);
  }
};
template <>
struct Fill2M<0> {
  static void run(T2Fn (*)[C2_NRMAX + 1]) {}
};

struct Table2 {
  T2Fn fn[C2_MRMAX / 4 + 1][C2_NRMAX + 1];  // [MR / 4][NR]
  Table2() {
    memset(fn, 0, sizeof(fn));
    Fill2M<C2_MRMAX>::run(fn);
  }
};
static const Table2 table2;

static void conv2_impl(const Plan8& p, const Task2& t) {
  const int Wo = p.Wo, n = t.n, Cout = p.w.Cout;
  const size_t P = (size_t)p.P;
  const int qb = t.r0 * Wo, qe = t.r1 * Wo;
  const int co1 = imin(t.co1, Cout);
  float* yn = p.y + (size_t)n * Cout * P;
  if (__atomic_load_n(&p.bad[n], __ATOMIC_RELAXED)) {
    // x held a NaN or an infinity: no output of this sample is trustworthy.
    const float nan = __builtin_nanf("");
    for (int co = t.co0; co < co1; ++co)
      for (int q = qb; q < qe; ++q) yn[(size_t)co * P + q] = nan;
    return;
  }
  const int nv = (qe - qb + L - 1) / L;
  const int M = t.co1 - t.co0;
  const int nq = (p.nact[n] + 3) / 4;
  const bool sc = p.w.wsq != nullptr;
  const int NR = pick_nr8(M, nv, 9 * nq + (sc ? p.w.G : 0), C2_NRMAX, C2_MRMAX, &c2_nrmax_fn);

  T2Args a;
  a.qw = p.qw + (size_t)n * p.QC;
  a.nq = nq;
  a.CoutP = p.w.CoutP;
  a.hcs = p.h_cs;
  a.hps = (ptrdiff_t)p.h_ps;
  a.rs = Wo;
  a.G = p.w.G;
  a.P = P;
  a.qend = qe;
  const uint32_t* hn = p.h + p.hoff[n];
  const uint32_t* xsn = sc ? p.xs + (size_t)n * p.w.G * P : nullptr;
  const float* resn = p.res ? p.res + (size_t)n * Cout * P : nullptr;
  int32_t* pa2 = p.probe && p.probe->acc2 ? p.probe->acc2 + (size_t)n * Cout * P : nullptr;
  int32_t* pas = p.probe && p.probe->accs && sc ? p.probe->accs + (size_t)n * Cout * P : nullptr;
  const int nfull = nv / NR;
  for (int part = 0; part < 2; ++part) {
    const int nr = part == 0 ? NR : nv - nfull * NR;
    const int g0 = part == 0 ? 0 : nfull, g1 = part == 0 ? nfull : nfull + 1;
    if (nr == 0 || g0 == g1) continue;
    const int mrmax = mrmax_for(nr, C2_MRMAX, &c2_nrmax_fn);
    for (int co = t.co0; co < t.co1;) {
      const int mr = imin(mrmax, t.co1 - co);
      if (co >= Cout) break;
      a.co0 = co;
      a.nout = imin(mr, Cout - co);
      a.ws = sc ? p.w.wsq + co : nullptr;
      a.s2 = p.w.s2 + co;
      a.b2 = p.w.b2 + co;
      a.ss = p.w.ss + co;
      a.bs = p.w.bs + co;
      const T2Fn fn = table2.fn[mr / 4][nr];
      for (int gi = g0; gi < g1; ++gi) {
        const int q0 = qb + gi * NR * L;
        a.q0 = q0;
        a.h = hn + q0;
        a.xs = xsn ? xsn + q0 : nullptr;
        a.y = yn + (size_t)co * P + q0;
        a.res = resn ? resn + (size_t)co * P + q0 : nullptr;
        a.pacc2 = pa2 ? pa2 + (size_t)co * P + q0 : nullptr;
        a.paccs = pas ? pas + (size_t)co * P + q0 : nullptr;
        fn(a);
      }
      co += mr;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// One quad of conv2's weights: word i = bytes r0[i], r1[i], r2[i], r3[i] (low to high).
static void interleave_impl(const int8_t* r0, const int8_t* r1, const int8_t* r2, const int8_t* r3, size_t n,
                            int32_t* out) {
  for (size_t i = 0; i < n; ++i)
    out[i] = (int32_t)((uint32_t)(uint8_t)r0[i] | ((uint32_t)(uint8_t)r1[i] << 8) |
                       ((uint32_t)(uint8_t)r2[i] << 16) | ((uint32_t)(uint8_t)r3[i] << 24));
}
