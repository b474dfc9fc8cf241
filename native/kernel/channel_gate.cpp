// The block's channel gate (channel_gate.h): global average pool, FC + bias, ReLU, FC, threshold at 0.
#include "channel_gate.h"

#include <cmath>
#include <stdexcept>
#include <vector>

#include "plan.h"

namespace gatekit {

// G1 and G2 are stored transposed, each output dimension padded with zeros to a multiple of detail::kGateChunk,
// so that both FCs are sums of scaled weight rows held in vector registers (no horizontal reductions).
struct PackedGate {
  int hidden = 0, cin = 0, c = 0, hidden_p = 0, c_p = 0;
  std::vector<float> g1t;  // [cin][hidden_p]
  std::vector<float> gb1;  // [hidden_p]
  std::vector<float> g2t;  // [hidden][c_p]
};

namespace {

int padded(int n) { return (n + detail::kGateChunk - 1) / detail::kGateChunk * detail::kGateChunk; }

// Per-thread scratch for one sample's means, hidden units and logits.
thread_local std::vector<float> tls_means, tls_hidden, tls_logits;

}  // namespace

std::shared_ptr<const PackedGate> pack_gate(const float* g1, const float* gb1, const float* g2, int64_t hidden,
                                            int64_t cin, int64_t c) {
  if (hidden <= 0 || cin <= 0 || c <= 0 || hidden > (1 << 20) || cin > (1 << 20) || c > (1 << 20))
    throw std::invalid_argument("gate: bad weight sizes");
  if (!g1 || !gb1 || !g2) throw std::invalid_argument("gate: missing weight data");
  auto pg = std::make_shared<PackedGate>();
  pg->hidden = (int)hidden;
  pg->cin = (int)cin;
  pg->c = (int)c;
  pg->hidden_p = padded(pg->hidden);
  pg->c_p = padded(pg->c);
  pg->g1t.assign((size_t)cin * pg->hidden_p, 0.0f);
  for (int64_t k = 0; k < hidden; ++k)
    for (int64_t ci = 0; ci < cin; ++ci) pg->g1t[(size_t)ci * pg->hidden_p + k] = g1[k * cin + ci];
  pg->gb1.assign(pg->hidden_p, 0.0f);
  for (int64_t k = 0; k < hidden; ++k) pg->gb1[k] = gb1[k];
  pg->g2t.assign((size_t)hidden * pg->c_p, 0.0f);
  for (int64_t j = 0; j < c; ++j)
    for (int64_t k = 0; k < hidden; ++k) pg->g2t[(size_t)k * pg->c_p + j] = g2[j * hidden + k];
  return pg;
}

GateDims gate_dims(const PackedGate& pg) { return GateDims{pg.hidden, pg.cin, pg.c}; }

void gate_mask(const PackedGate& pg, const float* x, int64_t n, int64_t h, int64_t w, float* mask,
               uint8_t* nonfinite) {
  const detail::IsaOps& isa = detail::selected_isa();
  const size_t hw = (size_t)(h * w);
  std::vector<float>& z = tls_means;
  std::vector<float>& hid = tls_hidden;
  std::vector<float>& logit = tls_logits;
  z.resize((size_t)pg.cin);
  hid.resize((size_t)pg.hidden_p);
  logit.resize((size_t)pg.c_p);
  for (int64_t s = 0; s < n; ++s) {
    const float* xs = x + (size_t)s * pg.cin * hw;
    for (int ci = 0; ci < pg.cin; ++ci) z[ci] = isa.gate_sum(xs + (size_t)ci * hw, hw) / (float)hw;
    if (nonfinite) {
      bool bad = false;
      for (int ci = 0; ci < pg.cin; ++ci) bad |= !std::isfinite(z[ci]);
      nonfinite[s] = bad ? 1 : 0;
    }
    isa.gate_fc(hid.data(), pg.gb1.data(), pg.g1t.data(), z.data(), pg.cin, pg.hidden_p, false);
    // ReLU: the second FC skips the hidden units that are not positive (their rows would add zero)
    isa.gate_fc(logit.data(), nullptr, pg.g2t.data(), hid.data(), pg.hidden, pg.c_p, true);
    float* ms = mask + (size_t)s * pg.c;
    for (int j = 0; j < pg.c; ++j) ms[j] = logit[j] >= 0.0f ? 1.0f : 0.0f;
  }
}

}  // namespace gatekit
