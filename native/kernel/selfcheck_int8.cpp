// Self-check of the int8 kernel with no runtime: on every instruction-set path this CPU runs (or the one named by
// an argument), every case and mask pattern against a scalar integer reference.  The int32 accumulators
// (conv1, conv2, the shortcut) and the u8 hidden values must be equal, and y equal bit for bit (the epilogues are
// the contract's float operations).  Masks all on, all off, random, one per sample and the channel gate's; stride
// 1 and 2, odd widths and heights, batch 8, channel counts that are not multiples of 4 or 16, with and without the
// shortcut; 1 worker, 3 workers one after another in reverse order, 2 and 3 on threads of their own.  A sample
// with a NaN or an infinity in x must give NaN everywhere and leave the other samples exact.  Exits 1 on any
// mismatch; the last line of output is JSON.
//
// Built for other architectures and run under user-mode emulation, it checks the portable path there:
//
//   aarch64-linux-gnu-g++ -O2 -std=c++17 -ffp-contract=off -Inative/kernel native/kernel/{gated_block,
//       channel_gate,isa_portable,gated_block_int8,int8_isa_portable,selfcheck_int8}.cpp
//   qemu-aarch64 -L /usr/aarch64-linux-gnu ./a.out --quick
//
// --quick: 1 worker and 3 on threads of their own only (ties and non-finite samples are still checked: the task
// split and its scheduling are the same C++ on every path; the kernels are what an emulated path needs checked).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "channel_gate.h"
#include "gated_block.h"
#include "gated_block_int8.h"

