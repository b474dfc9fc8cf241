// Kernel self-check with no runtime: every case and mask pattern against a float64 reference of the block,
// on the kernel path this process selects (GATEKIT_OPS_ISA may force one), with conv2 in pixel tiles and, on
// paths that have them, in output-channel tiles.  Exits 1 on any mismatch.  The
// "gate" pattern takes its mask from the channel gate (channel_gate.h), whose decisions are checked against
// a float64 gate wherever the logit is not within rounding of the threshold.  The "nan" and "nangate" patterns
// ("random" and "gate" masks) put a NaN into x of sample 0, +inf and -inf into sample 1 and a NaN into the
// residual of the last sample: y must be NaN, +inf and -inf exactly where the float64 reference of the
// standard-ops form is (every channel computed, mask * relu(conv1 + b1), relu keeping NaN), and close elsewhere.
//
// Built for other architectures and run under user-mode emulation, it checks the paths this machine
// cannot run natively (tests/test_native_ops.py cross-builds it for aarch64 and runs it with qemu):
//
//   cmake -S native -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=native/cmake/aarch64-linux-gnu.cmake -DGATEKIT_OPS_OV=OFF
//   cmake --build build-aarch64 --target gatekit_kernel_selfcheck
//   qemu-aarch64 -L /usr/aarch64-linux-gnu build-aarch64/gatekit_kernel_selfcheck --quick
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "channel_gate.h"
#include "gated_block.h"

