// Weight packing, instruction-set dispatch and the per-call plan (active channels, scratch, task split).
#include "gated_block.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "channel_gate.h"
#include "plan.h"

#ifndef GATEKIT_COMPILER
#define GATEKIT_COMPILER "unknown"
#endif

namespace gatekit {

using detail::IsaOps;
using detail::Plan;
using detail::PrepGeom;
using detail::Task1;
using detail::Task2;

namespace {

// Packed weights of at least this size go on 2 MiB pages where the kernel offers them (Linux transparent
// huge pages, "madvise" or "always" mode): with 25% of the channels active, the scattered W2 blocks touch
// every 4 KiB page of a block's weights for a quarter of the work, and the TLB misses (two-level page walks
// under a hypervisor) cost measurably: 3-13% of a 512@4x4 or 256->512 stride-2 block on this machine.
constexpr size_t kHugePageBytes = size_t(2) << 20;
constexpr size_t kHugeMinBytes = kHugePageBytes / 2;

// 64-byte aligned float buffer, zero-filled when (re)allocated so that no lane ever reads garbage bits.
// `huge`: large buffers are 2 MiB aligned and advised onto huge pages (a hint; without THP nothing changes).
// They are mapped fresh (anonymous mmap), not taken from malloc: malloc serves even 2 MiB-aligned requests
// from its heap, whose pages an earlier allocation may already have touched, and madvise does not turn
// touched 4 KiB pages into a huge page (only khugepaged does, later and partly).  Measured on the AMD host:
// with posix_memalign, 2-12 MB of a full-width network's packed weights were on huge pages, now 28 MB; OpenVINO,
// 2 threads, full width 32 px t_d 0.3: native / static 0.98 -> 0.92 (medians of 6 and 16 processes).
struct AlignedBuf {
  float* p = nullptr;
  size_t n = 0;
  AlignedBuf() = default;
  AlignedBuf(const AlignedBuf&) = delete;
  AlignedBuf& operator=(const AlignedBuf&) = delete;
  ~AlignedBuf() { release(); }
  void ensure(size_t count, bool huge = false) {
    if (count <= n) return;
    const size_t want = std::max(count, n + n / 2);
    const size_t bytes = want * sizeof(float);
    void* q = nullptr;
    void* base = nullptr;
    size_t mapped = 0;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (huge && bytes >= kHugeMinBytes) {
      // Whole 2 MiB pages, the last one included (memory not used: less than 2 MiB and less than the buffer
      // itself), plus one page of address space to align the start.
      const size_t span = (bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
      mapped = span + kHugePageBytes;
      base = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (base == MAP_FAILED) throw std::bad_alloc();
      q = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(base) + kHugePageBytes - 1) & ~(kHugePageBytes - 1));
      madvise(q, span, MADV_HUGEPAGE);  // before the first touch; a failure is harmless
    }
#else
    (void)huge;
#endif
    if (!q && (posix_memalign(&q, 64, bytes) != 0 || q == nullptr)) throw std::bad_alloc();
    std::memset(q, 0, bytes);  // touches every page now, at load, not in the first call
    release();
    p = static_cast<float*>(q);
    n = want;
    m_base = base;
    m_mapped = mapped;
  }

 private:
  void* m_base = nullptr;  // the mmap'ed region holding p, or null (p from posix_memalign)
  size_t m_mapped = 0;
  void release() {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (m_mapped) {
      munmap(m_base, m_mapped);
      return;
    }
#endif
    std::free(p);
  }
};

}  // namespace

struct PackedBlock {
  int C = 0, Cin = 0, Cout = 0, Cout8 = 0, wb = 8, CoutB = 0;
  AlignedBuf w1, w1d, b1, w2p, w2r, b2, wsp;
  bool shortcut = false, dot = false, rows = false;
  detail::PackedView view() const {
    detail::PackedView v;
    v.C = C;
    v.Cin = Cin;
    v.Cout = Cout;
    v.Cout8 = Cout8;
    v.wb = wb;
    v.CoutB = CoutB;
    v.w1 = w1.p;
    v.w1d = dot ? w1d.p : nullptr;
    v.b1 = b1.p;
    v.w2p = w2p.p;
    v.w2r = rows ? w2r.p : nullptr;
    v.b2 = b2.p;
    v.wsp = shortcut ? wsp.p : nullptr;
    return v;
  }
};

