// gatekit GatedBlock kernel in int8 (gatekit::GatedBlockInt8 and its gate / shortcut forms): no runtime dependency.
//
// fp32 in and out, quantization inside (native/README.md, "int8 ops"); round = round half to even, clamp = [0, 255]:
//
//   qx       = clamp(round(x / x_scale))                                  u8, padding taps read 0
//   acc1[c]  = sum_{cin, taps} qx * W1[c]                                  int32, active c only
//   qh[c]    = clamp(round(fmaf((float)acc1[c], x_scale * w1_scale[c], b1[c]) / h_scale)), 0 for inactive c
//   acc2[o]  = sum_{active c, taps} qh * W2[o]                             int32
//   res[o]   = residual, or fmaf((float)accs[o], x_scale * ws_scale[o], bs[o]),
//              accs[o] = sum_cin qx[:, ::stride, ::stride] * Ws[o]         int32
//   y[o]     = max(fmaf((float)acc2[o], h_scale * w2_scale[o], b2[o]) + res[o], 0)
//
// A sample whose x holds a NaN or an infinity gets NaN in every output.  The weights are packed once
// (pack_block_int8); every call computes conv1 for the active channels of each sample only and conv2 over them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "gated_block.h"

namespace gatekit {

struct PackedBlockInt8;

// The block's constants.  w1 int8 [C][Cin][3][3], w1_scale [C], b1 [C]; w2 int8 [Cout][C][3][3], w2_scale [Cout],
// b2 [Cout]; optionally the projection shortcut ws int8 [Cout][Cin] (1x1 conv with the block's stride), ws_scale
// [Cout], bs [Cout] (the block then computes its residual itself; BlockIO::residual unused).  Scales are float32,
// per output channel, symmetric; x_scale and h_scale the activations' (> 0).
struct Int8BlockWeights {
  const int8_t* w1 = nullptr;
  const float* w1_scale = nullptr;
  const float* b1 = nullptr;
  const int8_t* w2 = nullptr;
  const float* w2_scale = nullptr;
  const float* b2 = nullptr;
  const int8_t* ws = nullptr;
  const float* ws_scale = nullptr;
  const float* bs = nullptr;
  float x_scale = 0.0f, h_scale = 0.0f;
  int64_t c = 0, cin = 0, cout = 0;
};

// Packs the weights (copies them; the caller's buffers may go away).  Throws std::invalid_argument with one line on
// bad sizes or scales (a scale or bias that is not finite, x_scale or h_scale not > 0) and std::bad_alloc.
std::shared_ptr<const PackedBlockInt8> pack_block_int8(const Int8BlockWeights& w);

BlockDims block_dims(const PackedBlockInt8& pb);

// What the integer path computed, for the self-check: any pointer may be null.  acc1 [n][C][ho][wo] and qh
// [n][C][ho][wo] are written for the active channels only, acc2 [n][Cout][ho][wo] and accs [n][Cout][ho][wo]
// (the shortcut's accumulators) everywhere (not for a sample with a non-finite x).
struct Int8Probe {
  int32_t* acc1 = nullptr;
  uint8_t* qh = nullptr;
  int32_t* acc2 = nullptr;
  int32_t* accs = nullptr;
};

// Runs one block: x, mask (or gate), residual (unless packed with a shortcut), y, n, h, w, stride and threads of
// io as for run_block (conv1_form and conv2_form are not used); a mask value other than 0 turns a channel on.
// `isa` names the instruction-set path for this call (null: the process's choice, int8_isa_selected()); `probe`
// receives the integer intermediates.  Returns "" or a one-line error (nothing throws).
std::string run_block_int8(const PackedBlockInt8& pb, const BlockIO& io, ParallelForFn parallel_for, void* pf_ctx,
                           const char* isa = nullptr, const Int8Probe* probe = nullptr);

// The int8 kernel's instruction-set paths: the ones compiled in ("avx512vnni,avxvnni,avx2,portable"), whether this
// CPU runs one, and the one in use: the best the CPU runs, or the one GATEKIT_OPS_ISA names (avx512vnni | avxvnni |
// avx2 | portable; avx512 means avx512vnni) when the CPU runs it.  Chosen once per process.
const char* int8_isa_compiled();
bool int8_isa_supported(const char* name);
const char* int8_isa_selected();
bool int8_isa_request_honoured();

// JSON fields of the int8 kernel for the libraries' build info (without braces): int8 paths compiled and in use.
std::string build_info_int8_json();

}  // namespace gatekit
