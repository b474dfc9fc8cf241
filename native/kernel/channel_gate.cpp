// The block's channel gate (channel_gate.h): global average pool, FC + bias, ReLU, FC, threshold at 0.
#include "channel_gate.h"

#include <stdexcept>
#include <vector>

namespace gatekit {

struct PackedGate {
  int hidden = 0, cin = 0, c = 0;
  std::vector<float> g1, gb1, g2;
};

namespace {

// Sums with 16 independent partial sums (the compiler vectorises the inner loop; the order differs from a
// serial sum by rounding only), reduced in double.
float sum(const float* p, size_t n) {
  float acc[16] = {0};
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += p[i + j];
  double s = 0;
  for (int j = 0; j < 16; ++j) s += acc[j];
  for (; i < n; ++i) s += p[i];
  return (float)s;
}

float dot(const float* a, const float* b, size_t n) {
  float acc[16] = {0};
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += a[i + j] * b[i + j];
  double s = 0;
  for (int j = 0; j < 16; ++j) s += acc[j];
  for (; i < n; ++i) s += (double)a[i] * b[i];
  return (float)s;
}

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
  pg->g1.assign(g1, g1 + hidden * cin);
  pg->gb1.assign(gb1, gb1 + hidden);
  pg->g2.assign(g2, g2 + c * hidden);
  return pg;
}

GateDims gate_dims(const PackedGate& pg) { return GateDims{pg.hidden, pg.cin, pg.c}; }

void gate_mask(const PackedGate& pg, const float* x, int64_t n, int64_t h, int64_t w, float* mask) {
  const size_t hw = (size_t)(h * w);
  std::vector<float> z((size_t)pg.cin), hid((size_t)pg.hidden);
  for (int64_t s = 0; s < n; ++s) {
    const float* xs = x + (size_t)s * pg.cin * hw;
    for (int ci = 0; ci < pg.cin; ++ci) z[ci] = sum(xs + (size_t)ci * hw, hw) / (float)hw;
    for (int k = 0; k < pg.hidden; ++k) {
      const float v = dot(&pg.g1[(size_t)k * pg.cin], z.data(), (size_t)pg.cin) + pg.gb1[k];
      hid[k] = v > 0.0f ? v : 0.0f;
    }
    float* ms = mask + (size_t)s * pg.c;
    for (int c = 0; c < pg.c; ++c)
      ms[c] = dot(&pg.g2[(size_t)c * pg.hidden], hid.data(), (size_t)pg.hidden) >= 0.0f ? 1.0f : 0.0f;
  }
}

}  // namespace gatekit