std::shared_ptr<const PackedBlock> pack_block(const float* w1, const float* b1, const float* w2, const float* b2,
                                              int64_t c, int64_t cin, int64_t cout, const float* ws,
                                              const float* bs) {
  if (c <= 0 || cin <= 0 || cout <= 0 || c > (1 << 20) || cin > (1 << 20) || cout > (1 << 20))
    throw std::invalid_argument("GatedBlock: bad weight sizes");
  if (!w1 || !b1 || !w2 || !b2) throw std::invalid_argument("GatedBlock: missing weight data");
  if (!ws != !bs) throw std::invalid_argument("GatedBlock: the shortcut needs both Ws and bs");
  auto pb = std::make_shared<PackedBlock>();
  pb->C = (int)c;
  pb->Cin = (int)cin;
  pb->Cout = (int)cout;
  pb->Cout8 = (int)((cout + 7) / 8 * 8);
  const size_t K9 = (size_t)cin * 9;
  // conv1: OIHW unchanged, one contiguous row of Cin*9 per inner channel.
  pb->w1.ensure((size_t)c * K9 + 64, true);
  std::memcpy(pb->w1.p, w1, (size_t)c * K9 * sizeof(float));
  // conv1's channel-dot form (small maps, paths that have it): [C][9][Cin], the input channels of one tap contiguous.
  const detail::IsaOps& isa = detail::selected_isa();
  if (isa.conv1_dot_maxw > 0 && cin % isa.lanes == 0) {
    pb->dot = true;
    pb->w1d.ensure((size_t)c * K9 + 64, true);
    for (int64_t j = 0; j < c; ++j)
      for (int t = 0; t < 9; ++t)
        for (int64_t ci = 0; ci < cin; ++ci) pb->w1d.p[((size_t)j * 9 + t) * cin + ci] = w1[((size_t)j * cin + ci) * 9 + t];
  }
  pb->b1.ensure((size_t)c + 16);
  std::memcpy(pb->b1.p, b1, (size_t)c * sizeof(float));
  // conv2: [CoutB/wb][C][9][wb], zero padded output channels; wb is the selected path's block width (8, or 16:
  // one AVX-512 vector, which conv2's output-channel tiles load whole).
  const int wb = isa.w2_block;
  pb->wb = wb;
  pb->CoutB = (int)((cout + wb - 1) / wb * wb);
  pb->w2p.ensure((size_t)pb->CoutB * c * 9 + 64, true);
  float* d = pb->w2p.p;
  for (int cb = 0; cb < pb->CoutB / wb; ++cb)
    for (int ci = 0; ci < c; ++ci)
      for (int t = 0; t < 9; ++t)
        for (int m = 0; m < wb; ++m) {
          const int co = cb * wb + m;
          d[(((size_t)cb * c + ci) * 9 + t) * wb + m] = co < cout ? w2[((size_t)co * c + ci) * 9 + t] : 0.0f;
        }
  // conv2 again for the row tiles (small maps, paths with channel tiles): [CoutR/kRowGroup][C][9][kRowGroup].
  // OpenVINO, 1 thread, 30% active, 16 rotating masks (the weights come from memory), op / static against
  // the [CoutB/wb] packing: 512@5x5 1.51 -> 1.37, 256@9x9 1.10 -> 1.06 (medians of 3 process pairs).
  if (isa.channel_tiles) {
    constexpr int G = detail::kRowGroup;
    const int groups = (int)((cout + G - 1) / G);
    pb->rows = true;
    pb->w2r.ensure((size_t)groups * G * c * 9 + 64, true);
    float* r = pb->w2r.p;
    for (int g = 0; g < groups; ++g)
      for (int ci = 0; ci < c; ++ci)
        for (int t = 0; t < 9; ++t)
          for (int m = 0; m < G; ++m) {
            const int co = g * G + m;
            r[(((size_t)g * c + ci) * 9 + t) * G + m] = co < cout ? w2[((size_t)co * c + ci) * 9 + t] : 0.0f;
          }
  }
  pb->b2.ensure((size_t)pb->CoutB + 16);
  std::memcpy(pb->b2.p, b2, (size_t)cout * sizeof(float));
  if (ws) {
    // Projection shortcut: [CoutB/wb][Cin][wb] (one row of wb floats per input channel and block of outputs),
    // its bias folded into b2 (the epilogue adds one bias).
    pb->shortcut = true;
    pb->wsp.ensure((size_t)pb->CoutB * cin + 64, true);
    float* e = pb->wsp.p;
    for (int cb = 0; cb < pb->CoutB / wb; ++cb)
      for (int ci = 0; ci < cin; ++ci)
        for (int m = 0; m < wb; ++m) {
          const int co = cb * wb + m;
          e[((size_t)cb * cin + ci) * wb + m] = co < cout ? ws[(size_t)co * cin + ci] : 0.0f;
        }
    for (int co = 0; co < cout; ++co) pb->b2.p[co] += bs[co];
  }
  return pb;
}

BlockDims block_dims(const PackedBlock& pb) { return BlockDims{pb.C, pb.Cin, pb.Cout}; }

void serial_parallel_for(void*, size_t n, TaskFn fn, void* arg) {
  for (size_t i = 0; i < n; ++i) fn(arg, i);
}

// ---------------------------------------------------------------------------------------------------------
// Instruction-set choice.
namespace {

struct IsaChoice {
  const IsaOps* ops = &detail::isa_portable_ops;
  std::string requested;
  bool honoured = true;
};

bool cpu_has(const char* name) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (std::strcmp(name, "avx512") == 0)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
  if (std::strcmp(name, "avx2") == 0) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return std::strcmp(name, "portable") == 0;
}

const IsaOps* compiled_isa(const std::string& name) {
#if defined(GATEKIT_HAVE_AVX512)
  if (name == "avx512") return &detail::isa_avx512_ops;
#endif
#if defined(GATEKIT_HAVE_AVX2)
  if (name == "avx2") return &detail::isa_avx2_ops;
#endif
  if (name == "portable") return &detail::isa_portable_ops;
  return nullptr;
}

const IsaChoice& isa_choice() {
  static const IsaChoice choice = [] {
    IsaChoice c;
    const char* best_order[] = {"avx512", "avx2", "portable"};
    for (const char* name : best_order) {
      const IsaOps* ops = compiled_isa(name);
      if (ops && cpu_has(name)) {
        c.ops = ops;
        break;
      }
    }
    const char* env = std::getenv("GATEKIT_OPS_ISA");
    if (env && *env) {
      c.requested = env;
      // The int8 kernel's path names (gated_block_int8.h) pick the fp32 path of the same vector width.
      const std::string want = c.requested == "avx512vnni" ? "avx512" : c.requested == "avxvnni" ? "avx2" : c.requested;
      const IsaOps* ops = compiled_isa(want);
      if (ops && cpu_has(want.c_str()))
        c.ops = ops;
      else
        c.honoured = false;
    }
    return c;
  }();
  return choice;
}

}  // namespace

const char* isa_compiled() {
  return
#if defined(GATEKIT_HAVE_AVX512)
      "avx512,"
#endif
#if defined(GATEKIT_HAVE_AVX2)
      "avx2,"
#endif
      "portable";
}
const char* isa_selected() { return isa_choice().ops->name; }
const detail::IsaOps& detail::selected_isa() { return *isa_choice().ops; }
const char* isa_requested() { return isa_choice().requested.c_str(); }
bool isa_request_honoured() { return isa_choice().honoured; }
bool has_channel_tiles() { return isa_choice().ops->channel_tiles; }
bool has_conv1_dot() { return isa_choice().ops->conv1_dot_maxw > 0; }