namespace {

struct Case {
  int n, cin, h, w, c, cout, stride;
};

// Odd and tiny maps, stride 1 and 2, batch 1, 2 and 8, channel counts off multiples of 4 and 16 (input quads with
// padding, a last partial quad of active channels, output channels past a tile), long K loops (72-100 input
// channels), and maps wide enough for several row bands and pixel vectors of every tile width.
const Case kCases[] = {
    {1, 3, 7, 7, 5, 7, 1},      {8, 3, 9, 9, 5, 7, 2},      {1, 4, 1, 1, 6, 3, 1},    {1, 4, 2, 2, 6, 3, 2},
    {8, 16, 8, 8, 24, 16, 1},   {1, 8, 16, 16, 32, 16, 2},  {2, 5, 11, 6, 13, 9, 1},  {2, 12, 4, 4, 40, 44, 1},
    {8, 13, 9, 7, 19, 21, 2},   {1, 6, 20, 20, 30, 26, 1},  {1, 100, 17, 17, 30, 26, 1}, {2, 72, 9, 9, 50, 24, 2},
    {1, 16, 34, 34, 16, 16, 1}, {1, 16, 34, 34, 32, 32, 2}, {2, 64, 5, 5, 64, 64, 1}, {1, 32, 17, 17, 64, 64, 2},
    {8, 7, 5, 3, 11, 10, 1},    {8, 9, 3, 5, 9, 17, 2},
};

uint32_t g_state = 12345u;
uint32_t next_u32() {  // xorshift32
  g_state ^= g_state << 13;
  g_state ^= g_state >> 17;
  g_state ^= g_state << 5;
  return g_state;
}
float uniform() { return (float)((next_u32() >> 8) * (1.0 / 8388608.0) * 2.0 - 1.0); }  // [-1, 1)
int8_t rand_s8() { return (int8_t)(int)(next_u32() % 256 - 128); }

// The contract's quantization (clamp(roundeven(v / s), 0, 255)) and ReLU, as the kernels compute them.
uint8_t quant(float v, float s) {
  float q = v / s;
  q = q > 0.0f ? q : 0.0f;
  q = q < 255.0f ? q : 255.0f;
  return (uint8_t)__builtin_roundevenf(q);
}
float relu(float v) { return 0.0f > v ? 0.0f : v; }

void reverse_parallel_for(void*, size_t n, gatekit::TaskFn fn, void* arg) {
  for (size_t i = n; i-- > 0;) fn(arg, i);
}

void threaded_parallel_for(void*, size_t n, gatekit::TaskFn fn, void* arg) {
  std::vector<std::thread> pool;
  for (size_t i = 1; i < n; ++i) pool.emplace_back([=] { fn(arg, i); });
  if (n > 0) fn(arg, 0);
  for (std::thread& t : pool) t.join();
}

struct Block {
  std::vector<int8_t> w1, w2, ws;
  std::vector<float> w1s, b1, w2s, b2, wss, bs;
  float xs, hs;
};

// Scalar integer reference of one sample; returns the number of mismatches (printing the first few).
struct Result {
  long mismatches = 0;
  long checked = 0;
};

void report(Result& r, const char* what, int n, int c, int p, double want, double got) {
  if (r.mismatches++ < 5) std::printf("  %s n=%d ch=%d px=%d: want %.9g, got %.9g\n", what, n, c, p, want, got);
}

bool same_bits(float a, float b) {
  uint32_t ua, ub;
  std::memcpy(&ua, &a, 4);
  std::memcpy(&ub, &b, 4);
  return ua == ub || (a == 0.0f && b == 0.0f);
}

// `threads` < 0: -threads workers on threads of their own; > 1: that many one after another.
Result check(const Case& k, const std::string& pattern, int threads, bool shortcut, bool ties, bool nonfinite,
             const char* isa) {
  Result res;
  const gatekit::ParallelForFn pf =
      threads < 0 ? &threaded_parallel_for : threads > 1 ? &reverse_parallel_for : nullptr;
  threads = std::abs(threads);
  const int ho = (k.h - 1) / k.stride + 1, wo = (k.w - 1) / k.stride + 1, P = ho * wo, HW = k.h * k.w;
  Block b;
  b.w1.resize((size_t)k.c * k.cin * 9);
  b.w2.resize((size_t)k.cout * k.c * 9);
  b.ws.resize((size_t)k.cout * k.cin);
  for (auto* v : {&b.w1, &b.w2, &b.ws})
    for (int8_t& q : *v) q = rand_s8();
  b.w1s.resize(k.c);
  b.b1.resize(k.c);
  b.w2s.resize(k.cout);
  b.b2.resize(k.cout);
  b.wss.resize(k.cout);
  b.bs.resize(k.cout);
  // x in [-0.5, 2.5) x_scale * 128: about a sixth quantizes to 0, a sixth saturates at 255.  With `ties`, x is
  // x_scale times a multiple of 0.25 (exactly with x_scale 0.5; rounded to float with 0.3, whose reciprocal is
  // not exact), so that many quotients land on or next to .5 (round half to even; quant's division fallback).
  const bool exact_ties = (next_u32() & 1) != 0;
  b.xs = ties ? (exact_ties ? 0.5f : 0.3f) : 0.01f + 0.02f * std::fabs(uniform());
  // h: x_scale * w1_scale about 7e-5 / sqrt(K) (K = Cin * 9 products of about 150 x 74), so that h spreads over a
  // few hundred steps of h_scale, past both ends of [0, 255].
  const float kscale = 7e-5f / (std::sqrt((float)(k.cin * 9)) * b.xs);
  for (int j = 0; j < k.c; ++j) {
    b.w1s[j] = (0.5f + std::fabs(uniform())) * kscale;
    b.b1[j] = 0.3f * uniform();
  }
  b.hs = 0.004f + 0.004f * std::fabs(uniform());
  for (int o = 0; o < k.cout; ++o) {
    b.w2s[o] = (0.5f + std::fabs(uniform())) * 1e-3f;
    b.b2[o] = 0.3f * uniform();
    b.wss[o] = (0.5f + std::fabs(uniform())) * 1e-3f;
    b.bs[o] = 0.3f * uniform();
  }
  std::vector<float> x((size_t)k.n * k.cin * HW), resid((size_t)k.n * k.cout * P), mask((size_t)k.n * k.c);
  for (float& f : x) {
    const float u = 1.0f + 1.5f * uniform();  // [-0.5, 2.5)
    f = ties ? std::round(u * 128.0f * 4.0f) * 0.25f * b.xs : u * 128.0f * b.xs;
    if (ties && !exact_ties && f != 0.0f) {  // -2 .. 2 units in the last place: where x * (1 / x_scale), x / x_scale
                                             // part
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      bits += (int32_t)(next_u32() % 5) - 2;
      std::memcpy(&f, &bits, 4);
    }
  }
  for (float& f : resid) f = uniform();
  const int bad_sample = nonfinite ? k.n - 1 : -1;
  if (nonfinite) x[(size_t)bad_sample * k.cin * HW + (next_u32() % (k.cin * HW))] = (next_u32() & 1) ? NAN : INFINITY;
  for (int s = 0; s < k.n; ++s)
    for (int j = 0; j < k.c; ++j) {
      float m = 1.0f;
      if (pattern == "off") m = 0.0f;
      if (pattern == "random") m = uniform() > 0.0f ? 1.0f : 0.0f;
      if (pattern == "mixed") {  // each sample its own density, sample 1 all off, sample 2 one channel, values != 1
        const float d = (float)(s % 4) / 3.0f;
        m = (0.5f * (uniform() + 1.0f)) < d ? (s % 2 ? 1.0f : -2.5f) : 0.0f;
        if (s == 1) m = 0.0f;
        if (s == 2) m = j == k.c / 2 ? 1.0f : 0.0f;
      }
      mask[(size_t)s * k.c + j] = m;
    }
  std::shared_ptr<const gatekit::PackedGate> gate;
  if (pattern == "gate") {
    const int hd = std::max(k.cin / 2, 2);
    std::vector<float> g1((size_t)hd * k.cin), gb1(hd), g2((size_t)k.c * hd);
    for (float& f : g1) f = 0.5f * uniform();
    for (float& f : gb1) f = 0.5f + 0.2f * uniform();
    for (float& f : g2) f = uniform();
    gate = gatekit::pack_gate(g1.data(), gb1.data(), g2.data(), hd, k.cin, k.c);
    gatekit::gate_mask(*gate, x.data(), k.n, k.h, k.w, mask.data());
  }

  gatekit::Int8BlockWeights wt;
  wt.w1 = b.w1.data();
  wt.w1_scale = b.w1s.data();
  wt.b1 = b.b1.data();
  wt.w2 = b.w2.data();
  wt.w2_scale = b.w2s.data();
  wt.b2 = b.b2.data();
  if (shortcut) {
    wt.ws = b.ws.data();
    wt.ws_scale = b.wss.data();
    wt.bs = b.bs.data();
  }
  wt.x_scale = b.xs;
  wt.h_scale = b.hs;
  wt.c = k.c;
  wt.cin = k.cin;
  wt.cout = k.cout;
  auto pb = gatekit::pack_block_int8(wt);

  const int32_t kSentinel = (int32_t)0x7eadbeef;
  std::vector<int32_t> acc1((size_t)k.n * k.c * P, kSentinel), acc2((size_t)k.n * k.cout * P, kSentinel),
      accs((size_t)k.n * k.cout * P, kSentinel);
  std::vector<uint8_t> qh((size_t)k.n * k.c * P, 0xEE);
  std::vector<float> y(resid.size(), -7.0f);
  gatekit::Int8Probe probe;
  probe.acc1 = acc1.data();
  probe.qh = qh.data();
  probe.acc2 = acc2.data();
  probe.accs = accs.data();
  gatekit::BlockIO io;
  io.x = x.data();
  io.mask = gate ? nullptr : mask.data();
  io.gate = gate.get();
  io.residual = shortcut ? nullptr : resid.data();
  io.y = y.data();
  io.n = k.n;
  io.h = k.h;
  io.w = k.w;
  io.stride = k.stride;
  io.threads = threads;
  const std::string err = gatekit::run_block_int8(*pb, io, pf, nullptr, isa, &probe);
  if (!err.empty()) {
    std::printf("  error: %s\n", err.c_str());
    res.mismatches = 1;
    return res;
  }

  std::vector<uint8_t> qx;
  std::vector<int32_t> a1;
  std::vector<uint8_t> hq;
  for (int s = 0; s < k.n; ++s) {
    if (s == bad_sample) {
      for (int i = 0; i < k.cout * P; ++i) {
        ++res.checked;
        const float v = y[(size_t)s * k.cout * P + i];
        if (!std::isnan(v)) report(res, "y (non-finite x: NaN)", s, i / P, i % P, NAN, v);
      }
      continue;
    }
    qx.assign((size_t)k.cin * HW, 0);
    for (int i = 0; i < k.cin * HW; ++i) qx[i] = quant(x[(size_t)s * k.cin * HW + i], b.xs);
    auto qxat = [&](int ci, int yy, int xx) -> int32_t {
      return yy < 0 || yy >= k.h || xx < 0 || xx >= k.w ? 0 : qx[((size_t)ci * k.h + yy) * k.w + xx];
    };
    a1.assign((size_t)k.c * P, 0);
    hq.assign((size_t)k.c * P, 0);
    for (int j = 0; j < k.c; ++j) {
      const bool on = mask[(size_t)s * k.c + j] != 0.0f;
      for (int p = 0; p < P; ++p) {
        const int oy = p / wo, ox = p % wo;
        int64_t acc = 0;
        for (int ci = 0; ci < k.cin; ++ci)
          for (int t = 0; t < 9; ++t)
            acc += (int64_t)qxat(ci, oy * k.stride + t / 3 - 1, ox * k.stride + t % 3 - 1) *
                   b.w1[((size_t)j * k.cin + ci) * 9 + t];
        a1[(size_t)j * P + p] = (int32_t)acc;
        const size_t pi = ((size_t)s * k.c + j) * P + p;
        if (on) {
          const float hv = std::fma((float)(int32_t)acc, b.xs * b.w1s[j], b.b1[j]);
          hq[(size_t)j * P + p] = quant(hv, b.hs);
          ++res.checked;
          if (acc1[pi] != (int32_t)acc) report(res, "acc1", s, j, p, (double)acc, acc1[pi]);
          if (qh[pi] != hq[(size_t)j * P + p]) report(res, "qh", s, j, p, hq[(size_t)j * P + p], qh[pi]);
        } else if (acc1[pi] != kSentinel || qh[pi] != 0xEE) {
          report(res, "inactive channel computed", s, j, p, 0, acc1[pi]);
        }
      }
    }
    for (int o = 0; o < k.cout; ++o)
      for (int p = 0; p < P; ++p) {
        const int oy = p / wo, ox = p % wo;
        int64_t acc = 0;
        for (int j = 0; j < k.c; ++j)
          for (int t = 0; t < 9; ++t) {
            const int yy = oy + t / 3 - 1, xx = ox + t % 3 - 1;
            if (yy < 0 || yy >= ho || xx < 0 || xx >= wo) continue;
            acc += (int64_t)hq[(size_t)j * P + yy * wo + xx] * b.w2[((size_t)o * k.c + j) * 9 + t];
          }
        const size_t i = ((size_t)s * k.cout + o) * P + p;
        ++res.checked;
        if (acc2[i] != (int32_t)acc) report(res, "acc2", s, o, p, (double)acc, acc2[i]);
        float r = resid[i];
        if (shortcut) {
          int64_t sa = 0;
          for (int ci = 0; ci < k.cin; ++ci)
            sa += (int64_t)qxat(ci, oy * k.stride, ox * k.stride) * b.ws[(size_t)o * k.cin + ci];
          if (accs[i] != (int32_t)sa) report(res, "accs", s, o, p, (double)sa, accs[i]);
          r = std::fma((float)(int32_t)sa, b.xs * b.wss[o], b.bs[o]);
        }
        const float want = relu(std::fma((float)(int32_t)acc, b.hs * b.w2s[o], b.b2[o]) + r);
        if (!same_bits(want, y[i])) report(res, "y", s, o, p, want, y[i]);
      }
  }
  return res;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> paths;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      quick = true;
    } else if (paths.empty() && arg.rfind("--", 0) != 0) {
      paths.push_back(arg);
    } else {
      std::printf("usage: %s [--quick] [path]\n", argv[0]);
      return 2;
    }
  }
  const std::vector<int> workers = quick ? std::vector<int>{1, -3} : std::vector<int>{1, 3, -2, -3};
  if (paths.empty()) {
    const std::string list = gatekit::int8_isa_compiled();
    for (size_t start = 0; start <= list.size();) {
      size_t end = list.find(',', start);
      if (end == std::string::npos) end = list.size();
      const std::string name = list.substr(start, end - start);
      if (gatekit::int8_isa_supported(name.c_str())) paths.push_back(name);
      start = end + 1;
    }
  }
  int failed = 0, run = 0;
  long checked = 0;
  std::string ran;
  for (const std::string& isa : paths) {
    if (!gatekit::int8_isa_supported(isa.c_str())) {
      std::printf("int8 path %s is not available here\n", isa.c_str());
      return 2;
    }
    ran += (ran.empty() ? "\"" : ", \"") + isa + "\"";
    for (const Case& k : kCases)
      for (const char* pattern : {"random", "off", "on", "mixed", "gate"})
        for (int threads : workers)
          for (bool shortcut : {false, true}) {
            // ties: every other thread setting; a non-finite sample: batches of 2 or more, 1 worker and 2 threads
            const bool ties = threads == 3 || threads == -3;
            const bool nonfinite = k.n > 1 && (threads == 1 || threads == -2) && pattern != std::string("gate");
            const Result r = check(k, pattern, threads, shortcut, ties, nonfinite, isa.c_str());
            ++run;
            checked += r.checked;
            if (r.mismatches) {
              ++failed;
              std::printf("FAIL %s n=%d cin=%d %dx%d c=%d cout=%d stride=%d mask=%s threads=%d shortcut=%d ties=%d "
                          "nonfinite=%d: %ld mismatches\n", isa.c_str(), k.n, k.cin, k.h, k.w, k.c, k.cout, k.stride,
                          pattern, threads, (int)shortcut, (int)ties, (int)nonfinite, r.mismatches);
            }
          }
  }
  std::printf("{\"isa\": [%s], \"cases\": %d, \"failed\": %d, \"values_checked\": %ld}\n", ran.c_str(), run, failed,
              checked);
  return failed ? 1 : 0;
}
