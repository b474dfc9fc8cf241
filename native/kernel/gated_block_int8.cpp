// int8 GatedBlock: weight packing, instruction-set dispatch, the per-call plan (active channels, conv2's weight
// quads, scratch, task split) and the two passes on the caller's thread pool.
#include "gated_block_int8.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "channel_gate.h"
#include "plan_int8.h"

namespace gatekit {

using detail8::IsaOps8;
using detail8::Plan8;
using detail8::Prep8;
using detail8::Task1;
using detail8::Task2;

namespace {

// 64-byte aligned, zero-filled when (re)allocated, so that no vector lane ever reads undefined bits.
struct Bytes {
  void* p = nullptr;
  size_t n = 0;
  Bytes() = default;
  Bytes(const Bytes&) = delete;
  Bytes& operator=(const Bytes&) = delete;
  ~Bytes() { std::free(p); }
  void ensure(size_t bytes) {
    if (bytes <= n) return;
    const size_t want = std::max(bytes, n + n / 2);
    void* q = nullptr;
    if (posix_memalign(&q, 64, want) != 0 || q == nullptr) throw std::bad_alloc();
    std::memset(q, 0, want);
    std::free(p);
    p = q;
    n = want;
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

int round_up(int v, int m) { return (v + m - 1) / m * m; }

}  // namespace

struct PackedBlockInt8 {
  int C = 0, Cin = 0, Cout = 0, G = 0, C4 = 0, CoutP = 0;
  float x_scale = 0.0f, h_scale = 0.0f;
  Bytes w1, s1, b1, w2d, w2t, s2, b2, wsq, ss, bs;
  bool shortcut = false;
  detail8::View8 view() const {
    detail8::View8 v;
    v.C = C;
    v.Cin = Cin;
    v.Cout = Cout;
    v.G = G;
    v.C4 = C4;
    v.CoutP = CoutP;
    v.w1 = w1.as<int32_t>();
    v.s1 = s1.as<float>();
    v.b1 = b1.as<float>();
    v.w2d = w2d.as<int32_t>();
    v.w2t = w2t.as<int8_t>();
    v.s2 = s2.as<float>();
    v.b2 = b2.as<float>();
    v.wsq = shortcut ? wsq.as<int32_t>() : nullptr;
    v.ss = ss.as<float>();
    v.bs = bs.as<float>();
    v.x_scale = x_scale;
    v.h_scale = h_scale;
    return v;
  }
};

namespace {

void check_finite(const float* v, int64_t n, const char* name) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i]))
      throw std::invalid_argument(std::string(name) + "[" + std::to_string(i) + "] is not finite");
}

void check_scale(float v, const char* name) {
  if (!(std::isfinite(v) && v > 0.0f))
    throw std::invalid_argument(std::string(name) + " must be a finite number > 0, got " + std::to_string(v));
}

uint32_t word(int8_t a, int8_t b, int8_t c, int8_t d) {
  return (uint32_t)(uint8_t)a | ((uint32_t)(uint8_t)b << 8) | ((uint32_t)(uint8_t)c << 16) | ((uint32_t)(uint8_t)d << 24);
}

const IsaOps8& isa_by_choice();

}  // namespace

