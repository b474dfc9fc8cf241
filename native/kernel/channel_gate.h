// The block's channel gate, computed inside the op (gatekit::GatedBlockWithGate):
//
//   mask[n][c] = 1  if  G2[c] . relu(G1 . mean_hw(x[n]) + g1) >= 0,  else 0
//
// G1 [Hd][Cin] and g1 [Hd] are the gate's first FC with its BatchNorm folded, G2 [C][Hd] its second FC
// restricted to the block's kept inner channels (a grouped gate repeats a decision's row).  Ties count as on,
// as in the PyTorch gate.  A few thousand multiply-adds a sample, on the calling thread, in the vector kernels
// of the block's instruction-set path (IsaOps::gate_sum, gate_fc).
#pragma once

#include <cstdint>
#include <memory>

namespace gatekit {

struct PackedGate;

// Copies G1 [hidden][cin], g1 [hidden], G2 [c][hidden] (float32).  Throws std::invalid_argument on bad sizes.
std::shared_ptr<const PackedGate> pack_gate(const float* g1, const float* gb1, const float* g2, int64_t hidden,
                                            int64_t cin, int64_t c);

struct GateDims {
  int64_t hidden, cin, c;
};
GateDims gate_dims(const PackedGate& pg);

// mask [n][c] (1.0 / 0.0) from x [n][cin][h][w].  A NaN logit compares false: that channel is off (a NaN or
// infinity anywhere in a sample's x makes its channel means, hidden units and logits NaN or infinite).  With
// `nonfinite` (n bytes), nonfinite[s] = 1 where a channel mean of sample s is NaN or infinite, else 0: never 0
// where x[s] holds a NaN or an infinity (a sum with one is never finite); 1 also where a sum of finite values
// overflowed.
void gate_mask(const PackedGate& pg, const float* x, int64_t n, int64_t h, int64_t w, float* mask,
               uint8_t* nonfinite = nullptr);

}  // namespace gatekit