namespace {

struct Case {
  int n, cin, h, w, c, cout, stride;
};

// Odd widths, odd and tiny maps, stride 1 and 2, batch 1 and 8, and the widest tile shapes of each path; the
// 17x17 and 9x9 ones have 72-100 input channels and up to 150 active ones (long K loops, many channel tiles a
// band).  The last two have enough conv2 work for more than one row band of a 17x17 map, whose last band (one
// row) conv2_form 3 runs in channel tiles.
const Case kCases[] = {
    {1, 3, 7, 7, 5, 7, 1},    {8, 3, 9, 9, 5, 7, 2},    {1, 4, 1, 1, 6, 3, 1},     {1, 4, 2, 2, 6, 3, 2},
    {8, 16, 8, 8, 24, 16, 1}, {1, 8, 16, 16, 32, 16, 2}, {2, 5, 11, 6, 13, 9, 1},  {2, 12, 4, 4, 40, 44, 1},
    {1, 8, 8, 8, 28, 48, 2},  {1, 6, 20, 20, 30, 26, 1}, {1, 100, 17, 17, 30, 26, 1}, {2, 72, 9, 9, 150, 24, 2},
    {1, 32, 17, 17, 64, 48, 1}, {1, 24, 34, 34, 64, 48, 2},
    // conv1's channel dots (input channels in whole vectors, rows up to 12 wide; x wider than 16 at stride 2)
    {2, 32, 5, 5, 40, 48, 1},   {1, 64, 9, 9, 36, 40, 2},   {1, 16, 3, 3, 20, 24, 1},  {1, 48, 12, 12, 24, 20, 1},
    {1, 32, 24, 23, 18, 16, 2}, {1, 16, 1, 1, 8, 16, 1},    {2, 32, 8, 8, 32, 32, 2},
    // row tiles of three rows over several 64-channel groups of w2r (3x3 and 4x4 maps, a partial last group)
    {1, 64, 3, 3, 40, 112, 1},  {2, 32, 6, 6, 24, 144, 2},  {1, 16, 4, 4, 20, 80, 1},
};

uint32_t g_state = 12345u;
float uniform() {  // xorshift32 in [-1, 1)
  g_state ^= g_state << 13;
  g_state ^= g_state >> 17;
  g_state ^= g_state << 5;
  return (float)((g_state >> 8) * (1.0 / 8388608.0) * 2.0 - 1.0);
}

// conv3x3 with padding 1 and the given stride, in double: in [ci][h][w], wt [co][ci][3][3] -> out [co][ho][wo].
void conv3x3(const std::vector<double>& in, int ci_n, int h, int w, const float* wt, int co_n, int stride,
             std::vector<double>& out) {
  const int ho = (h - 1) / stride + 1, wo = (w - 1) / stride + 1;
  out.assign((size_t)co_n * ho * wo, 0.0);
  for (int co = 0; co < co_n; ++co)
    for (int ci = 0; ci < ci_n; ++ci)
      for (int ky = 0; ky < 3; ++ky)
        for (int kx = 0; kx < 3; ++kx) {
          const double k = wt[(((size_t)co * ci_n + ci) * 3 + ky) * 3 + kx];
          for (int y = 0; y < ho; ++y) {
            const int iy = y * stride + ky - 1;
            if (iy < 0 || iy >= h) continue;
            for (int x = 0; x < wo; ++x) {
              const int ix = x * stride + kx - 1;
              if (ix < 0 || ix >= w) continue;
              out[((size_t)co * ho + y) * wo + x] += k * in[((size_t)ci * h + iy) * w + ix];
            }
          }
        }
}

// Runs the tasks last to first: results must not depend on the order or on which thread runs a task.
void reverse_parallel_for(void*, size_t n, gatekit::TaskFn fn, void* arg) {
  for (size_t i = n; i-- > 0;) fn(arg, i);
}

// Runs the tasks at once on threads of their own (the workers then share the task lists for real).
void threaded_parallel_for(void*, size_t n, gatekit::TaskFn fn, void* arg) {
  std::vector<std::thread> pool;
  for (size_t i = 1; i < n; ++i) pool.emplace_back([=] { fn(arg, i); });
  if (n > 0) fn(arg, 0);
  for (std::thread& t : pool) t.join();
}

// ReLU that keeps NaN, as ONNX Relu on ONNX Runtime and PyTorch's relu (std::max(0.0, NaN) is 0).
double relu(double v) { return std::isnan(v) ? v : std::max(0.0, v); }

// pattern "gate": random gate weights (hidden units biased on, so that decisions vary per sample); `mask` gets
// the gate's decisions for the reference.  Null if a decision differs from the float64 gate's.
std::shared_ptr<const gatekit::PackedGate> gate_decisions(const Case& k, const std::vector<float>& x,
                                                          std::vector<float>& mask) {
  const int hd = std::max(k.cin / 2, 2);
  std::vector<float> g1((size_t)hd * k.cin), gb1(hd), g2((size_t)k.c * hd);
  for (float& f : g1) f = 0.5f * uniform();
  for (float& f : gb1) f = 0.5f + 0.2f * uniform();
  for (float& f : g2) f = uniform();
  auto pg = gatekit::pack_gate(g1.data(), gb1.data(), g2.data(), hd, k.cin, k.c);
  gatekit::gate_mask(*pg, x.data(), k.n, k.h, k.w, mask.data());
  const int hw = k.h * k.w;
  std::vector<double> z(k.cin), hid(hd);
  for (int s = 0; s < k.n; ++s) {
    for (int ci = 0; ci < k.cin; ++ci) {
      double sum = 0.0;
      for (int p = 0; p < hw; ++p) sum += x[((size_t)s * k.cin + ci) * hw + p];
      z[ci] = sum / hw;
    }
    for (int u = 0; u < hd; ++u) {
      double v = gb1[u];
      for (int ci = 0; ci < k.cin; ++ci) v += (double)g1[(size_t)u * k.cin + ci] * z[ci];
      hid[u] = relu(v);
    }
    for (int j = 0; j < k.c; ++j) {
      double logit = 0.0;
      for (int u = 0; u < hd; ++u) logit += (double)g2[(size_t)j * hd + u] * hid[u];
      const float want = logit >= 0.0 ? 1.0f : 0.0f;  // a NaN logit: off
      if ((std::isnan(logit) || std::fabs(logit) > 1e-5) && mask[(size_t)s * k.c + j] != want) {
        std::printf("gate decision n=%d c=%d: logit %.6g, mask %g\n", s, j, logit, mask[(size_t)s * k.c + j]);
        return nullptr;
      }
    }
  }
  return pg;
}

// One case and mask pattern: its inputs, and the float64 reference of y with the residual as an input (`plain`)
// and with the projection shortcut (`proj`), computed once for every worker count and tile form.
struct Prepared {
  Case k;
  std::string pattern;
  std::vector<float> x, w1, b1, w2, b2, res, mask, ws, bs;
  std::shared_ptr<const gatekit::PackedGate> gate;  // the "gate" patterns: the block runs its gate itself
  std::vector<double> plain, proj;
  bool ok = true;  // false if a gate decision differs from the float64 gate's
};

Prepared prepare(const Case& k, const std::string& pattern) {
  Prepared d;
  d.k = k;
  d.pattern = pattern;
  const int ho = (k.h - 1) / k.stride + 1, wo = (k.w - 1) / k.stride + 1;
  d.x.resize((size_t)k.n * k.cin * k.h * k.w);
  d.w1.resize((size_t)k.c * k.cin * 9);
  d.b1.resize(k.c);
  d.w2.resize((size_t)k.cout * k.c * 9);
  d.b2.resize(k.cout);
  d.res.resize((size_t)k.n * k.cout * ho * wo);
  d.mask.resize((size_t)k.n * k.c);
  d.ws.resize((size_t)k.cout * k.cin);
  d.bs.resize(k.cout);
  for (auto* v : {&d.x, &d.w1, &d.b1, &d.w2, &d.b2, &d.res, &d.ws, &d.bs})
    for (float& f : *v) f = uniform();
  if (pattern == "nan" || pattern == "nangate") {
    const size_t hw = (size_t)k.h * k.w;
    d.x[(size_t)(k.cin - 1) * hw + hw / 2] = NAN;  // sample 0, last channel, the middle pixel
    if (k.n > 1) {
      d.x[(size_t)k.cin * hw] = INFINITY;  // sample 1, channel 0, the first pixel and the last
      d.x[(size_t)k.cin * hw + hw - 1] = -INFINITY;
    }
    d.res[d.res.size() - 1 - (size_t)ho * wo / 3] = NAN;  // the last sample
  }
  for (int s = 0; s < k.n; ++s)
    for (int j = 0; j < k.c; ++j) {
      float m = 1.0f;
      if (pattern == "off") m = 0.0f;
      if (pattern == "random" || pattern == "nan") m = uniform() > 0.0f ? 1.0f : 0.0f;
      if (pattern == "mixed") m = (j + s) % 3 == 0 ? 0.0f : ((j + s) % 3 == 1 ? 1.0f : 0.5f);  // values scale
      d.mask[(size_t)s * k.c + j] = m;
    }
  if ((pattern == "gate" || pattern == "nangate") && !(d.gate = gate_decisions(k, d.x, d.mask))) {
    d.ok = false;
    return d;
  }
  d.plain.resize(d.res.size());
  d.proj.resize(d.res.size());
  std::vector<double> xs, hs, c1, c2;
  for (int s = 0; s < k.n; ++s) {
    xs.assign(d.x.begin() + (size_t)s * k.cin * k.h * k.w, d.x.begin() + (size_t)(s + 1) * k.cin * k.h * k.w);
    conv3x3(xs, k.cin, k.h, k.w, d.w1.data(), k.c, k.stride, c1);
    hs.resize(c1.size());
    for (int j = 0; j < k.c; ++j)
      for (int p = 0; p < ho * wo; ++p) {
        const size_t i = (size_t)j * ho * wo + p;
        hs[i] = d.mask[(size_t)s * k.c + j] * relu(c1[i] + d.b1[j]);
      }
    conv3x3(hs, k.c, ho, wo, d.w2.data(), k.cout, 1, c2);
    for (int co = 0; co < k.cout; ++co)
      for (int p = 0; p < ho * wo; ++p) {
        const size_t i = ((size_t)s * k.cout + co) * ho * wo + p;
        const double c = c2[(size_t)co * ho * wo + p] + d.b2[co];
        // the shortcut: a 1x1 conv at the block's stride, x[ci][stride * row][stride * col]
        const int oy = p / wo, ox = p % wo;
        double r = d.bs[co];
        for (int ci = 0; ci < k.cin; ++ci)
          r += (double)d.ws[(size_t)co * k.cin + ci] * xs[((size_t)ci * k.h + oy * k.stride) * k.w + ox * k.stride];
        d.plain[i] = relu(c + d.res[i]);
        d.proj[i] = relu(c + r);
      }
  }
  return d;
}

// Runs the block on d's inputs and returns its worst error relative to the reference's largest value (1e30 on
// an error, or where NaN or an infinity is not exactly where the reference has it).
// `shortcut`: the block packs a projection shortcut (Ws [cout][cin], bs) and computes its residual itself.
// `threads` < 0: -threads workers on threads of their own; > 1: that many workers run one after another.
double check(const Prepared& d, int threads, bool shortcut, int form, int form1) {
  if (!d.ok) return 1e30;
  const Case& k = d.k;
  const gatekit::ParallelForFn pf =
      threads < 0 ? &threaded_parallel_for : threads > 1 ? &reverse_parallel_for : nullptr;
  threads = std::abs(threads);
  std::vector<float> y(d.res.size(), -7.0f);
  auto pb = gatekit::pack_block(d.w1.data(), d.b1.data(), d.w2.data(), d.b2.data(), k.c, k.cin, k.cout,
                                shortcut ? d.ws.data() : nullptr, shortcut ? d.bs.data() : nullptr);
  gatekit::BlockIO io;
  io.x = d.x.data();
  io.mask = d.gate ? nullptr : d.mask.data();
  io.gate = d.gate.get();
  io.residual = shortcut ? nullptr : d.res.data();
  io.y = y.data();
  io.n = k.n;
  io.h = k.h;
  io.w = k.w;
  io.stride = k.stride;
  io.threads = threads;
  io.conv2_form = form;
  io.conv1_form = form1;
  const std::string err = gatekit::run_block(*pb, io, pf, nullptr);
  if (!err.empty()) {
    std::printf("error: %s\n", err.c_str());
    return 1e30;
  }
  const std::vector<double>& ref = shortcut ? d.proj : d.plain;
  double worst = 0.0, scale = 1e-12;
  int nan_refs = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    if (!std::isfinite(ref[i]) || !std::isfinite(y[i])) {
      // NaN exactly where the reference is NaN, infinities of the same sign where it is infinite
      if (std::isnan(ref[i]) != std::isnan(y[i]) || (!std::isnan(ref[i]) && ref[i] != (double)y[i])) {
        std::printf("output %zu: y %g, reference %g\n", i, (double)y[i], ref[i]);
        return 1e30;
      }
      nan_refs += std::isnan(ref[i]);
      continue;
    }
    scale = std::max(scale, std::fabs(ref[i]));
    worst = std::max(worst, std::fabs(ref[i] - (double)y[i]));
  }
  if ((d.pattern == "nan" || d.pattern == "nangate") && nan_refs == 0) {
    std::printf("pattern %s: no NaN in the reference\n", d.pattern.c_str());
    return 1e30;
  }
  return worst / scale;
}

}  // namespace