std::shared_ptr<const PackedBlockInt8> pack_block_int8(const Int8BlockWeights& w) {
  const int64_t c = w.c, cin = w.cin, cout = w.cout;
  if (c <= 0 || cin <= 0 || cout <= 0 || c > (1 << 20) || cin > (1 << 20) || cout > (1 << 20))
    throw std::invalid_argument("bad weight sizes");
  if (!w.w1 || !w.w1_scale || !w.b1 || !w.w2 || !w.w2_scale || !w.b2) throw std::invalid_argument("missing weight data");
  if ((w.ws != nullptr) != (w.ws_scale != nullptr) || (w.ws != nullptr) != (w.bs != nullptr))
    throw std::invalid_argument("the shortcut needs Ws, ws_scale and bs");
  check_scale(w.x_scale, "x_scale");
  check_scale(w.h_scale, "h_scale");
  check_finite(w.w1_scale, c, "w1_scale");
  check_finite(w.b1, c, "b1");
  check_finite(w.w2_scale, cout, "w2_scale");
  check_finite(w.b2, cout, "b2");
  if (w.ws) {
    check_finite(w.ws_scale, cout, "ws_scale");
    check_finite(w.bs, cout, "bs");
  }
  auto pb = std::make_shared<PackedBlockInt8>();
  pb->C = (int)c;
  pb->Cin = (int)cin;
  pb->Cout = (int)cout;
  pb->G = (int)((cin + 3) / 4);
  pb->C4 = (int)((c + 3) / 4);
  pb->CoutP = round_up((int)cout, detail8::kCoutStep);
  pb->x_scale = w.x_scale;
  pb->h_scale = w.h_scale;
  const int C = pb->C, Cin = pb->Cin, Cout = pb->Cout, G = pb->G, CoutP = pb->CoutP;
  const size_t slack = 256;

  // conv1: [C + 1][G][9] words, row C zero.
  pb->w1.ensure(((size_t)(C + 1) * G * 9) * 4 + slack);
  int32_t* w1 = pb->w1.as<int32_t>();
  auto w1at = [&](int j, int ci, int t) -> int8_t { return ci < Cin ? w.w1[((size_t)j * Cin + ci) * 9 + t] : 0; };
  for (int j = 0; j < C; ++j)
    for (int g = 0; g < G; ++g)
      for (int t = 0; t < 9; ++t)
        w1[((size_t)j * G + g) * 9 + t] =
            (int32_t)word(w1at(j, 4 * g, t), w1at(j, 4 * g + 1, t), w1at(j, 4 * g + 2, t), w1at(j, 4 * g + 3, t));
  pb->s1.ensure((size_t)(C + 1) * 4 + slack);
  pb->b1.ensure((size_t)(C + 1) * 4 + slack);
  for (int j = 0; j < C; ++j) {
    pb->s1.as<float>()[j] = w.x_scale * w.w1_scale[j];
    pb->b1.as<float>()[j] = w.b1[j];
  }

  // conv2: W2 per inner channel, [C + 1][9][CoutP] bytes (row C zero), and the aligned quads interleaved.
  const size_t row2 = (size_t)9 * CoutP;
  pb->w2t.ensure((size_t)(C + 1) * row2 + slack);
  int8_t* w2t = pb->w2t.as<int8_t>();
  for (int j = 0; j < C; ++j)
    for (int t = 0; t < 9; ++t)
      for (int o = 0; o < Cout; ++o) w2t[(size_t)j * row2 + (size_t)t * CoutP + o] = w.w2[((size_t)o * C + j) * 9 + t];
  pb->w2d.ensure((size_t)pb->C4 * row2 * 4 + slack);
  const IsaOps8& isa = isa_by_choice();
  for (int k = 0; k < pb->C4; ++k) {
    const int8_t* r[4];
    for (int i = 0; i < 4; ++i) r[i] = w2t + (size_t)std::min(4 * k + i, C) * row2;
    isa.interleave(r[0], r[1], r[2], r[3], row2, pb->w2d.as<int32_t>() + (size_t)k * row2);
  }
  pb->s2.ensure((size_t)CoutP * 4 + slack);
  pb->b2.ensure((size_t)CoutP * 4 + slack);
  for (int o = 0; o < Cout; ++o) {
    pb->s2.as<float>()[o] = w.h_scale * w.w2_scale[o];
    pb->b2.as<float>()[o] = w.b2[o];
  }

  pb->ss.ensure((size_t)CoutP * 4 + slack);
  pb->bs.ensure((size_t)CoutP * 4 + slack);
  if (w.ws) {
    // The shortcut: [G][CoutP] words.
    pb->shortcut = true;
    pb->wsq.ensure((size_t)G * CoutP * 4 + slack);
    int32_t* ws = pb->wsq.as<int32_t>();
    auto wsat = [&](int o, int ci) -> int8_t { return ci < Cin ? w.ws[(size_t)o * Cin + ci] : 0; };
    for (int g = 0; g < G; ++g)
      for (int o = 0; o < Cout; ++o)
        ws[(size_t)g * CoutP + o] = (int32_t)word(wsat(o, 4 * g), wsat(o, 4 * g + 1), wsat(o, 4 * g + 2), wsat(o, 4 * g + 3));
    for (int o = 0; o < Cout; ++o) {
      pb->ss.as<float>()[o] = w.x_scale * w.ws_scale[o];
      pb->bs.as<float>()[o] = w.bs[o];
    }
  }
  return pb;
}

BlockDims block_dims(const PackedBlockInt8& pb) { return BlockDims{pb.C, pb.Cin, pb.Cout}; }

