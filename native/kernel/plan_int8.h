// Plain-data structures shared by the int8 dispatcher (gated_block_int8.cpp) and its per-ISA kernel files.
// Free of std:: templates for the reason given in plan.h.
//
// Layouts.  Activations are u8 and travel in "quads": one 32-bit word holds 4 consecutive channels of one pixel
// (byte k = channel 4q + k), so that one vpdpbusd lane sums the 4 products of a word of activations and a word of
// weights.  Both convolutions are vectorised over L consecutive output pixels (one word per lane) and broadcast
// one weight word per output channel and K step (4 channels of one tap), as the fp32 kernels broadcast one float.
#pragma once

#include <cstddef>
#include <cstdint>

#include "gated_block_int8.h"

namespace gatekit {
namespace detail8 {

// Output channels are padded to a multiple of this (conv2's tiles step through them 4 at a time).
constexpr int kCoutStep = 8;

// The weights packed once at load (gated_block_int8.cpp, pack_block_int8).
struct View8 {
  int C, Cin, Cout;
  int G;      // input quads, ceil(Cin / 4)
  int C4;     // inner quads of the dense W2 packing, ceil(C / 4)
  int CoutP;  // Cout rounded up to a multiple of kCoutStep
  // conv1: [C + 1][G][9] words (row c: inner channel c; K step g * 9 + tap holds input channels 4g .. 4g + 3 at
  // the tap).  Row C is zero: it pads the last quad of active channels.
  const int32_t* w1;
  const float* s1;  // [C + 1] x_scale * w1_scale[c] (0 in row C)
  const float* b1;  // [C + 1]
  // conv2 for a quad of inner channels a0..a3 (K step = quad x tap): [9][CoutP] words, byte k of word (t, o) =
  // W2[o][a_k][t].  w2d: those of the aligned quads 4k .. 4k + 3 (C4 of them, a partial last one zero padded);
  // other quads are interleaved per call from w2t [C + 1][9][CoutP] bytes (row C zero).
  const int32_t* w2d;
  const int8_t* w2t;
  const float* s2;  // [CoutP] h_scale * w2_scale[o]
  const float* b2;  // [CoutP]
  const int32_t* wsq;  // the shortcut, [G][CoutP] words (input quad g, output o), or null
  const float* ss;     // [CoutP] x_scale * ws_scale[o]
  const float* bs;     // [CoutP]
  float x_scale, h_scale;
};

// Everything one call needs; built by the dispatcher, read-only for the tasks but for the buffers they fill.
struct Plan8 {
  View8 w;
  int N, H, W, S, Ho, Wo, P;
  const float* x;    // [N][Cin][H][W]
  const float* res;  // [N][Cout][Ho][Wo], or null with a shortcut
  float* y;          // [N][Cout][Ho][Wo]
  // Active inner channels of sample n: act[n * AC + j], j < nact[n], then C up to the next multiple of 4.
  const int32_t* act;
  const int32_t* nact;
  int AC;  // row stride of act and quads / QC of qw
  // conv2's weights of quad q of sample n: qw[n * QC + q] ([9][CoutP] words), a w2d quad or, where qbuild is set,
  // a scratch quad the conv1 pass interleaves (the task holding the quad's channels in the first row band).
  const int32_t** qw;
  const uint8_t* qbuild;
  int QC;
  // h = qh of the active channels of sample n: per quad (offset hoff[n] words, stride h_cs) three planes of
  // (Ho + 2) x Wo words (stride h_ps): the zero-padded map shifted by kx = 0, 1, 2 columns (plan.h, fp32 layout).
  uint32_t* h;
  const size_t* hoff;
  size_t h_cs, h_ps;
  // With a shortcut: qx at its sample points, [N][G][P] words, written by the conv1 pass (tasks with j0 == 0).
  uint32_t* xs;
  // Per sample: set (to 1) by the conv1 pass where x holds a non-finite value; conv2 then writes NaN.
  int* bad;
  const Int8Probe* probe;  // or null
};

// conv1 work item: sample n, output rows [r0, r1), active channels [j0, j1) (multiples of 4; may be empty: the
// sample's prep still runs, for the non-finite check and the shortcut's xs).
struct Task1 {
  int n, r0, r1, j0, j1;
};
// conv2 work item: sample n, output rows [r0, r1), output channels [co0, co1) (multiples of 4).
struct Task2 {
  int n, r0, r1, co0, co1;
};

// The per-band copy of qx conv1 reads: per input quad, 3 * S planes of R rows x Wo words (plane kx * S + py holds
// padded rows S * r + py, padded columns S * c + kx; see plan.h).
struct Prep8 {
  int R;
  size_t ps;     // plane stride (words)
  size_t cs;     // per-quad stride (words)
  size_t total;  // words to allocate (with read slack)
  int RQ;        // rows of the quantized band (padded rows S * r0 .. S * (r1 - 1) + 2), W + 2 words each
};

static inline Prep8 prep_geom8(const Plan8& p, int r0, int r1) {
  Prep8 g;
  g.R = (r1 - r0) + (p.S == 1 ? 2 : 1);
  g.ps = ((size_t)g.R * (size_t)p.Wo + 15) & ~(size_t)15;
  g.cs = (size_t)(3 * p.S) * g.ps;
  g.RQ = p.S * (r1 - r0 - 1) + 3;
  // planes, then one quad's quantized band rows (reused quad after quad)
  g.total = (size_t)p.w.G * g.cs + (size_t)g.RQ * (size_t)(p.W + 2) + 64;
  return g;
}

// One instruction-set implementation of the int8 kernels.
struct IsaOps8 {
  const char* name;
  int lanes;
  // Quantize the band of sample n for output rows [r0, r1) into dst (geometry g); sets p.bad[n] on a non-finite x.
  void (*prep)(const Plan8& p, int n, int r0, int r1, uint32_t* dst, const Prep8& g);
  void (*conv1)(const Plan8& p, const Task1& t, const uint32_t* prep, const Prep8& g);
  void (*conv2)(const Plan8& p, const Task2& t);
  // out[i] = bytes r0[i], r1[i], r2[i], r3[i] (low to high), i < n: one quad of conv2's weights.
  void (*interleave)(const int8_t* r0, const int8_t* r1, const int8_t* r2, const int8_t* r3, size_t n, int32_t* out);
};

extern const IsaOps8 isa8_portable_ops;
extern const IsaOps8 isa8_avx2_ops;
extern const IsaOps8 isa8_avxvnni_ops;
extern const IsaOps8 isa8_avx512vnni_ops;

}  // namespace detail8
}  // namespace gatekit
