// The portable path's int8 convolutions as dot products over contiguous K (included by int8_isa_portable.cpp after
// int8_impl.h, with GATEKIT_INT8_DOT_KERNELS).
//
// Compilers turn a reduction sum += (int)a[k] * (int)b[k] over int8 arrays into the target's dot-product
// instructions (aarch64 with the dot-product extension: sdot, 16 products an instruction; with i8mm, usdot), but not
// the lane-wise 4-byte dots of the tile kernels.  So here each task first lays its band out as rows of K bytes per
// output pixel (im2col: conv1's rows of 9 taps x Cin, in W1's [G][9][4] order; conv2's of the sample's active
// quads x 9 taps, the weights gathered to the same order per output channel), and a 4 x 4 block of output values is
// 16 reductions over one K loop.  Activations are stored as x - 128 (signed), so that plain sdot applies where i8mm
// (usdot) is missing; the sum of each weight row times 128 puts the offset back, exactly.
//
// Nothing here may use std:: templates (see plan.h).

constexpr uint32_t kSignFlip = 0x80808080u;  // u8 x -> s8 x - 128, in each byte of a word

// out[i][j] = sum_k a[i][k] * b[j][k] for a 4 x 4 block (K bytes each).
static inline void dot4x4(const int8_t* const (&a)[4], const int8_t* const (&b)[4], int K, int32_t (&out)[4][4]) {
  const int8_t *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3];
  const int8_t *b0 = b[0], *b1 = b[1], *b2 = b[2], *b3 = b[3];
  int32_t s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
  int32_t s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
  for (int k = 0; k < K; ++k) {
    const int32_t x0 = a0[k], x1 = a1[k], x2 = a2[k], x3 = a3[k];
    const int32_t w0 = b0[k], w1 = b1[k], w2 = b2[k], w3 = b3[k];
    s00 += x0 * w0, s01 += x0 * w1, s02 += x0 * w2, s03 += x0 * w3;
    s10 += x1 * w0, s11 += x1 * w1, s12 += x1 * w2, s13 += x1 * w3;
    s20 += x2 * w0, s21 += x2 * w1, s22 += x2 * w2, s23 += x2 * w3;
    s30 += x3 * w0, s31 += x3 * w1, s32 += x3 * w2, s33 += x3 * w3;
  }
  out[0][0] = s00, out[0][1] = s01, out[0][2] = s02, out[0][3] = s03;
  out[1][0] = s10, out[1][1] = s11, out[1][2] = s12, out[1][3] = s13;
  out[2][0] = s20, out[2][1] = s21, out[2][2] = s22, out[2][3] = s23;
  out[3][0] = s30, out[3][1] = s31, out[3][2] = s32, out[3][3] = s33;
}

// The contract's quantization of one value (V8::quant on one lane).
static inline uint8_t quant1(float v, float s, float inv) {
  return (uint8_t)V8::lane(V8::quant(V8::set1(v), V8::set1(s), V8::set1(inv)), 0);
}

static inline size_t round4(size_t v) { return (v + 3) & ~(size_t)3; }

// conv1: rows of 36 G bytes for the band's pixels (rounded up to 4, the extra rows zero).
static size_t work_bytes1_dot(const Plan8& p, const Task1& t) {
  return round4((size_t)(t.r1 - t.r0) * p.Wo) * 36 * (size_t)p.w.G + 64;
}