int main(int argc, char** argv) {
  // --quick: 1 worker and 3 on threads of their own only (the task split and its scheduling are the same C++ on
  // every path; the kernels are what a path of its own, or an emulated one, needs checked).
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  if (argc > 2 || (argc == 2 && !quick)) {
    std::printf("usage: %s [--quick]\n", argv[0]);
    return 2;
  }
  const std::vector<int> workers = quick ? std::vector<int>{1, -3} : std::vector<int>{1, 3, -2, -3};
  const double tol = 1e-5;
  int failed = 0, run = 0;
  double worst = 0.0;
  for (const Case& k : kCases)
    for (const char* pattern : {"random", "off", "on", "mixed", "gate", "nan", "nangate"}) {
      const Prepared d = prepare(k, pattern);
      for (int threads : workers)
        for (bool shortcut : {false, true})
          for (int form : {1, 2, 3})
          for (int form1 : {1, 2}) {
            if (form != 1 && !gatekit::has_channel_tiles()) continue;  // the same pixel tiles again
            if (form1 == 2 && !gatekit::has_conv1_dot()) continue;
            const double e = check(d, threads, shortcut, form, form1);
            ++run;
            worst = std::max(worst, e);
            if (!(e <= tol)) {
              ++failed;
              std::printf("FAIL n=%d cin=%d %dx%d c=%d cout=%d stride=%d mask=%s threads=%d shortcut=%d conv2_form=%d "
                          "conv1_form=%d: rel error %.3g\n", k.n, k.cin, k.h, k.w, k.c, k.cout, k.stride, pattern, threads,
                          (int)shortcut, form, form1, e);
            }
          }
    }
  std::printf("{\"isa\": \"%s\", \"cases\": %d, \"failed\": %d, \"worst_rel_error\": %.3g}\n", gatekit::isa_selected(),
              run, failed, worst);
  return failed ? 1 : 0;
}