std::string build_info_common_json() {
  std::string s;
  s += "\"version\": \"" GATEKIT_OPS_VERSION "\", ";
  s += "\"compiler\": \"" GATEKIT_COMPILER "\", ";
#if defined(__x86_64__)
  s += "\"arch\": \"x86_64\", ";
#elif defined(__aarch64__)
  s += "\"arch\": \"aarch64\", ";
#else
  s += "\"arch\": \"other\", ";
#endif
  s += "\"isa_compiled\": [";
  std::string list = isa_compiled();
  size_t start = 0;
  bool first = true;
  while (start <= list.size()) {
    size_t end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    s += (first ? "\"" : ", \"") + list.substr(start, end - start) + "\"";
    first = false;
    start = end + 1;
  }
  s += "], ";
  s += std::string("\"isa_selected\": \"") + isa_selected() + "\", ";
  std::string req;
  for (char ch : isa_choice().requested)
    if (ch != '"' && ch != '\\' && (unsigned char)ch >= 0x20) req += ch;
  s += "\"isa_requested\": \"" + req + "\", ";
  s += std::string("\"isa_request_honoured\": ") + (isa_request_honoured() ? "true" : "false");
  s += std::string(", \"conv2_channel_tiles\": ") + (has_channel_tiles() ? "true" : "false");
  s += std::string(", \"conv1_channel_dots\": ") + (has_conv1_dot() ? "true" : "false");
  return s;
}