static void conv1_impl(const Plan8& p, const Task1& t, const uint32_t* prep, const Prep8& g, void* work) {
  const int Wo = p.Wo, S = p.S, n = t.n, G = p.w.G, C = p.w.C;
  uint32_t* hn = p.h + p.hoff[n];
  zero_h_pads(p, t, hn);
  if (t.j1 <= t.j0) return;
  const int qb = t.r0 * Wo, npx = (t.r1 - t.r0) * Wo, np4 = (int)round4(npx);
  const int K = 36 * G, KW = 9 * G;  // bytes, words per row
  // im2col: row i, word g * 9 + tap = prep word of input quad g at tap (ky, kx), sign-flipped
  uint32_t* col = static_cast<uint32_t*>(work);
  ptrdiff_t off[9];
  for (int ky = 0; ky < 3; ++ky)
    for (int kx = 0; kx < 3; ++kx)
      off[3 * ky + kx] = S == 1 ? (ptrdiff_t)kx * g.ps + (ptrdiff_t)ky * Wo
                                : (ptrdiff_t)(2 * kx + (ky & 1)) * g.ps + (ptrdiff_t)(ky >> 1) * Wo;
  for (int i = 0; i < npx; ++i) {
    uint32_t* row = col + (size_t)i * KW;
    for (int gq = 0; gq < G; ++gq) {
      const uint32_t* b = prep + (size_t)gq * g.cs + i;
      for (int k = 0; k < 9; ++k) row[gq * 9 + k] = b[off[k]] ^ kSignFlip;
    }
  }
  memset(col + (size_t)npx * KW, 0, (size_t)(np4 - npx) * K);

  const int32_t* act = p.act + (size_t)n * p.AC;
  const size_t hps = p.h_ps;
  const float hs = p.w.h_scale, hinv = p.w.h_inv;
  for (int j = t.j0; j < t.j1; j += 4) {
    const int8_t* wr[4];
    int32_t comp[4];
    int c[4];
    for (int i = 0; i < 4; ++i) {
      c[i] = act[j + i];
      wr[i] = reinterpret_cast<const int8_t*>(p.w.w1 + (size_t)c[i] * KW);
      comp[i] = 128 * p.w.w1sum[c[i]];
    }
    uint32_t* hd = hn + (size_t)(j / 4) * p.h_cs + Wo;  // the quad's h: plane 0, row 1
    for (int i0 = 0; i0 < np4; i0 += 4) {
      const int8_t* xr[4];
      for (int i = 0; i < 4; ++i) xr[i] = reinterpret_cast<const int8_t*>(col + (size_t)(i0 + i) * KW);
      int32_t d[4][4];
      dot4x4(xr, wr, K, d);
      for (int i = 0; i < 4 && i0 + i < npx; ++i) {
        const int q = qb + i0 + i, x = q % Wo;
        uint32_t word = 0;
        for (int m = 0; m < 4; ++m) {
          const int32_t acc = d[i][m] + comp[m];
          const uint8_t qh = quant1(__builtin_fmaf((float)acc, p.w.s1[c[m]], p.w.b1[c[m]]), hs, hinv);
          word |= (uint32_t)qh << (8 * m);
          if (p.probe && p.probe->acc1 && c[m] < C) {
            p.probe->acc1[((size_t)n * C + c[m]) * p.P + q] = acc;
            p.probe->qh[((size_t)n * C + c[m]) * p.P + q] = qh;
          }
        }
        hd[hps + q] = word;
        hd[q + 1] = x == Wo - 1 ? 0 : word;
        hd[2 * hps + q - 1] = x == 0 ? 0 : word;
      }
    }
  }
}

// conv2: rows of 36 nq bytes for the band's pixels (rounded up to 4) and for the task's output channels, and the
// channels' offset corrections.
static size_t work_bytes2_dot(const Plan8& p, const Task2& t) {
  const size_t K = 36 * (size_t)((p.nact[t.n] + 3) / 4);
  return (round4((size_t)(t.r1 - t.r0) * p.Wo) + (size_t)(t.co1 - t.co0)) * K + 4 * (size_t)(t.co1 - t.co0) + 128;
}

