// Plain-data structures shared by the dispatcher (gated_block.cpp) and the per-ISA kernel files.
//
// This header must stay free of std:: templates: the ISA files are compiled with different
// -m flags, and an inline template instantiated in two of them would be merged by the linker
// into one copy, possibly compiled for a wider ISA than the CPU running it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace gatekit {
namespace detail {

// A view of the weights packed once at load (see gated_block.cpp, pack_block).
// Output channels per group of the row tiles' W2 packing (PackedView::w2r): a row tile's up to 4 vectors of
// 16 channels, so that one inner channel's weights for the tile are one contiguous run of 9 * kRowGroup floats
// (the prefetchers' unit) instead of 4 runs a whole W2 block apart.
constexpr int kRowGroup = 64;

struct PackedView {
  int C;      // inner (gated) channels
  int Cin;    // input channels
  int Cout;   // output channels
  int Cout8;  // Cout rounded up to a multiple of 8
  int wb;     // output channels per block of the packed W2 and Ws: IsaOps::w2_block of the path that packed them
  int CoutB;  // Cout rounded up to a multiple of wb
  const float* w1;   // [C][Cin*9]      : conv1, OIHW unchanged; one contiguous row per inner channel
  const float* w1d;  // [C][9][Cin]      : conv1 for the channel-dot form (Plan::conv1_dot), or null
  const float* b1;   // [C]
  const float* w2p;  // [CoutB/wb][C][9][wb]: conv2; an inner channel is one contiguous block of 9*wb floats
  const float* w2r;  // [CoutR/kRowGroup][C][9][kRowGroup]: conv2 for the row tiles (paths with channel tiles), or
                     // null; a row tile's output-channel vectors of one inner channel and tap lie side by side
  const float* b2;   // [CoutB] (zero padded; with a shortcut, b2 + bs)
  const float* wsp;  // [CoutB/wb][Cin][wb]: the projection shortcut (1x1 conv), or null (residual is an input)
};

// Everything one call needs; built by the dispatcher, read-only for the tasks.
struct Plan {
  PackedView w;
  int N, H, W, S, Ho, Wo, P;  // P = Ho*Wo
  const float* x;    // [N][Cin][H][W]
  const float* res;  // [N][Cout][Ho][Wo], or null with a projection shortcut (w.wsp)
  float* y;          // [N][Cout][Ho][Wo]
  // Active inner channels of sample n: act[n*C + j] for j < nact[n] (ascending), mask value mval[n*C + j],
  // and the conv2 weight offset aoff2[n*C + j] = act * 9 * w.wb.
  const int32_t* act;
  const int32_t* nact;
  const float* mval;
  const int32_t* aoff2;
  // h = mask * relu(conv1(x) + b1) for the active channels only.  Per sample n (offset hoff[n] floats) and
  // active index j (stride h_cs): three planes of (Ho+2) x Wo floats (stride h_ps), the zero-padded map
  // shifted by kx = 0, 1, 2 columns, so that every 3x3 tap of conv2 reads contiguous pixels.
  float* h;
  const size_t* hoff;
  size_t h_cs;
  size_t h_ps;
  // With a projection shortcut: x at the shortcut's sample points, [N][Cin][P] (x[2r][2c] at stride 2),
  // copied from the prep planes by the conv1 pass (tasks with j0 == 0) and read by conv2 as Cin more K steps.
  float* xs;
  // conv2's tile form: 0 = pixel vectors (tile2), 1 = output-channel vectors (tile2c; paths with
  // IsaOps::channel_tiles only), 2 = pixel vectors but for a short last row band (BlockIO::conv2_form 3), which
  // takes output-channel vectors.  Each Task2 carries its own form.
  int conv2_channels;
  // Blocks of w.wb output channels in conv2's widest output-channel tile for this map (task channel ranges are
  // whole tiles): IsaOps::channel_tile_blocks.
  int conv2_tile_blocks;
  // conv1's form: 0 = pixel vectors over the prep planes (tile1), 1 = channel dots (tile1d; paths with
  // IsaOps::conv1_dot and w.w1d only): x copied channels-last per band, one output row per tile, each output
  // value a dot product over the input channels in vector lanes, the taps that read padding skipped.
  int conv1_dot;
};

// conv1 work item: sample n, output rows [r0, r1), active channels [j0, j1) (may be empty: a sample with no
// active channel still has its prep planes built for the shortcut's xs).
struct Task1 {
  int n, r0, r1, j0, j1;
};
// conv2 work item: sample n, output rows [r0, r1), output channels [co0, co1) (co0 a multiple of 8), in pixel
// vectors (channels == 0) or output-channel vectors (channels == 1: co0, co1 multiples of w.wb).
struct Task2 {
  int n, r0, r1, co0, co1, channels;
};

// Geometry of the per-band copy of x that conv1 reads ("prep planes"): for each input channel, 3*S planes
// of R rows x Wo columns; plane kx*S + py holds padded-x rows 2*r+py (stride 2) or r (stride 1), columns
// S*c + kx, so that each 3x3 tap reads contiguous output pixels.
struct PrepGeom {
  int R;       // rows per plane
  size_t ps;   // plane stride (floats)
  size_t cs;   // per-input-channel stride (floats)
  size_t total;  // floats to allocate (with read slack)
};

static inline PrepGeom prep_geom(const Plan& p, int r0, int r1) {
  PrepGeom g;
  if (p.conv1_dot) {
    // Channels-last copy of the band's padded input rows S*r0 .. S*(r1-1)+2: [R][W+2][Cin], row stride ps.
    g.R = p.S * (r1 - r0 - 1) + 3;
    g.ps = (size_t)(p.W + 2) * (size_t)p.w.Cin;
    g.cs = 0;
    g.total = (size_t)g.R * g.ps + 128;
    return g;
  }
  g.R = (r1 - r0) + (p.S == 1 ? 2 : 1);
  g.ps = ((size_t)g.R * (size_t)p.Wo + 15) & ~(size_t)15;  // whole 64-byte lines: prep writes planes in vectors
  size_t planes = (size_t)(3 * p.S) * g.ps;
  g.cs = (planes + 15) & ~(size_t)15;
  g.total = (size_t)p.w.Cin * g.cs + 128;
  return g;
}

// One instruction-set implementation of the three kernels.
struct IsaOps {
  const char* name;
  int lanes;
  int w2_block;        // output channels per block of packed W2 / Ws (8, or 16 = one vector on AVX-512)
  bool channel_tiles;  // has conv2's output-channel-vector tiles (Plan::conv2_channels)
  // Blocks of output channels in the widest output-channel tile of conv2 for maps Wo wide (null without them).
  int (*channel_tile_blocks)(int wo);
  int conv1_dot_maxw;  // conv1's channel-dot form (Plan::conv1_dot) for output rows up to this wide, or 0 (none);
                       // it needs the input channels in whole vectors (PackedView::w1d)
  // Fill the prep planes of sample n, output rows [r0, r1), into dst (geometry g).
  void (*prep)(const Plan& p, int n, int r0, int r1, float* dst, const PrepGeom& g);
  // conv1 + bias + relu + mask for one task, reading prep planes built for (t.n, t.r0, t.r1).
  void (*conv1)(const Plan& p, const Task1& t, const float* prep, const PrepGeom& g);
  // conv2 over the active channels (and the shortcut's Cin channels of xs) + bias + residual + relu, to y.
  void (*conv2)(const Plan& p, const Task2& t);
  // The channel gate (channel_gate.cpp): the sum of n floats; one FC, y[0:m) = bias (or 0) + sum_k s[k] * a[k]
  // over rows a [kn][m], m a multiple of kGateChunk, rows with s[k] <= 0 skipped when skip_nonpositive.
  float (*gate_sum)(const float* p, size_t n);
  void (*gate_fc)(float* y, const float* bias, const float* a, const float* s, int kn, int m, bool skip_nonpositive);
  // Modelled cycles of conv1 / conv2's pixel tiles over M channels, nv pixel vectors and K steps with the tile
  // width the kernels pick (the tile cost model of kernel_impl.h): what the planner weighs task plans by.
  double (*conv1_cycles)(int M, int nv, int K);
  double (*conv2_cycles)(int M, int nv, int K);
};

// Output rows of gate_fc come in chunks of this many floats (8 vectors of 16 lanes).
constexpr int kGateChunk = 128;

// The instruction-set path this process uses (gated_block.cpp).
const IsaOps& selected_isa();

// Defined in isa_*.cpp (avx2/avx512 only on x86 builds, see GATEKIT_HAVE_AVX2 / GATEKIT_HAVE_AVX512).
extern const IsaOps isa_portable_ops;
extern const IsaOps isa_avx2_ops;
extern const IsaOps isa_avx512_ops;

}  // namespace detail
}  // namespace gatekit