// ---------------------------------------------------------------------------------------------------------
// One call.
namespace {

// Work per task (multiply-adds): about 25-50 microseconds of one core.  Fewer, larger tasks keep the
// register tiles full (a task splits into tiles on its own) and re-copy fewer halo rows of x.  With several
// threads, half that: finer tasks let a thread that starts late (a pool's wake-up, 5-9 us here) take fewer of
// them.  Measured on OpenVINO, full-width ResNet-18 at 32 px, 2 threads: 2e6 gave 0.95x / 0.97x the op time
// at t_d 0.1 / 0.3 (3 alternating process pairs each, every pair faster); at 1 thread it cost 4%.
constexpr double kTaskWork = 4e6;
constexpr double kTaskWorkThreaded = 2e6;
// Below this much work a task is not worth handing to another thread (~3 microseconds of one core; both
// passes share one parallel region, so a split block costs one fork and join, not two).  Measured at x0.25,
// 2 threads: with 5e5 most blocks ran serially; 1.5e5 with the shared region is 7% faster on OpenVINO.
constexpr double kMinTaskWork = 1.5e5;

// conv2 runs output-channel tiles (where the instruction-set path has them) when it has at least
// kChannelTileMinK K steps (9 per active channel, plus the shortcut's input channels) and either the map has at
// most kChannelTileMaxPixels pixels or the block at least kChannelTileMinCout output channels.  Pixel vectors
// waste lanes on a small map's tail (25 pixels fill 2 vectors of 16) and, on AVX-512, read W2 in half blocks;
// the channel tiles pay a transpose per tile, which a short K loop does not repay.  Measured with
// native/bench_block.py (ORT, 1 thread, 25/50/100% active, both forms forced in one sitting), all channels on:
//   --size 34: 9x9 and 5x5 blocks 0-20% faster in channel tiles; 64@34x34 1.24 -> 1.31x dense, 128@17x17
//              1.19 -> 1.29x (and 1.14 -> 1.29x at 50%), 64->128@17 stride 2 1.22 -> 1.24x: slower;
//   --size 98: 256@25x25 1.31 -> 1.19x, 512@13x13 1.16 -> 1.12x, 128->256@25 stride 2 1.28 -> 1.25x,
//              256->512@13 stride 2 1.24 -> 1.12x: faster at 256 output channels and more, 625 pixels included.
// Whole networks, ORT and OpenVINO, 1 and 2 threads, 4 alternating process pairs each: full width at 32 px 0-4%
// faster; x0.25 1-2% slower with no K limit, level with a limit of 300 (measured; 288 = 32 active channels is
// committed, which decides differently only where a call's K steps fall between 288 and 299).
// conv1 runs channel dots (Plan::conv1_dot) where the path has them for the map's width and the block has at
// least kConv1DotMinCin input channels (each output value ends with a sum across the lanes).  x0.25 network
// (input channels 32/64/128 on the 9x9 and 5x5 maps), OpenVINO 1 thread, alternating processes: native / static
// 0.69-0.70 at 64, 0.71-0.73 at 128, 0.69-0.70 at 32.
constexpr int kConv1DotMinCin = 64;
constexpr int kChannelTileMaxPixels = 128;
constexpr int kChannelTileMinCout = 256;
constexpr int kChannelTileMinK = 288;

// Number of tasks to aim at for `work` multiply-adds on `threads` threads: about kTaskWork each; with several
// threads, about kTaskWorkThreaded each, at least one per thread and a multiple of the thread count (tasks of
// equal work finish together), as long as each task keeps kMinTaskWork.
int task_target(double work, int threads) {
  const double per_task = threads > 1 ? kTaskWorkThreaded : kTaskWork;
  int target = std::max(1, std::min(64, (int)(work / per_task + 0.5)));
  if (threads > 1) {
    const int most = std::max(1, std::min(64, (int)(work / kMinTaskWork)));
    const int balanced = (target + threads - 1) / threads * threads;
    if (balanced <= most) target = balanced;
    else if (most >= threads) target = most / threads * threads;
  }
  return target;
}

struct CallScratch {
  bool busy = false;
  std::vector<float> decided;  // BlockIO::gate's mask
  std::vector<int32_t> act, nact, aoff2;
  std::vector<float> mval;
  std::vector<size_t> hoff;
  AlignedBuf h, xs;
  std::vector<Task1> t1;
  std::vector<Task2> t2;
};

// Per-thread copy of the current band of x (prep planes), reused across tasks of the same band.
struct PrepScratch {
  AlignedBuf buf;
  uint64_t call = 0;
  int n = -1, r0 = -1, r1 = -1;
};

thread_local CallScratch tls_call;
thread_local PrepScratch tls_prep;
std::atomic<uint64_t> g_call_counter{0};

struct Run1 {
  const Plan* plan;
  const Task1* tasks;
  const IsaOps* isa;
  uint64_t call;
  std::atomic<int>* failed;
};
struct Run2 {
  const Plan* plan;
  const Task2* tasks;
  const IsaOps* isa;
};

void run_task1(void* arg, size_t i) {
  const Run1& r = *static_cast<const Run1*>(arg);
  const Task1& t = r.tasks[i];
  const PrepGeom g = detail::prep_geom(*r.plan, t.r0, t.r1);
  PrepScratch& ps = tls_prep;
  if (!(ps.call == r.call && ps.n == t.n && ps.r0 == t.r0 && ps.r1 == t.r1)) {
    try {
      ps.buf.ensure(g.total);
    } catch (...) {
      r.failed->store(1);
      ps.call = 0;
      return;
    }
    r.isa->prep(*r.plan, t.n, t.r0, t.r1, ps.buf.p, g);
    ps.call = r.call;
    ps.n = t.n;
    ps.r0 = t.r0;
    ps.r1 = t.r1;
  }
  const Plan& p = *r.plan;
  if (p.xs && t.j0 == 0 && p.conv1_dot) {
    // The shortcut's input for this band, x[ci][S*r][S*c], straight from x (the prep rows are channels-last).
    const float* xn = p.x + (size_t)t.n * p.w.Cin * p.H * p.W;
    float* dst = p.xs + (size_t)t.n * p.w.Cin * p.P;
    for (int ci = 0; ci < p.w.Cin; ++ci)
      for (int r = t.r0; r < t.r1; ++r) {
        const float* s = xn + ((size_t)ci * p.H + (size_t)p.S * r) * p.W;
        float* d = dst + (size_t)ci * p.P + (size_t)r * p.Wo;
        for (int c = 0; c < p.Wo; ++c) d[c] = s[p.S * c];
      }
  } else if (p.xs && t.j0 == 0) {
    // The shortcut's input for this band: prep plane 1 (stride 1: padded column c + 1, rows shifted by one)
    // or 3 (stride 2: padded row 2r + 1, column 2c + 1) is x at the shortcut's sample points.
    const size_t plane = p.S == 1 ? 1 : 3, row0 = p.S == 1 ? 1 : 0;
    const size_t count = (size_t)(t.r1 - t.r0) * p.Wo;
    float* dst = p.xs + (size_t)t.n * p.w.Cin * p.P + (size_t)t.r0 * p.Wo;
    const float* src = ps.buf.p + plane * g.ps + row0 * p.Wo;
    for (int ci = 0; ci < p.w.Cin; ++ci) std::memcpy(dst + (size_t)ci * p.P, src + (size_t)ci * g.cs, count * sizeof(float));
  }
  r.isa->conv1(p, t, ps.buf.p, g);
}

void run_task2(void* arg, size_t i) {
  const Run2& r = *static_cast<const Run2*>(arg);
  r.isa->conv2(*r.plan, r.tasks[i]);
}

// Both passes in one parallel region: each of `workers` claims conv1 tasks until none is left, waits until
// every claimed conv1 task has finished (conv2 reads all of h), then claims conv2 tasks.  A worker waits only
// for tasks that a running worker has already claimed, so this is safe however parallel_for schedules the
// workers (one after another included); it saves a fork and join per block over one parallel_for per pass.
//
// Each task list is cut into one contiguous share per worker, of about equal work (rows x channels), and
// each pool thread keeps one home share (by thread, not by parallel_for's worker index, which a pool may
// hand to any thread): it runs its home share first, then takes what is left of the others.  The task
// lists are ordered by row band, so a thread keeps the same rows of the map from conv1 into conv2 and from
// block to block, and its caches hold the x and h it reads.  Measured against one shared list (OpenVINO and
// ORT, full width at 32 px, 2 threads, 4-5 alternating process pairs): 0.965-0.975x at t_d 0.3 and 0.5,
// 0.99-1.005x at t_d 0.1, x0.25 0.985-1.006x; 1.000x on ORT at 1 thread.  The threads' summed time in the
// op's 64@34x34 blocks fell by 10%.  Shares cut by task count (not work), or by worker index, were neutral.
constexpr int kMaxParts = 64;
struct RunBoth {
  Run1* r1;
  Run2* r2;
  size_t n1;  // conv1 tasks (conv2 waits until this many have finished)
  int parts;  // shares of each task list (the number of workers, at most kMaxParts)
  std::atomic<size_t> done1{0};
  std::atomic<size_t> next1[kMaxParts], next2[kMaxParts];  // cursor of each share, from its first task
  size_t end1[kMaxParts], end2[kMaxParts];                  // end of each share
};

inline void spin_pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// A thread's home share: threads are numbered in the order they first run a block, so a pool's threads keep
// their share from call to call and from block to block.
std::atomic<int> g_thread_counter{0};
thread_local int tl_home = -1;

// Run every task left in the shares (cursor next[p], end end[p]): the home share first, then the others.
template <typename Fn>
void claim_all(std::atomic<size_t>* next, const size_t* end, int parts, int home, Fn&& run) {
  for (int k = 0; k < parts; ++k) {
    const int p = (home + k) % parts;
    for (size_t i; (i = next[p].fetch_add(1, std::memory_order_relaxed)) < end[p];) run(i);
  }
}

// Cut a task list into `parts` contiguous shares of about equal work (work(t) of task t); the last takes
// the rest.
template <typename T, typename W>
void split_shares(const T* tasks, size_t count, int parts, W work, std::atomic<size_t>* next, size_t* end) {
  double total = 0;
  for (size_t i = 0; i < count; ++i) total += work(tasks[i]);
  size_t i = 0;
  double acc = 0;
  for (int p = 0; p < parts; ++p) {
    next[p].store(i, std::memory_order_relaxed);
    const double goal = total * (p + 1) / parts;
    while (i < count && (p == parts - 1 || acc + 0.5 * work(tasks[i]) < goal)) acc += work(tasks[i++]);
    end[p] = i;
  }
}

// The work estimates shares are cut by (rows x channels).
double share_work1(const Task1& t) { return (double)(t.r1 - t.r0) * (t.j1 - t.j0 + 1); }
double share_work2(const Task2& t) { return (double)(t.r1 - t.r0) * (t.co1 - t.co0); }

void run_worker(void* arg, size_t) {
  RunBoth& r = *static_cast<RunBoth*>(arg);
  if (tl_home < 0) tl_home = g_thread_counter.fetch_add(1, std::memory_order_relaxed);
  const int home = tl_home % r.parts;
  claim_all(r.next1, r.end1, r.parts, home, [&](size_t i) {
    run_task1(r.r1, i);
    r.done1.fetch_add(1, std::memory_order_release);
  });
  for (int spins = 0; r.done1.load(std::memory_order_acquire) < r.n1; ++spins) {
    if (spins < 4000) spin_pause();
    else std::this_thread::yield();
  }
  if (r.r1->failed->load(std::memory_order_relaxed)) return;
  claim_all(r.next2, r.end2, r.parts, home, [&](size_t i) { run_task2(r.r2, i); });
}

inline int ceil_div(int64_t a, int64_t b) { return (int)((a + b - 1) / b); }

int gcd_int(int a, int b) {
  while (b) {
    int t = a % b;
    a = b;
    b = t;
  }
  return a;
}

// Split Ho rows into bands of at least min_px pixels, at most `target` bands, rows rounded so that a band
// fills whole vectors where possible.
int band_rows(int Ho, int Wo, int lanes, int target, int min_px) {
  int min_rows = std::max(1, ceil_div(min_px, Wo));
  int nb = std::max(1, std::min(target, Ho / min_rows));
  int rows = ceil_div(Ho, nb);
  int unit = lanes / gcd_int(Wo, lanes);
  if (unit > 1 && unit < Ho) rows = std::min(Ho, ceil_div(rows, unit) * unit);
  return std::max(1, rows);
}

// Other band splits are weighed only when the rule's plan leaves its last thread running past this multiple of
// the mean work per thread (modelled, model_span), and one is taken only when modelled this much faster.
constexpr double kPlanImbalance = 1.1;
constexpr double kPlanMargin = 0.97;

// conv1 tasks of sample n for A active channels in bands of `rows` rows: each band cut into channel groups of
// whole 8-row tiles, about `target` tasks in all; or, with `groups` > 0, into that many groups of equal size.
void conv1_tasks(const Plan& p, int n, int A, int rows, int target, std::vector<Task1>& out, int groups = 0) {
  const int nb = ceil_div(p.Ho, rows);
  int ng = std::max(1, std::min(ceil_div(target, nb), std::max(1, A / 8)));
  const int gsz = groups > 0 ? ceil_div(A, std::min(groups, A)) : std::min(A, ceil_div(ceil_div(A, ng), 8) * 8);
  ng = ceil_div(A, gsz);
  for (int b = 0; b < nb; ++b)
    for (int g = 0; g < ng; ++g)
      out.push_back(Task1{n, b * rows, std::min(p.Ho, (b + 1) * rows), g * gsz, std::min(A, (g + 1) * gsz)});
}

// conv2 tasks of sample n in bands of `rows` rows, each cut into channel groups, about `target` tasks in all.
// With fewer bands than threads, a band's channels are first cut into one share of equal width per thread (in
// steps of a W2 block for channel tiles, 8 channels for pixel vectors), each share into groups of whole tiles
// from its start, the last group of a share taking what is left: 256 channels in tiles of 48 for 2 threads are
// 48 + 48 + 32 per thread, where groups of whole tiles across the band (5 x 48 + 16) left one thread 144
// channels and the other 112 (OpenVINO, 2 threads, the 256@9x9 blocks of the full-width network at t_d 0.3:
// the threads' conv2 passes took 135 and 104 us, and the first waited out the difference at the block's end).
void conv2_tasks(const Plan& p, int n, int lanes, int rows2, int target2, int threads, std::vector<Task2>& out) {
  const int Cout8 = p.conv2_channels == 1 ? p.w.CoutB : p.w.Cout8;  // conv2's channel range
  const int nb2 = ceil_div(p.Ho, rows2);
  const int vec_per_band = ceil_div((int64_t)rows2 * p.Wo, lanes);
  // Form 2: a last band whose vectors would leave a quarter or more of their lanes empty takes channel tiles.
  const int last_px = (p.Ho - (nb2 - 1) * rows2) * p.Wo;
  const int last_lanes = ceil_div(last_px, lanes) * lanes;
  const bool tail_channels = p.conv2_channels == 2 && 4 * (last_lanes - last_px) >= last_lanes;
  const int nbp = tail_channels ? nb2 - 1 : nb2;  // bands in the call's main form
  // Channel ranges in whole tiles: output-channel tiles are conv2_tile_blocks blocks; pixel tiles 24 channels
  // when a band is 1-2 vectors, else 8.
  const int unit = p.conv2_channels == 1 ? p.conv2_tile_blocks * p.w.wb : vec_per_band <= 2 ? 24 : 8;
  int ng2 = std::max(1, std::min(ceil_div(target2, nb2), ceil_div(Cout8, unit)));
  const int gsz2 = ceil_div(ceil_div(Cout8, ng2), unit) * unit;
  ng2 = ceil_div(Cout8, gsz2);
  const int ch = p.conv2_channels == 1 ? 1 : 0;
  // One share per band (its groups are then gsz2 wide), or one per thread.
  const int shares = threads > 1 && nbp < threads ? threads : 1;
  const int step = ch ? p.w.wb : 8;  // a share's channels start at a multiple of this
  const int steps = Cout8 / step;
  const int per_share = std::max(1, ceil_div(ng2, shares));  // groups per share
  for (int b = 0; b < nbp; ++b) {
    const int r0 = b * rows2, r1 = std::min(p.Ho, (b + 1) * rows2);
    for (int s = 0; s < shares; ++s) {
      const int c0 = (int)((int64_t)steps * s / shares) * step, c1 = (int)((int64_t)steps * (s + 1) / shares) * step;
      if (c0 >= c1) continue;
      const int g = ceil_div(ceil_div(c1 - c0, per_share), unit) * unit;
      for (int c = c0; c < c1; c += g) out.push_back(Task2{n, r0, r1, c, std::min(c1, c + g), ch});
    }
  }
  if (tail_channels) {
    // The last band in channel tiles, its channels (CoutB, in whole tiles) split as the other bands'.
    const int cunit = p.conv2_tile_blocks * p.w.wb;
    const int cgsz = ceil_div(ceil_div(p.w.CoutB, ng2), cunit) * cunit;
    for (int c0 = 0; c0 < p.w.CoutB; c0 += cgsz)
      out.push_back(Task2{n, nbp * rows2, p.Ho, c0, std::min(p.w.CoutB, c0 + cgsz), 1});
  }
}

// Modelled finishing time of the last thread, and the mean work per thread, when `tasks[first..]` run as
// RunBoth runs them: cut into shares, each thread runs its own share, then takes the next task left in the
// others.  cost(task, new_band): a task's cycles, plus copying x when the thread had not copied that band.
struct Span {
  double last, mean;
};
template <typename T, typename Cost>
Span model_span(const std::vector<T>& tasks, size_t first, int threads, Cost cost) {
  const T* own = tasks.data() + first;
  const size_t count = tasks.size() - first;
  std::atomic<size_t> next[kMaxParts];
  size_t end[kMaxParts], cur[kMaxParts];
  const int parts = std::min(threads, kMaxParts);
  if constexpr (std::is_same<T, Task1>::value)
    split_shares(own, count, parts, share_work1, next, end);
  else
    split_shares(own, count, parts, share_work2, next, end);
  for (int k = 0; k < parts; ++k) cur[k] = next[k].load(std::memory_order_relaxed);
  double clock[kMaxParts], total = 0;
  int band[kMaxParts];
  for (int k = 0; k < parts; ++k) clock[k] = 0, band[k] = -1;
  for (size_t done = 0; done < count; ++done) {
    int w = 0;  // the thread that is free first claims the next task in its order
    for (int k = 1; k < parts; ++k)
      if (clock[k] < clock[w]) w = k;
    size_t i = count;
    for (int k = 0; k < parts && i == count; ++k) {
      const int q = (w + k) % parts;
      if (cur[q] < end[q]) i = cur[q]++;
    }
    const double c = cost(own[i], own[i].r0 != band[w]);
    band[w] = own[i].r0;
    clock[w] += c;
    total += c;
  }
  double last = 0;
  for (int k = 0; k < parts; ++k) last = std::max(last, clock[k]);
  return Span{last, total / parts};
}

// Band rows r = ceil(Ho / (k * threads)), k = 1..4, not rounded to whole vectors: the one whose tasks
// (make(r, out)) are modelled to finish first, if before `best` (updated); else `rows`.
template <typename T, typename Make, typename Cost>
int weigh_band_rows(const Plan& p, int lanes, int threads, int rows, double& best, Make make, Cost cost) {
  int best_rows = rows;
  std::vector<T> trial;
  for (int k = 1; k <= 4 && k * threads <= p.Ho; ++k) {
    const int r = ceil_div(p.Ho, k * threads);
    if (r == rows || r * p.Wo < lanes) continue;
    trial.clear();
    make(r, trial);
    const double c = model_span(trial, 0, threads, cost).last;
    if (c < best) best = c, best_rows = r;
  }
  return best_rows;
}

// What plan_tasks chose for a sample (rows, channel groups, task targets): enough to make its tasks again.
struct PlanChoice {
  int rows1 = 0, groups1 = 0, target1 = 0, rows2 = 0, target2 = 0;
};

// The choice for a block shape, active channel count and thread count, remembered per thread
// (direct-mapped): weighing other plans costs 1-3 us, a call of a small block 20-100.
struct RowChoice {
  int key[9] = {-1};
  PlanChoice choice;
};
constexpr int kRowChoices = 256;
thread_local RowChoice tl_row_choice[kRowChoices];

void plan_tasks(const Plan& p, const IsaOps& isa, int threads, std::vector<Task1>& t1, std::vector<Task2>& t2,
                PlanChoice* chosen = nullptr);

void plan_tasks_cached(const Plan& p, const IsaOps& isa, int threads, std::vector<Task1>& t1, std::vector<Task2>& t2) {
  const int A = p.N == 1 ? p.nact[0] : 0;
  if (threads <= 1 || p.N != 1 || A == 0) {
    plan_tasks(p, isa, threads, t1, t2);
    return;
  }
  const int key[9] = {p.Ho, p.Wo, p.S, p.w.Cin, p.w.Cout, A, threads, p.conv2_channels, p.w.wsp ? 1 : 0};
  uint32_t h = 2166136261u;
  for (int v : key) h = (h ^ (uint32_t)v) * 16777619u;
  RowChoice& rc = tl_row_choice[h % kRowChoices];
  if (std::equal(key, key + 9, rc.key)) {
    const PlanChoice& c = rc.choice;
    t1.clear();
    t2.clear();
    conv1_tasks(p, 0, A, c.rows1, c.target1, t1, c.groups1);
    conv2_tasks(p, 0, isa.lanes, c.rows2, c.target2, threads, t2);
    return;
  }
  rc.choice = PlanChoice();
  plan_tasks(p, isa, threads, t1, t2, &rc.choice);
  std::copy(key, key + 9, rc.key);
}

void plan_tasks(const Plan& p, const IsaOps& isa, int threads, std::vector<Task1>& t1, std::vector<Task2>& t2,
                PlanChoice* chosen) {
  const int lanes = isa.lanes;
  t1.clear();
  t2.clear();
  const int Cin = p.w.Cin, Cout = p.w.Cout;
  const int Ks = p.w.wsp ? Cin : 0;  // the shortcut's K steps in conv2
  auto vecs = [&](int r0, int r1) { return (double)ceil_div((int64_t)(r1 - r0) * p.Wo, lanes); };
  for (int n = 0; n < p.N; ++n) {
    const int A = p.nact[n];
    if (A == 0 && Ks) {
      // No active channel, but the shortcut needs xs: prep-only tasks (empty channel range), by row band.
      const int target = task_target((double)Cin * 9 * p.P, threads);
      const int rows = band_rows(p.Ho, p.Wo, lanes, target, 256);
      for (int r0 = 0; r0 < p.Ho; r0 += rows) t1.push_back(Task1{n, r0, std::min(p.Ho, r0 + rows), 0, 0});
    }
    if (A > 0) {
      const double work = (double)A * Cin * 9 * p.P;
      const int target = task_target(work, threads);
      int rows = band_rows(p.Ho, p.Wo, lanes, target, 256);  // bands re-copy 2 halo rows of x
      int nb = ceil_div(p.Ho, rows);
      if (threads > 1 && nb < threads && p.P >= 256 && p.Ho >= 2 * threads) {
        // Fewer bands than threads on a map of 16 vectors or more (17x17; a stride-2 block into it): one band
        // per thread rather than channel groups of one band, which every thread would copy from x whole.
        // OpenVINO and ORT, 2 threads, 4 alternating pairs each: full width 0.984-0.996x, x0.25 0.981-0.992x;
        // x0.25 was 1.06x when 9x9 and 5x5 maps were cut too.
        rows = ceil_div(p.Ho, threads);
        nb = ceil_div(p.Ho, rows);
      }
      int ng = std::max(1, std::min(ceil_div(target, nb), std::max(1, A / 8)));
      if (nb * ng < threads) {
        // Fewer tasks than threads (a small map with few active channels: one band, one group of 8): thinner
        // bands, each re-copying its 2 halo rows, rather than one thread running the whole pass (rows not
        // rounded to whole vectors: at 17 px that rounding would cut 16 + 1 rows).
        rows = ceil_div(p.Ho, std::min(p.Ho, ceil_div(threads, ng)));
      }
      const size_t first = t1.size();
      conv1_tasks(p, n, A, rows, target, t1);
      if (threads > 1) {
        // The rule's tasks may not share out evenly: bands rounded to whole vectors (34 rows into 24 + 10 for
        // 2 tasks; 17 rows into 16 + 1), channel groups of whole tiles (19 channels into 16 + 3).  Then also
        // try 1-4 bands per thread, not rounded, on maps of 256 pixels or more (cutting 9x9 maps cost 1-5%),
        // and 1-2 equal channel groups per thread on the others, and keep the plan modelled fastest.
        // A task: its tiles by the kernels' cost model; a share copies x for each band it works on (about
        // 2 cycles a vector store, 3 planes per input channel at stride 1, 6 at stride 2).
        auto cost = [&](const Task1& t, bool new_band) {
          const double tiles = isa.conv1_cycles(t.j1 - t.j0, (int)vecs(t.r0, t.r1), 9 * Cin);
          return tiles + (new_band ? 2.0 * 3 * p.S * Cin * vecs(t.r0, t.r1 + 3 - p.S) : 0.0);
        };
        const Span base = model_span(t1, first, threads, cost);
        double best = base.last * kPlanMargin;
        int best_rows = rows, best_groups = 0;
        if (base.last > kPlanImbalance * base.mean && p.P >= 256) {
          best_rows = weigh_band_rows<Task1>(p, lanes, threads, rows, best, [&](int r, std::vector<Task1>& out) {
            conv1_tasks(p, n, A, r, target, out);
          }, cost);
        } else if (base.last > kPlanImbalance * base.mean) {
          std::vector<Task1> trial;
          for (int k = 1; k <= 2 && k * threads <= A; ++k) {
            trial.clear();
            conv1_tasks(p, n, A, rows, target, trial, k * threads);
            const double c = model_span(trial, 0, threads, cost).last;
            if (c < best) best = c, best_groups = k * threads;
          }
        }
        if (best_rows != rows || best_groups) {
          t1.resize(first);
          conv1_tasks(p, n, A, best_rows, target, t1, best_groups);
          rows = best_rows;
        }
        if (chosen) chosen->groups1 = best_groups;
      }
      if (chosen) chosen->rows1 = rows, chosen->target1 = target;
    }
    const double work2 = (double)Cout * (std::max(A, 1) * 9 + Ks) * p.P;
    const int target2 = task_target(work2, threads);
    int rows2 = band_rows(p.Ho, p.Wo, lanes, target2, 3 * lanes);
    const size_t first2 = t2.size();
    conv2_tasks(p, n, lanes, rows2, target2, threads, t2);
    if (threads > 1) {
      // As for conv1, bands only (no copy of x; channel tiles cost their pixels, not whole vectors).
      // Pixel tiles by the kernels' cost model; channel tiles (12 pixels x 32 channels, as the widest pixel
      // tile per K step) by their pixels and channels.
      const int k2 = 9 * std::max(A, 1) + Ks;
      auto cost = [&](const Task2& t, bool) {
        if (t.channels)
          return (double)ceil_div((int64_t)(t.r1 - t.r0) * p.Wo, 12) * ((t.co1 - t.co0) / 32.0) * (14.5 * k2 + 100.0);
        return isa.conv2_cycles(t.co1 - t.co0, (int)vecs(t.r0, t.r1), k2);
      };
      const Span base = model_span(t2, first2, threads, cost);
      double best = base.last * kPlanMargin;
      int best_rows = rows2;
      if (base.last > kPlanImbalance * base.mean && p.P >= 256)
        best_rows = weigh_band_rows<Task2>(p, lanes, threads, rows2, best, [&](int r, std::vector<Task2>& out) {
          conv2_tasks(p, n, lanes, r, target2, threads, out);
        }, cost);
      if (best_rows != rows2) {
        t2.resize(first2);
        conv2_tasks(p, n, lanes, best_rows, target2, threads, t2);
        rows2 = best_rows;
      }
    }
    if (chosen) chosen->rows2 = rows2, chosen->target2 = target2;
  }
}

std::string run_block_impl(const PackedBlock& pb, const BlockIO& io, ParallelForFn pf, void* pf_ctx,
                           CallScratch& cs) {
  if (io.stride != 1 && io.stride != 2) return "GatedBlock: stride must be 1 or 2";
  if (io.n < 0 || io.h <= 0 || io.w <= 0) return "GatedBlock: bad input size";
  if (io.n == 0) return std::string();
  if (!io.x || !(io.mask || io.gate) || !(io.residual || pb.shortcut) || !io.y) return "GatedBlock: missing tensor data";
  if (io.h > (1 << 15) || io.w > (1 << 15) || io.n > (1 << 20)) return "GatedBlock: input too large";
  const IsaOps* isa = isa_choice().ops;

  Plan p;
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

  const int C = pb.C;
  const float* mask = io.mask;
  if (io.gate) {
    const GateDims gd = gate_dims(*io.gate);
    if (gd.cin != pb.Cin || gd.c != C) return "GatedBlock: the gate does not fit the block";
    cs.decided.resize((size_t)p.N * C);
    gate_mask(*io.gate, io.x, io.n, io.h, io.w, cs.decided.data());
    mask = cs.decided.data();
  }
  cs.act.resize((size_t)p.N * C);
  cs.aoff2.resize((size_t)p.N * C);
  cs.mval.resize((size_t)p.N * C);
  cs.nact.resize(p.N);
  cs.hoff.resize(p.N);
  p.h_ps = (size_t)(p.Ho + 2) * p.Wo;
  p.h_cs = (3 * p.h_ps + 15) & ~(size_t)15;
  size_t htotal = 0;
  for (int n = 0; n < p.N; ++n) {
    const float* m = mask + (size_t)n * C;
    int a = 0;
    for (int c = 0; c < C; ++c) {
      if (m[c] != 0.0f) {
        cs.act[(size_t)n * C + a] = c;
        cs.aoff2[(size_t)n * C + a] = c * 9 * pb.wb;
        cs.mval[(size_t)n * C + a] = m[c];
        ++a;
      }
    }
    cs.nact[n] = a;
    cs.hoff[n] = htotal;
    htotal += (size_t)a * p.h_cs;
  }
  // conv2's tile form (kChannelTileMaxPixels, kChannelTileMinCout, kChannelTileMinK).
  int form = io.conv2_form;
  if (form == 0) {
    int amax = 0;
    for (int n = 0; n < p.N; ++n) amax = std::max(amax, cs.nact[n]);
    const int k = 9 * amax + (pb.shortcut ? pb.Cin : 0);  // conv2's K steps
    form = k >= kChannelTileMinK && (p.P <= kChannelTileMaxPixels || pb.Cout >= kChannelTileMinCout) ? 2 : 3;
  }
  p.conv2_channels = !isa->channel_tiles || form == 1 ? 0 : form == 2 ? 1 : 2;
  p.conv2_tile_blocks = isa->channel_tile_blocks ? isa->channel_tile_blocks(p.Wo) : 2;
  // conv1's form (kConv1DotMinCin; BlockIO::conv1_form).
  const bool dot_ok = pb.dot && p.Wo <= isa->conv1_dot_maxw;
  p.conv1_dot = dot_ok && (io.conv1_form == 2 || (io.conv1_form == 0 && pb.Cin >= kConv1DotMinCin)) ? 1 : 0;
  try {
    cs.h.ensure(htotal + 256);
  } catch (...) {
    return "GatedBlock: out of memory";
  }
  p.act = cs.act.data();
  p.nact = cs.nact.data();
  p.mval = cs.mval.data();
  p.aoff2 = cs.aoff2.data();
  p.h = cs.h.p;
  p.hoff = cs.hoff.data();
  p.xs = nullptr;
  if (pb.shortcut) {
    try {
      cs.xs.ensure((size_t)p.N * pb.Cin * p.P + 256);  // slack: tiles read whole vectors past the last pixel
    } catch (...) {
      return "GatedBlock: out of memory";
    }
    p.xs = cs.xs.p;
  }

  try {
    plan_tasks_cached(p, *isa, io.threads, cs.t1, cs.t2);
  } catch (...) {
    return "GatedBlock: out of memory";
  }

  std::atomic<int> failed{0};
  Run1 r1{&p, cs.t1.data(), isa, g_call_counter.fetch_add(1) + 1, &failed};
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
    return failed.load() ? "GatedBlock: out of memory" : std::string();
  }
  if (!cs.t1.empty()) pf(pf_ctx, cs.t1.size(), &run_task1, &r1);
  if (failed.load()) return "GatedBlock: out of memory";
  pf(pf_ctx, cs.t2.size(), &run_task2, &r2);
  return std::string();
}

}  // namespace

std::string run_block(const PackedBlock& pb, const BlockIO& io, ParallelForFn pf, void* pf_ctx) {
  if (!pf) pf = &serial_parallel_for;
  // The calling thread's scratch, unless a nested call on this thread (a thread pool running another
  // block while it waits) already holds it.
  struct Hold {
    CallScratch* cs;
    explicit Hold(CallScratch* c) : cs(c) { cs->busy = true; }
    ~Hold() { cs->busy = false; }
  };
  try {
    if (!tls_call.busy) {
      Hold hold(&tls_call);
      return run_block_impl(pb, io, pf, pf_ctx, tls_call);
    }
    CallScratch own;
    Hold hold(&own);
    return run_block_impl(pb, io, pf, pf_ctx, own);
  } catch (const std::exception& e) {
    return std::string("GatedBlock: ") + e.what();
  } catch (...) {
    return "GatedBlock: unknown error";
  }
}

}  // namespace gatekit