// ---------------------------------------------------------------------------------------------------------
// Instruction-set choice.
namespace {

bool cpu_has8(const std::string& name) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (name == "avx512vnni")
    return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  if (name == "avxvnni") return avx2 && __builtin_cpu_supports("avxvnni");
  if (name == "avx2") return avx2;
#endif
  return name == "portable";
}

const IsaOps8* compiled8(const std::string& name) {
#if defined(GATEKIT_HAVE_AVX512VNNI)
  if (name == "avx512vnni") return &detail8::isa8_avx512vnni_ops;
#endif
#if defined(GATEKIT_HAVE_AVXVNNI)
  if (name == "avxvnni") return &detail8::isa8_avxvnni_ops;
#endif
#if defined(GATEKIT_HAVE_AVX2)
  if (name == "avx2") return &detail8::isa8_avx2_ops;
#endif
  if (name == "portable") return &detail8::isa8_portable_ops;
  return nullptr;
}

// A name of GATEKIT_OPS_ISA as an int8 path: the fp32 kernel's "avx512" is the int8 kernel's "avx512vnni".
std::string int8_name(const std::string& name) { return name == "avx512" ? "avx512vnni" : name; }

struct IsaChoice8 {
  const IsaOps8* ops = &detail8::isa8_portable_ops;
  bool honoured = true;
};

const IsaChoice8& isa_choice8() {
  static const IsaChoice8 choice = [] {
    IsaChoice8 c;
    for (const char* name : {"avx512vnni", "avxvnni", "avx2", "portable"}) {
      const IsaOps8* ops = compiled8(name);
      if (ops && cpu_has8(name)) {
        c.ops = ops;
        break;
      }
    }
    const char* env = std::getenv("GATEKIT_OPS_ISA");
    if (env && *env) {
      const std::string want = int8_name(env);
      const IsaOps8* ops = compiled8(want);
      if (ops && cpu_has8(want))
        c.ops = ops;
      else
        c.honoured = false;
    }
    return c;
  }();
  return choice;
}

const IsaOps8& isa_by_choice() { return *isa_choice8().ops; }

}  // namespace

const char* int8_isa_compiled() {
  return
#if defined(GATEKIT_HAVE_AVX512VNNI)
      "avx512vnni,"
#endif
#if defined(GATEKIT_HAVE_AVXVNNI)
      "avxvnni,"
#endif
#if defined(GATEKIT_HAVE_AVX2)
      "avx2,"
#endif
      "portable";
}
bool int8_isa_supported(const char* name) {
  const std::string n = int8_name(name ? name : "");
  return compiled8(n) != nullptr && cpu_has8(n);
}
const char* int8_isa_selected() { return isa_choice8().ops->name; }
bool int8_isa_request_honoured() { return isa_choice8().honoured; }

std::string build_info_int8_json() {
  std::string s = "\"int8_isa_compiled\": [";
  const std::string list = int8_isa_compiled();
  size_t start = 0;
  for (bool first = true; start <= list.size(); first = false) {
    size_t end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    s += (first ? "\"" : ", \"") + list.substr(start, end - start) + "\"";
    start = end + 1;
  }
  s += std::string("], \"int8_isa_selected\": \"") + int8_isa_selected() + "\"";
  s += std::string(", \"int8_isa_request_honoured\": ") + (int8_isa_request_honoured() ? "true" : "false");
  return s;
}