static void conv2_impl(const Plan8& p, const Task2& t, void* work) {
  const int Wo = p.Wo, n = t.n, Cout = p.w.Cout, G = p.w.G;
  const size_t P = (size_t)p.P;
  const int qb = t.r0 * Wo, qe = t.r1 * Wo, npx = qe - qb, np4 = (int)round4(npx);
  const int co1 = imin(t.co1, Cout), M = t.co1 - t.co0;
  float* yn = p.y + (size_t)n * Cout * P;
  if (__atomic_load_n(&p.bad[n], __ATOMIC_RELAXED)) {
    const float nan = __builtin_nanf("");
    for (int co = t.co0; co < co1; ++co)
      for (int q = qb; q < qe; ++q) yn[(size_t)co * P + q] = nan;
    return;
  }
  const int nq = (p.nact[n] + 3) / 4, K = 36 * nq, KW = 9 * nq;
  uint32_t* hcol = static_cast<uint32_t*>(work);
  uint32_t* wcol = hcol + (size_t)np4 * KW;
  int32_t* comp = reinterpret_cast<int32_t*>(wcol + (size_t)M * KW);
  // im2col of h: row i, word q * 9 + tap = h word of quad q at tap (ky, kx), sign-flipped
  const uint32_t* hn = p.h + p.hoff[n];
  for (int i = 0; i < npx; ++i) {
    uint32_t* row = hcol + (size_t)i * KW;
    for (int qi = 0; qi < nq; ++qi) {
      const uint32_t* b = hn + (size_t)qi * p.h_cs + qb + i;
      for (int ky = 0; ky < 3; ++ky)
        for (int kx = 0; kx < 3; ++kx) row[qi * 9 + 3 * ky + kx] = b[kx * p.h_ps + (size_t)ky * Wo] ^ kSignFlip;
    }
  }
  memset(hcol + (size_t)npx * KW, 0, (size_t)(np4 - npx) * K);
  // the output channels' weights in the same order, and 128 times their sums
  const int32_t* const* qw = p.qw + (size_t)n * p.QC;
  for (int m = 0; m < M; ++m) {
    uint32_t* row = wcol + (size_t)m * KW;
    for (int qi = 0; qi < nq; ++qi) memcpy(row + qi * 9, qw[qi] + (size_t)(t.co0 + m) * 9, 36);
    int32_t sum = 0;
    const int8_t* b = reinterpret_cast<const int8_t*>(row);
    for (int k = 0; k < K; ++k) sum += b[k];
    comp[m] = 128 * sum;
  }
  const uint32_t* xsn = p.w.wsq ? p.xs + (size_t)n * G * P : nullptr;
  const float* resn = p.res ? p.res + (size_t)n * Cout * P : nullptr;
  int32_t* pa2 = p.probe && p.probe->acc2 ? p.probe->acc2 + (size_t)n * Cout * P : nullptr;
  int32_t* pas = p.probe && p.probe->accs && xsn ? p.probe->accs + (size_t)n * Cout * P : nullptr;
  for (int m0 = 0; m0 < M; m0 += 4) {
    const int8_t* wr[4];
    for (int m = 0; m < 4; ++m) wr[m] = reinterpret_cast<const int8_t*>(wcol + (size_t)(m0 + m) * KW);
    for (int i0 = 0; i0 < np4; i0 += 4) {
      const int8_t* hr[4];
      for (int i = 0; i < 4; ++i) hr[i] = reinterpret_cast<const int8_t*>(hcol + (size_t)(i0 + i) * KW);
      int32_t d[4][4];
      dot4x4(hr, wr, K, d);
      for (int m = 0; m < 4; ++m) {
        const int o = t.co0 + m0 + m;
        if (o >= co1) break;
        for (int i = 0; i < 4 && i0 + i < npx; ++i) {
          const int q = qb + i0 + i;
          const size_t yi = (size_t)o * P + q;
          float r;
          if (xsn) {
            int32_t accs = 0;
            for (int gq = 0; gq < G; ++gq) {
              const uint32_t xw = xsn[(size_t)gq * P + q], ww = (uint32_t)p.w.wsq[(size_t)gq * p.w.CoutP + o];
              for (int k = 0; k < 4; ++k) accs += (int32_t)((xw >> (8 * k)) & 0xFF) * (int32_t)(int8_t)(ww >> (8 * k));
            }
            if (pas) pas[yi] = accs;
            r = __builtin_fmaf((float)accs, p.w.ss[o], p.w.bs[o]);
          } else {
            r = resn[yi];
          }
          const int32_t acc = d[i][m] + comp[m0 + m];
          if (pa2) pa2[yi] = acc;
          const float v = __builtin_fmaf((float)acc, p.w.s2[o], p.w.b2[o]) + r;
          yn[yi] = 0.0f > v ? 0.0f : v;
        }
      }
    }
  }
}

static size_t (*const work_bytes1_impl)(const Plan8&, const Task1&) = &work_bytes1_dot;
static size_t (*const work_bytes2_impl)(const Plan8&, const Task2&) = &work_bytes2_dot;
