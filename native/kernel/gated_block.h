// gatekit GatedBlock kernel library: no runtime dependency (used by the ONNX Runtime and OpenVINO wrappers).
//
//   y[n] = relu( conv3x3_pad1( mask[n] * relu(conv3x3_pad1_stride(x[n], W1) + b1), W2 ) + b2 + residual[n] )
//
// conv1 computes only the inner channels active in mask[n]; conv2 sums only over them.  The weights are
// packed once (pack_block) and read in place by every call: an inactive channel skips one contiguous row
// of W1 and one contiguous block of W2 (9 taps x 8 or 16 output channels) per block of output channels.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace gatekit {

#define GATEKIT_OPS_VERSION "0.1.0"

struct PackedBlock;
struct PackedGate;  // channel_gate.h

// Threading is supplied by the caller: parallel_for(ctx, n, fn, arg) must call fn(arg, i) exactly once
// for every i in [0, n), possibly concurrently, and return after all calls have returned.
typedef void (*TaskFn)(void* arg, size_t i);
typedef void (*ParallelForFn)(void* ctx, size_t n, TaskFn fn, void* arg);

// A parallel_for that runs the tasks one after another on the calling thread.
void serial_parallel_for(void* ctx, size_t n, TaskFn fn, void* arg);

// Packs W1 [C][Cin][3][3], b1 [C], W2 [Cout][C][3][3], b2 [Cout] (float32, OIHW, BatchNorm folded), and
// optionally a projection shortcut Ws [Cout][Cin] (1x1 conv with the block's stride), bs [Cout]: the block
// then computes its residual itself, residual = Ws x[:, ::stride, ::stride] + bs (BlockIO::residual unused).
// Throws std::invalid_argument on bad sizes and std::bad_alloc when out of memory.
std::shared_ptr<const PackedBlock> pack_block(const float* w1, const float* b1, const float* w2, const float* b2,
                                              int64_t c, int64_t cin, int64_t cout, const float* ws = nullptr,
                                              const float* bs = nullptr);

struct BlockDims {
  int64_t c, cin, cout;
};
BlockDims block_dims(const PackedBlock& pb);

struct BlockIO {
  const float* x;         // [n][cin][h][w]
  const float* mask;      // [n][c]: 0 = channel off, any other value v = on, scaled by v (1.0 in practice)
  const PackedGate* gate = nullptr;  // when set, the mask is this gate's decision on x (channel_gate.h); mask unused
  const float* residual;  // [n][cout][ho][wo]; unused (may be null) when the block has a packed shortcut
  float* y;               // [n][cout][ho][wo], ho = (h - 1) / stride + 1
  int64_t n, h, w;
  int stride;             // 1 or 2
  // Threads that parallel_for runs tasks on (0 = unknown).  With T > 1, each pass is split into a multiple
  // of T tasks of equal work wherever the work allows, so that no thread waits for a lone straggler.
  int threads = 0;
  // conv2's tile form: 0 = chosen per call from the map size, the output channels and the active channels
  // (gated_block.cpp, kChannelTileMaxPixels), 1 = pixel vectors, 2 = output-channel vectors, 3 = pixel vectors
  // but for a last row band whose vectors would be mostly empty lanes, which takes output-channel vectors (a
  // 17x17 map's last row: 17 pixels in 2 vectors).  Forms 2 and 3 only where the selected path has channel
  // tiles (see has_channel_tiles; otherwise pixel vectors).  0 picks 2 or 3 (or 1 without channel tiles).  The
  // self-check sets it to test each.
  int conv2_form = 0;
  // conv1's form: 0 = chosen per call (channel dots on small maps with enough input channels, where the selected
  // path has them; gated_block.cpp, kConv1DotMinCin), 1 = pixel vectors, 2 = channel dots wherever the path
  // has them for the map's width and the input channels fill whole vectors.  The self-check sets it to test each.
  int conv1_form = 0;
};

// Output spatial size for an input size and stride.
inline int64_t out_size(int64_t in, int stride) { return (in - 1) / stride + 1; }

// Runs one block.  Returns an empty string on success, otherwise a one-line error message (nothing throws).
std::string run_block(const PackedBlock& pb, const BlockIO& io, ParallelForFn parallel_for, void* pf_ctx);

// Instruction-set paths: the ones compiled in ("avx512,avx2,portable") and the one in use.  The choice is
// made once per process: the best path the CPU supports, or the one named by GATEKIT_OPS_ISA
// (avx512 | avx2 | portable; the int8 kernel's avx512vnni and avxvnni mean avx512 and avx2) when the CPU supports it.
const char* isa_compiled();
const char* isa_selected();
// Value of GATEKIT_OPS_ISA when the choice was made ("" if unset), and whether it could be honoured.
const char* isa_requested();
bool isa_request_honoured();
// Whether the selected path has conv2's output-channel tiles (BlockIO::conv2_form 2; AVX-512 only).
bool has_channel_tiles();
// Whether the selected path has conv1's channel dots (BlockIO::conv1_form 2; AVX-512 only).
bool has_conv1_dot();

// JSON fields common to both libraries (without braces): version, compiler, ISA paths, conv2's channel tiles.
std::string build_info_common_json();

}  // namespace gatekit