// ---------------------------------------------------------------------------------------------------------
// One call.
namespace {

// Work per task (multiply-adds): about 25-50 microseconds of one core with 16-lane vpdpbusd (64 multiply-adds an
// instruction, against the fp32 kernel's 16 per FMA: gated_block.cpp, kTaskWork); half of it with several threads,
// so that a thread that starts late takes fewer tasks; and no task below kMinTaskWork.
constexpr double kTaskWork = 8e6;
constexpr double kTaskWorkThreaded = 4e6;
constexpr double kMinTaskWork = 3e5;

int ceil_div(int64_t a, int64_t b) { return (int)((a + b - 1) / b); }

// Number of tasks for `work` multiply-adds on `threads` threads (as gated_block.cpp's task_target).
int task_target(double work, int threads) {
  const double per_task = threads > 1 ? kTaskWorkThreaded : kTaskWork;
  int target = std::max(1, std::min(64, (int)(work / per_task + 0.5)));
  if (threads > 1) {
    const int most = std::max(1, std::min(64, (int)(work / kMinTaskWork)));
    const int balanced = (target + threads - 1) / threads * threads;
    if (balanced <= most)
      target = balanced;
    else if (most >= threads)
      target = most / threads * threads;
  }
  return target;
}

int gcd_int(int a, int b) {
  while (b) {
    const int t = a % b;
    a = b;
    b = t;
  }
  return a;
}

// Ho rows in bands of at least min_px pixels, at most `target` bands, rows rounded so that a band fills whole
// vectors where possible.
int band_rows(int Ho, int Wo, int lanes, int target, int min_px) {
  const int min_rows = std::max(1, ceil_div(min_px, Wo));
  const int nb = std::max(1, std::min(target, Ho / min_rows));
  int rows = ceil_div(Ho, nb);
  const int unit = lanes / gcd_int(Wo, lanes);
  if (unit > 1 && unit < Ho) rows = std::min(Ho, ceil_div(rows, unit) * unit);
  return std::max(1, rows);
}

struct CallScratch8 {
  bool busy = false;
  std::vector<float> decided;  // the gate's mask
  std::vector<int32_t> act, nact;
  std::vector<const int32_t*> qw;
  std::vector<uint8_t> qbuild;
  std::vector<size_t> hoff;
  std::vector<int> bad;
  Bytes h, w2c, xs;
  std::vector<Task1> t1;
  std::vector<Task2> t2;
};

// Per-thread quantized band of x (prep planes), reused across tasks of the same band and call.
struct PrepScratch8 {
  Bytes buf;
  uint64_t call = 0;
  int n = -1, r0 = -1, r1 = -1;
};

thread_local CallScratch8 tls_call8;
thread_local PrepScratch8 tls_prep8;
std::atomic<uint64_t> g_call_counter8{0};

struct Run1 {
  const Plan8* plan;
  const Task1* tasks;
  const IsaOps8* isa;
  uint64_t call;
  std::atomic<int>* failed;
};
struct Run2 {
  const Plan8* plan;
  const Task2* tasks;
  const IsaOps8* isa;
};

void run_task1(void* arg, size_t i) {
  const Run1& r = *static_cast<const Run1*>(arg);
  const Task1& t = r.tasks[i];
  const Plan8& p = *r.plan;
  const Prep8 g = detail8::prep_geom8(p, t.r0, t.r1);
  PrepScratch8& ps = tls_prep8;
  if (!(ps.call == r.call && ps.n == t.n && ps.r0 == t.r0 && ps.r1 == t.r1)) {
    try {
      ps.buf.ensure(g.total * 4);
    } catch (...) {
      r.failed->store(1);
      ps.call = 0;
      return;
    }
    r.isa->prep(p, t.n, t.r0, t.r1, ps.buf.as<uint32_t>(), g);
    ps.call = r.call;
    ps.n = t.n;
    ps.r0 = t.r0;
    ps.r1 = t.r1;
  }
  const uint32_t* prep = ps.buf.as<uint32_t>();
  if (p.xs && t.j0 == 0) {
    // The shortcut's input for this band: prep plane 1 (stride 1: padded column c + 1, rows shifted by one) or 3
    // (stride 2: padded row 2r + 1, column 2c + 1) is qx at the shortcut's sample points.
    const size_t plane = p.S == 1 ? 1 : 3, row0 = p.S == 1 ? 1 : 0;
    const size_t count = (size_t)(t.r1 - t.r0) * p.Wo;
    uint32_t* dst = p.xs + (size_t)t.n * p.w.G * p.P + (size_t)t.r0 * p.Wo;
    const uint32_t* src = prep + plane * g.ps + row0 * p.Wo;
    for (int gq = 0; gq < p.w.G; ++gq) std::memcpy(dst + (size_t)gq * p.P, src + (size_t)gq * g.cs, count * 4);
  }
  if (t.r0 == 0) {
    // conv2's weight quads of the task's channels that the dense packing does not hold.
    const int32_t* act = p.act + (size_t)t.n * p.AC;
    const size_t row2 = (size_t)9 * p.w.CoutP;
    for (int q = t.j0 / 4; q < t.j1 / 4; ++q) {
      const size_t k = (size_t)t.n * p.QC + q;
      if (!p.qbuild[k]) continue;
      const int8_t* rw[4];
      for (int i = 0; i < 4; ++i) rw[i] = p.w.w2t + (size_t)act[4 * q + i] * row2;
      r.isa->interleave(rw[0], rw[1], rw[2], rw[3], row2, const_cast<int32_t*>(p.qw[k]));
    }
  }
  r.isa->conv1(p, t, prep, g);
}

void run_task2(void* arg, size_t i) {
  const Run2& r = *static_cast<const Run2*>(arg);
  r.isa->conv2(*r.plan, r.tasks[i]);
}

// Both passes in one parallel region, exactly as gated_block.cpp's RunBoth: each worker claims conv1 tasks (its
// home share first, then what is left of the others), waits until every claimed conv1 task has finished, then
// claims conv2 tasks.
constexpr int kMaxParts = 64;
struct RunBoth {
  Run1* r1;
  Run2* r2;
  size_t n1;
  int parts;
  std::atomic<size_t> done1{0};
  std::atomic<size_t> next1[kMaxParts], next2[kMaxParts];
  size_t end1[kMaxParts], end2[kMaxParts];
};

inline void spin_pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

std::atomic<int> g_thread_counter8{0};
thread_local int tl_home8 = -1;

template <typename Fn>
void claim_all(std::atomic<size_t>* next, const size_t* end, int parts, int home, Fn&& run) {
  for (int k = 0; k < parts; ++k) {
    const int q = (home + k) % parts;
    for (size_t i; (i = next[q].fetch_add(1, std::memory_order_relaxed)) < end[q];) run(i);
  }
}

template <typename T, typename W>
void split_shares(const T* tasks, size_t count, int parts, W work, std::atomic<size_t>* next, size_t* end) {
  double total = 0;
  for (size_t i = 0; i < count; ++i) total += work(tasks[i]);
  size_t i = 0;
  double acc = 0;
  for (int q = 0; q < parts; ++q) {
    next[q].store(i, std::memory_order_relaxed);
    const double goal = total * (q + 1) / parts;
    while (i < count && (q == parts - 1 || acc + 0.5 * work(tasks[i]) < goal)) acc += work(tasks[i++]);
    end[q] = i;
  }
}

double share_work1(const Task1& t) { return (double)(t.r1 - t.r0) * (t.j1 - t.j0 + 1); }
double share_work2(const Task2& t) { return (double)(t.r1 - t.r0) * (t.co1 - t.co0); }

void run_worker(void* arg, size_t) {
  RunBoth& r = *static_cast<RunBoth*>(arg);
  if (tl_home8 < 0) tl_home8 = g_thread_counter8.fetch_add(1, std::memory_order_relaxed);
  const int home = tl_home8 % r.parts;
  claim_all(r.next1, r.end1, r.parts, home, [&](size_t i) {
    run_task1(r.r1, i);
    r.done1.fetch_add(1, std::memory_order_release);
  });
  for (int spins = 0; r.done1.load(std::memory_order_acquire) < r.n1; ++spins) {
    if (spins < 4000)
      spin_pause();
    else
      std::this_thread::yield();
  }
  if (r.r1->failed->load(std::memory_order_relaxed)) return;
  claim_all(r.next2, r.end2, r.parts, home, [&](size_t i) { run_task2(r.r2, i); });
}

void plan_tasks(const Plan8& p, int lanes, int threads, std::vector<Task1>& t1, std::vector<Task2>& t2) {
  t1.clear();
  t2.clear();
  const int Ho = p.Ho, Wo = p.Wo, G = p.w.G, CoutP = p.w.CoutP;
  const int Ks = p.w.wsq ? G : 0;  // the shortcut's K steps in conv2
  for (int n = 0; n < p.N; ++n) {
    const int A4 = (p.nact[n] + 3) / 4;
    if (A4 == 0) {
      // No active channel: prep-only tasks, by row band (the non-finite check; the shortcut's xs).
      const int target = task_target((double)G * 4 * 9 * p.P, threads);
      const int rows = band_rows(Ho, Wo, lanes, target, 256);
      for (int r0 = 0; r0 < Ho; r0 += rows) t1.push_back(Task1{n, r0, std::min(Ho, r0 + rows), 0, 0});
    } else {
      const double work = (double)A4 * 4 * G * 4 * 9 * p.P;
      const int target = task_target(work, threads);
      int rows = band_rows(Ho, Wo, lanes, target, 256);  // bands re-quantize 2 halo rows of x
      int nb = ceil_div(Ho, rows);
      if (threads > 1 && nb < threads && p.P >= 256 && Ho >= 2 * threads) {
        // One band per thread rather than channel groups of one band, which every thread would quantize whole.
        rows = ceil_div(Ho, threads);
        nb = ceil_div(Ho, rows);
      }
      int ng = std::max(1, std::min(ceil_div(target, nb), std::max(1, A4 / 2)));  // groups of 2 quads or more
      if (nb * ng < threads) rows = ceil_div(Ho, std::min(Ho, ceil_div(threads, ng)));
      nb = ceil_div(Ho, rows);
      const int gsz = ceil_div(A4, ng);
      for (int b = 0; b < nb; ++b)
        for (int q0 = 0; q0 < A4; q0 += gsz)
          t1.push_back(Task1{n, b * rows, std::min(Ho, (b + 1) * rows), 4 * q0, 4 * std::min(A4, q0 + gsz)});
    }
    const double work2 = (double)CoutP * (A4 * 4 * 9 + Ks * 4) * p.P;
    const int target2 = task_target(work2, threads);
    const int rows2 = band_rows(Ho, Wo, lanes, target2, 3 * lanes);
    const int nb2 = ceil_div(Ho, rows2);
    int ng2 = std::max(1, std::min(ceil_div(target2, nb2), CoutP / 8));
    if (threads > 1 && nb2 * ng2 < threads) ng2 = std::min(CoutP / 4, ceil_div(threads, nb2));
    const int gsz2 = round_up(ceil_div(CoutP, ng2), 4);
    for (int b = 0; b < nb2; ++b)
      for (int c0 = 0; c0 < CoutP; c0 += gsz2)
        t2.push_back(Task2{n, b * rows2, std::min(Ho, (b + 1) * rows2), c0, std::min(CoutP, c0 + gsz2)});
  }
}

std::string run_block_int8_impl(const PackedBlockInt8& pb, const BlockIO& io, ParallelForFn pf, void* pf_ctx,
                                const IsaOps8* isa, const Int8Probe* probe, CallScratch8& cs) {
  if (io.stride != 1 && io.stride != 2) return "stride must be 1 or 2";
  if (io.n < 0 || io.h <= 0 || io.w <= 0) return "bad input size";
  if (io.n == 0) return std::string();
  if (!io.x || !(io.mask || io.gate) || !(io.residual || pb.shortcut) || !io.y) return "missing tensor data";
  if (io.h > (1 << 15) || io.w > (1 << 15) || io.n > (1 << 20)) return "input too large";

  Plan8 p;
  p.w = pb.view();
  p.N = (int)io.n;
  p.H = (int)io.h;
  p.W = (int)io.w;
  p.S = io.stride;
  p.Ho = (int)out_size(io.h, io.stride);
  p.Wo = (int)out_size(io.w, io.stride);
  p.P = p.Ho * p.Wo;
  p.x = io.x;
  p.res = pb.shortcut ? nullptr : io.residual;
  p.y = io.y;
  p.probe = probe;

  const int C = pb.C;
  const float* mask = io.mask;
  if (io.gate) {
    const GateDims gd = gate_dims(*io.gate);
    if (gd.cin != pb.Cin || gd.c != C) return "the gate does not fit the block";
    cs.decided.resize((size_t)p.N * C);
    gate_mask(*io.gate, io.x, io.n, io.h, io.w, cs.decided.data());
    mask = cs.decided.data();
  }
  p.AC = pb.C4 * 4;
  p.QC = pb.C4;
  cs.act.assign((size_t)p.N * p.AC, C);
  cs.nact.resize(p.N);
  cs.qw.assign((size_t)p.N * p.QC, nullptr);
  cs.qbuild.assign((size_t)p.N * p.QC, 0);
  cs.hoff.resize(p.N);
  cs.bad.assign(p.N, 0);
  p.h_ps = (size_t)(p.Ho + 2) * p.Wo;
  p.h_cs = (3 * p.h_ps + 15) & ~(size_t)15;
  const size_t row2 = (size_t)9 * pb.CoutP;
  size_t htotal = 0, nbuild = 0;
  for (int n = 0; n < p.N; ++n) {
    const float* m = mask + (size_t)n * C;
    int32_t* act = cs.act.data() + (size_t)n * p.AC;
    int a = 0;
    for (int c = 0; c < C; ++c)
      if (m[c] != 0.0f) act[a++] = c;
    cs.nact[n] = a;
    cs.hoff[n] = htotal;
    const int a4 = (a + 3) / 4;
    htotal += (size_t)a4 * p.h_cs;
    for (int q = 0; q < a4; ++q) {
      // A quad of 4 consecutive channels from a multiple of 4 (padded past C) is one of the dense packing's.
      const int c0 = act[4 * q];
      bool dense = c0 % 4 == 0;
      for (int i = 1; i < 4 && dense; ++i) dense = act[4 * q + i] == (c0 + i < C ? c0 + i : C);
      if (dense)
        cs.qw[(size_t)n * p.QC + q] = p.w.w2d + (size_t)(c0 / 4) * row2;
      else
        cs.qbuild[(size_t)n * p.QC + q] = 1, ++nbuild;
    }
  }
  try {
    cs.h.ensure((htotal + 256) * 4);
    cs.w2c.ensure((nbuild * row2 + 64) * 4);
    if (pb.shortcut) cs.xs.ensure(((size_t)p.N * pb.G * p.P + 256) * 4);  // slack: tiles read whole vectors
  } catch (...) {
    return "out of memory";
  }
  size_t slot = 0;
  for (size_t k = 0; k < cs.qw.size(); ++k)
    if (cs.qbuild[k]) cs.qw[k] = cs.w2c.as<int32_t>() + (slot++) * row2;
  p.act = cs.act.data();
  p.nact = cs.nact.data();
  p.qw = cs.qw.data();
  p.qbuild = cs.qbuild.data();
  p.h = cs.h.as<uint32_t>();
  p.hoff = cs.hoff.data();
  p.xs = pb.shortcut ? cs.xs.as<uint32_t>() : nullptr;
  p.bad = cs.bad.data();

  try {
    plan_tasks(p, isa->lanes, io.threads, cs.t1, cs.t2);
  } catch (...) {
    return "out of memory";
  }

  std::atomic<int> failed{0};
  Run1 r1{&p, cs.t1.data(), isa, g_call_counter8.fetch_add(1) + 1, &failed};
  Run2 r2{&p, cs.t2.data(), isa};
  const size_t most = std::max(cs.t1.size(), cs.t2.size());
  if (io.threads > 1 && most > 1) {
    const size_t workers = std::min(most, (size_t)io.threads);
    RunBoth both;
    both.r1 = &r1;
    both.r2 = &r2;
    both.n1 = cs.t1.size();
    both.parts = (int)std::min(workers, (size_t)kMaxParts);
    split_shares(cs.t1.data(), cs.t1.size(), both.parts, share_work1, both.next1, both.end1);
    split_shares(cs.t2.data(), cs.t2.size(), both.parts, share_work2, both.next2, both.end2);
    pf(pf_ctx, workers, &run_worker, &both);
    return failed.load() ? "out of memory" : std::string();
  }
  if (!cs.t1.empty()) pf(pf_ctx, cs.t1.size(), &run_task1, &r1);
  if (failed.load()) return "out of memory";
  pf(pf_ctx, cs.t2.size(), &run_task2, &r2);
  return std::string();
}

}  // namespace

std::string run_block_int8(const PackedBlockInt8& pb, const BlockIO& io, ParallelForFn pf, void* pf_ctx,
                           const char* isa_name, const Int8Probe* probe) {
  if (!pf) pf = &serial_parallel_for;
  const IsaOps8* isa = isa_choice8().ops;
  if (isa_name) {
    const std::string want = int8_name(isa_name);
    isa = compiled8(want);
    if (!isa || !cpu_has8(want)) return "int8 kernel path " + want + " is not available here";
  }
  struct Hold {
    CallScratch8* cs;
    explicit Hold(CallScratch8* c) : cs(c) { cs->busy = true; }
    ~Hold() { cs->busy = false; }
  };
  try {
    if (!tls_call8.busy) {
      Hold hold(&tls_call8);
      return run_block_int8_impl(pb, io, pf, pf_ctx, isa, probe, tls_call8);
    }
    CallScratch8 own;  // a nested call on this thread (a pool running another block while it waits)
    Hold hold(&own);
    return run_block_int8_impl(pb, io, pf, pf_ctx, isa, probe, own);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown error";
  }
}

}  // namespace gatekit
