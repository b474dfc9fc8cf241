// The gatekit ops' ONNX contract (native/README.md): each op's name and where it finds its inputs, shared by
// the ONNX Runtime library and the OpenVINO extension.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace gatekit {

// `gate` < 0: the mask is input `mask`; otherwise G1, g1, G2 are inputs gate, gate + 1, gate + 2 and the op
// computes the mask (channel_gate.h).  W1, b1, W2, b2 are inputs weights .. weights + 3.  `shortcut` < 0: the
// residual is input `residual`; otherwise Ws [Cout, Cin(, 1, 1)], bs [Cout] are inputs shortcut, shortcut + 1
// (a 1x1 conv with the block's stride, BatchNorm folded) and the op computes the residual (`residual` = -1).
struct OpLayout {
  const char* name;
  size_t inputs;
  int mask, gate, weights, residual, shortcut;
};

// (x, mask, W1, b1, W2, b2, residual)
constexpr OpLayout kGatedBlock{"GatedBlock", 7, 1, -1, 2, 6, -1};
// (x, G1, g1, G2, W1, b1, W2, b2, residual)
constexpr OpLayout kGatedBlockWithGate{"GatedBlockWithGate", 9, -1, 1, 4, 8, -1};
// (x, G1, g1, G2, W1, b1, W2, b2, Ws, bs)
constexpr OpLayout kGatedBlockWithGateAndShortcut{"GatedBlockWithGateAndShortcut", 10, -1, 1, 4, -1, 8};

// dims(i, d): input i's dimensions into d, or false where they are not known (yet).
using InputDims = std::function<bool(int, std::vector<int64_t>&)>;

// Whether the weights of an op with layout L fit together (W1, b1, W2, b2, the gate's G1, g1, G2, the shortcut's
// Ws, bs); checks needing unknown dimensions are skipped.  "" or one line naming the input (without the op).
std::string weight_shape_error(const OpLayout& L, const InputDims& dims);

// The int8 ops (gated_block_int8.h): fp32 x, mask, residual and output; W1, W2, Ws int8 with float32 per-channel
// scales; x_scale, h_scale float32 scalars.  `weights`: W1, w1_scale, b1, W2, w2_scale, b2 are inputs weights ..
// weights + 5; `shortcut`: Ws, ws_scale, bs; `scales`: x_scale, h_scale are inputs scales, scales + 1.  Every
// input but x, the mask and the residual is a constant.
struct OpLayoutInt8 {
  const char* name;
  size_t inputs;
  int mask, gate, weights, residual, shortcut, scales;
};

// (x, mask, W1, w1_scale, b1, W2, w2_scale, b2, residual, x_scale, h_scale)
constexpr OpLayoutInt8 kGatedBlockInt8{"GatedBlockInt8", 11, 1, -1, 2, 8, -1, 9};
// (x, G1, g1, G2, W1, w1_scale, b1, W2, w2_scale, b2, residual, x_scale, h_scale)
constexpr OpLayoutInt8 kGatedBlockWithGateInt8{"GatedBlockWithGateInt8", 13, -1, 1, 4, 10, -1, 11};
// (x, G1, g1, G2, W1, w1_scale, b1, W2, w2_scale, b2, Ws, ws_scale, bs, x_scale, h_scale)
constexpr OpLayoutInt8 kGatedBlockWithGateAndShortcutInt8{"GatedBlockWithGateAndShortcutInt8", 15, -1, 1, 4, -1, 10, 13};

// Input i of an int8 op: its name in the contract, and whether it is an int8 weight (W1, W2, Ws), a constant
// float32 (scales, biases, the gate) or a tensor fed per call (x, mask, residual).
enum class Int8Input { kTensor, kInt8Weight, kFloatConstant };
const char* int8_input_name(const OpLayoutInt8& L, int i);
Int8Input int8_input_kind(const OpLayoutInt8& L, int i);

// As weight_shape_error for an int8 op: W1, W2, their scales and biases, the gate, the shortcut, and x_scale,
// h_scale of shape [] or [1].
std::string weight_shape_error_int8(const OpLayoutInt8& L, const InputDims& dims);

}  // namespace gatekit
