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

}  // namespace gatekit
