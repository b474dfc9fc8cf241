// OpenVINO extension: the gatekit ops (opset "gatekit"), attribute stride (1 or 2):
//
//   y = GatedBlock(x, mask, W1, b1, W2, b2, residual)                   the mask is an input
//   y = GatedBlockWithGate(x, G1, g1, G2, W1, b1, W2, b2, residual)     the block computes its own mask
//   y = GatedBlockWithGateAndShortcut(x, G1, g1, G2, W1, b1, W2, b2, Ws, bs)   ... and its residual (1x1 conv):
//       no layout reorders around a shortcut convolution between two ops, which the plugin runs blocked
//
// Load with core.add_extension(path); the ONNX frontend then maps ONNX nodes of these types in domain
// "gatekit" to these ops, so the same .onnx file serves ONNX Runtime and OpenVINO.  The CPU plugin runs the
// ops through evaluate(); weights are packed on the first evaluate() and cached, shared by clones of the node.
// The extension is tied to the OpenVINO release it was built against (libopenvino.so.<version>).
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/core/version.hpp>
#include <openvino/frontend/onnx/extension/op.hpp>
#include <openvino/op/op.hpp>

#if defined(GATEKIT_HAVE_TBB)
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>
#else
#include <openvino/core/parallel.hpp>
#endif

#include "channel_gate.h"
#include "gated_block.h"
#include "op_layouts.h"

#define GATEKIT_EXPORT extern "C" __attribute__((visibility("default")))

namespace gatekit_ov {

using Layout = gatekit::OpLayout;
using gatekit::kGatedBlock;
using gatekit::kGatedBlockWithGate;
using gatekit::kGatedBlockWithGateAndShortcut;

struct Packed {
  std::shared_ptr<const gatekit::PackedBlock> block;
  std::shared_ptr<const gatekit::PackedGate> gate;  // GatedBlockWithGate only
};

// Packed weights, keyed by the weight tensors they were packed from.  Shared by a node and its clones; a
// compiled model may hand each stream its own copy of the constants, hence a few entries.
class PackCache {
 public:
  Packed get(const ov::TensorVector& in, const Layout& L) {
    Key key{};
    const int w = L.weights;
    for (int k = 0; k < 4; ++k) {
      key.ptr[k] = in[w + k].data();
      key.size[k] = in[w + k].get_size();
    }
    if (L.gate >= 0)
      for (int k = 0; k < 3; ++k) {
        key.ptr[4 + k] = in[L.gate + k].data();
        key.size[4 + k] = in[L.gate + k].get_size();
      }
    if (L.shortcut >= 0)
      for (int k = 0; k < 2; ++k) {
        key.ptr[7 + k] = in[L.shortcut + k].data();
        key.size[7 + k] = in[L.shortcut + k].get_size();
      }
    std::lock_guard<std::mutex> lock(m_mutex);
    for (const auto& e : m_entries)
      if (std::memcmp(&e.first, &key, sizeof(Key)) == 0) return e.second;
    const std::string op = std::string("gatekit::") + L.name + ": ";
    const auto& w1 = in[w].get_shape();
    const auto& w2 = in[w + 2].get_shape();
    OPENVINO_ASSERT(w1.size() == 4 && w1[2] == 3 && w1[3] == 3, op, "W1 must be [C, Cin, 3, 3]");
    OPENVINO_ASSERT(w2.size() == 4 && w2[1] == w1[0] && w2[2] == 3 && w2[3] == 3, op, "W2 must be [Cout, C, 3, 3]");
    OPENVINO_ASSERT(in[w + 1].get_size() == w1[0] && in[w + 3].get_size() == w2[0], op, "b1 must be [C] and b2 [Cout]");
    for (int k = w; k < w + 4; ++k)
      OPENVINO_ASSERT(in[k].get_element_type() == ov::element::f32, op, "weights must be f32");
    const float* sc[2] = {nullptr, nullptr};
    if (L.shortcut >= 0) {
      const int s = L.shortcut;
      const auto& ws = in[s].get_shape();
      OPENVINO_ASSERT((ws.size() == 2 || (ws.size() == 4 && ws[2] == 1 && ws[3] == 1)) && ws[0] == w2[0] && ws[1] == w1[1],
                      op, "Ws must be [Cout, Cin] or [Cout, Cin, 1, 1], got ", ws);
      OPENVINO_ASSERT(in[s + 1].get_size() == w2[0], op, "bs must be [Cout]");
      for (int k = s; k < s + 2; ++k)
        OPENVINO_ASSERT(in[k].get_element_type() == ov::element::f32, op, "shortcut weights must be f32");
      sc[0] = in[s].data<const float>();
      sc[1] = in[s + 1].data<const float>();
    }
    Packed p;
    p.block = gatekit::pack_block(in[w].data<const float>(), in[w + 1].data<const float>(), in[w + 2].data<const float>(),
                                  in[w + 3].data<const float>(), (int64_t)w1[0], (int64_t)w1[1], (int64_t)w2[0], sc[0],
                                  sc[1]);
    if (L.gate >= 0) {
      const int g = L.gate;
      const auto& g1 = in[g].get_shape();
      OPENVINO_ASSERT(g1.size() == 2 && g1[1] == w1[1], op, "G1 must be [Hd, Cin]");
      OPENVINO_ASSERT(in[g + 1].get_size() == g1[0], op, "g1 must be [Hd]");
      OPENVINO_ASSERT(in[g + 2].get_shape() == ov::Shape({w1[0], g1[0]}), op, "G2 must be [C, Hd]");
      for (int k = g; k < g + 3; ++k)
        OPENVINO_ASSERT(in[k].get_element_type() == ov::element::f32, op, "gate weights must be f32");
      p.gate = gatekit::pack_gate(in[g].data<const float>(), in[g + 1].data<const float>(), in[g + 2].data<const float>(),
                                  (int64_t)g1[0], (int64_t)g1[1], (int64_t)w1[0]);
    }
    if (m_entries.size() >= 8) m_entries.erase(m_entries.begin());
    m_entries.emplace_back(key, p);
    return p;
  }

 private:
  struct Key {
    const void* ptr[9];
    size_t size[9];
  };
  std::mutex m_mutex;
  std::vector<std::pair<Key, Packed>> m_entries;
};

void ov_parallel_for(void*, size_t n, gatekit::TaskFn fn, void* arg) {
  if (n <= 1) {
    if (n == 1) fn(arg, 0);
    return;
  }
#if defined(GATEKIT_HAVE_TBB)
  tbb::parallel_for(size_t(0), n, [fn, arg](size_t i) { fn(arg, i); });
#else
  ov::parallel_for(n, [fn, arg](size_t i) { fn(arg, i); });
#endif
}

// Threads of the arena the plugin runs this node in (its INFERENCE_NUM_THREADS).
int ov_threads() {
#if defined(GATEKIT_HAVE_TBB)
  return tbb::this_task_arena::max_concurrency();
#else
  return parallel_get_max_threads();
#endif
}

// Shape inference, attributes and evaluation shared by both ops; each op names its type and layout.
class BlockOp : public ov::op::Op {
 public:
  void validate_and_infer_types() override {
    const Layout& L = *m_layout;
    NODE_VALIDATION_CHECK(this, get_input_size() == L.inputs, L.name, " expects ", L.inputs, " inputs, got ",
                          get_input_size());
    NODE_VALIDATION_CHECK(this, m_stride == 1 || m_stride == 2, L.name, ": stride must be 1 or 2, got ", m_stride);
    const auto et = get_input_element_type(0);
    NODE_VALIDATION_CHECK(this, et == ov::element::f32 || et.is_dynamic(), L.name, ": x must be f32");
    check_weight_shapes();
    // Output: [N, Cout, Ho, Wo], the residual's shape; filled in from x and W2 where the residual is unknown
    // (or computed by the op).
    ov::PartialShape out = L.residual >= 0 ? get_input_partial_shape(L.residual) : ov::PartialShape::dynamic(4);
    const auto& x = get_input_partial_shape(0);
    const auto& w2 = get_input_partial_shape(L.weights + 2);
    if (out.rank().is_dynamic()) out = ov::PartialShape::dynamic(4);
    NODE_VALIDATION_CHECK(this, out.rank().get_length() == 4, L.name, ": residual must be 4-D");
    if (x.rank().is_static() && x.rank().get_length() == 4) {
      ov::PartialShape from_x{x[0], w2.rank().is_static() ? w2[0] : ov::Dimension::dynamic(),
                              x[2].is_static() ? ov::Dimension((x[2].get_length() - 1) / m_stride + 1)
                                               : ov::Dimension::dynamic(),
                              x[3].is_static() ? ov::Dimension((x[3].get_length() - 1) / m_stride + 1)
                                               : ov::Dimension::dynamic()};
      NODE_VALIDATION_CHECK(this, ov::PartialShape::merge_into(out, from_x), L.name, ": residual shape ",
                            get_input_partial_shape(L.residual >= 0 ? L.residual : 0), " does not match the output shape ",
                            from_x);
    }
    set_output_type(0, et.is_dynamic() ? ov::element::f32 : et, out);
  }

  // Where the weights' shapes are known (constants), they must fit together: a mismatch is refused when the
  // model is read or compiled, with one line naming the op and the input (evaluate() cannot report it: the
  // plugin runs it for every inference).
  void check_weight_shapes() {
    const Layout& L = *m_layout;
    auto dims = [this](int i, std::vector<int64_t>& d) {
      const auto& ps = get_input_partial_shape(i);
      if (ps.rank().is_dynamic() || !ps.is_static()) return false;
      d.clear();
      for (const auto& v : ps.to_shape()) d.push_back((int64_t)v);
      return true;
    };
    auto str = [](const std::vector<int64_t>& d) {
      std::string s = "[";
      for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
      return s + "]";
    };
    std::vector<int64_t> w1, w2, d;
    if (!dims(L.weights, w1) || !dims(L.weights + 2, w2)) return;
    const std::string op = std::string("gatekit::") + L.name + ": ";
    NODE_VALIDATION_CHECK(this, w1.size() == 4 && w1[2] == 3 && w1[3] == 3, op, "W1 must be [C, Cin, 3, 3], got ", str(w1));
    const int64_t C = w1[0], Cin = w1[1];
    NODE_VALIDATION_CHECK(this, w2.size() == 4 && w2[1] == C && w2[2] == 3 && w2[3] == 3, op,
                          "W2 must be [Cout, C, 3, 3] with C = ", C, ", got ", str(w2));
    const int64_t Cout = w2[0];
    if (dims(L.weights + 1, d)) NODE_VALIDATION_CHECK(this, d == std::vector<int64_t>{C}, op, "b1 must be [C], got ", str(d));
    if (dims(L.weights + 3, d)) NODE_VALIDATION_CHECK(this, d == std::vector<int64_t>{Cout}, op, "b2 must be [Cout], got ", str(d));
    const auto& x = get_input_partial_shape(0);
    if (x.rank().is_static())
      NODE_VALIDATION_CHECK(this, x.rank().get_length() == 4 && (x[1].is_dynamic() || x[1].get_length() == Cin), op,
                            "x must be [N, ", Cin, ", H, W], got ", x);
    if (L.gate >= 0) {
      std::vector<int64_t> g1;
      if (dims(L.gate, g1)) {
        NODE_VALIDATION_CHECK(this, g1.size() == 2 && g1[1] == Cin, op, "G1 must be [Hd, Cin] with Cin = ", Cin, ", got ",
                              str(g1));
        const int64_t Hd = g1[0];
        if (dims(L.gate + 1, d)) NODE_VALIDATION_CHECK(this, d == std::vector<int64_t>{Hd}, op, "g1 must be [Hd], got ", str(d));
        if (dims(L.gate + 2, d))
          NODE_VALIDATION_CHECK(this, d == (std::vector<int64_t>{C, Hd}), op, "G2 must be [C, Hd] = [", C, ", ", Hd,
                                "], got ", str(d));
      }
    }
    if (L.shortcut >= 0) {
      if (dims(L.shortcut, d))
        NODE_VALIDATION_CHECK(this, (d.size() == 2 || (d.size() == 4 && d[2] == 1 && d[3] == 1)) && d[0] == Cout && d[1] == Cin,
                              op, "Ws must be [Cout, Cin] or [Cout, Cin, 1, 1] = [", Cout, ", ", Cin, "], got ", str(d));
      if (dims(L.shortcut + 1, d))
        NODE_VALIDATION_CHECK(this, d == std::vector<int64_t>{Cout}, op, "bs must be [Cout], got ", str(d));
    }
  }

  bool visit_attributes(ov::AttributeVisitor& visitor) override {
    visitor.on_attribute("stride", m_stride);
    return true;
  }

  bool has_evaluate() const override { return true; }

  bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
    const Layout& L = *m_layout;
    if (inputs.size() != L.inputs || outputs.size() != 1) return false;
    if (inputs[0].get_element_type() != ov::element::f32 ||
        (L.residual >= 0 && inputs[L.residual].get_element_type() != ov::element::f32))
      return false;
    if (L.mask >= 0 && inputs[L.mask].get_element_type() != ov::element::f32) return false;
    const Packed packed = m_cache->get(inputs, L);
    const auto dims = gatekit::block_dims(*packed.block);
    const std::string op = std::string("gatekit::") + L.name + ": ";
    const auto& xs = inputs[0].get_shape();
    OPENVINO_ASSERT(xs.size() == 4 && (int64_t)xs[1] == dims.cin, op, "x must be [N, ", dims.cin, ", H, W], got ", xs);
    const int64_t N = xs[0], H = xs[2], W = xs[3];
    const ov::Shape ys{(size_t)N, (size_t)dims.cout, (size_t)gatekit::out_size(H, (int)m_stride),
                       (size_t)gatekit::out_size(W, (int)m_stride)};
    if (L.mask >= 0)
      OPENVINO_ASSERT(inputs[L.mask].get_shape() == ov::Shape({(size_t)N, (size_t)dims.c}), op, "mask must be [N, C], got ",
                      inputs[L.mask].get_shape());
    if (L.residual >= 0)
      OPENVINO_ASSERT(inputs[L.residual].get_shape() == ys, op, "residual must be ", ys, ", got ",
                      inputs[L.residual].get_shape());
    outputs[0].set_shape(ys);
    gatekit::BlockIO io;
    io.x = inputs[0].data<const float>();
    io.mask = L.mask >= 0 ? inputs[L.mask].data<const float>() : nullptr;  // GatedBlockWithGate: its gate decides
    io.gate = packed.gate.get();
    io.residual = L.residual >= 0 ? inputs[L.residual].data<const float>() : nullptr;  // else the op's shortcut
    io.y = outputs[0].data<float>();
    io.n = N;
    io.h = H;
    io.w = W;
    io.stride = (int)m_stride;
    io.threads = ov_threads();
    const std::string err = gatekit::run_block(*packed.block, io, &ov_parallel_for, nullptr);
    OPENVINO_ASSERT(err.empty(), err);
    return true;
  }

 protected:
  explicit BlockOp(const Layout& L) : m_layout(&L) {}
  BlockOp(const ov::OutputVector& args, int64_t stride, const Layout& L) : Op(args), m_stride(stride), m_layout(&L) {}

  template <class Self>
  std::shared_ptr<ov::Node> clone_as(const ov::OutputVector& new_args) const {
    check_new_args_count(this, new_args);
    auto node = std::make_shared<Self>(new_args, m_stride);
    node->m_cache = m_cache;
    return node;
  }

  int64_t m_stride = 1;
  const Layout* m_layout;
  std::shared_ptr<PackCache> m_cache = std::make_shared<PackCache>();
};

class GatedBlock : public BlockOp {
 public:
  OPENVINO_OP("GatedBlock", "gatekit");
  GatedBlock() : BlockOp(kGatedBlock) {}
  GatedBlock(const ov::OutputVector& args, int64_t stride) : BlockOp(args, stride, kGatedBlock) {
    constructor_validate_and_infer_types();
  }
  std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& a) const override { return clone_as<GatedBlock>(a); }
};

class GatedBlockWithGate : public BlockOp {
 public:
  OPENVINO_OP("GatedBlockWithGate", "gatekit");
  GatedBlockWithGate() : BlockOp(kGatedBlockWithGate) {}
  GatedBlockWithGate(const ov::OutputVector& args, int64_t stride) : BlockOp(args, stride, kGatedBlockWithGate) {
    constructor_validate_and_infer_types();
  }
  std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& a) const override {
    return clone_as<GatedBlockWithGate>(a);
  }
};

class GatedBlockWithGateAndShortcut : public BlockOp {
 public:
  OPENVINO_OP("GatedBlockWithGateAndShortcut", "gatekit");
  GatedBlockWithGateAndShortcut() : BlockOp(kGatedBlockWithGateAndShortcut) {}
  GatedBlockWithGateAndShortcut(const ov::OutputVector& args, int64_t stride)
      : BlockOp(args, stride, kGatedBlockWithGateAndShortcut) {
    constructor_validate_and_infer_types();
  }
  std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& a) const override {
    return clone_as<GatedBlockWithGateAndShortcut>(a);
  }
};

}  // namespace gatekit_ov

OPENVINO_CREATE_EXTENSIONS(std::vector<ov::Extension::Ptr>(
    {std::make_shared<ov::OpExtension<gatekit_ov::GatedBlock>>(),
     std::make_shared<ov::frontend::onnx::OpExtension<gatekit_ov::GatedBlock>>("GatedBlock", "gatekit"),
     std::make_shared<ov::OpExtension<gatekit_ov::GatedBlockWithGate>>(),
     std::make_shared<ov::frontend::onnx::OpExtension<gatekit_ov::GatedBlockWithGate>>("GatedBlockWithGate", "gatekit"),
     std::make_shared<ov::OpExtension<gatekit_ov::GatedBlockWithGateAndShortcut>>(),
     std::make_shared<ov::frontend::onnx::OpExtension<gatekit_ov::GatedBlockWithGateAndShortcut>>(
         "GatedBlockWithGateAndShortcut", "gatekit")}));

#define GATEKIT_STR2(x) #x
#define GATEKIT_STR(x) GATEKIT_STR2(x)

GATEKIT_EXPORT const char* gatekit_ops_build_info() {
  static std::once_flag once;
  static std::string info;
  std::call_once(once, [] {
    info = "{\"library\": \"gatekit_ov_ops\", \"runtime\": \"openvino\", ";
    info += "\"openvino_version\": \"" GATEKIT_STR(OPENVINO_VERSION_MAJOR) "." GATEKIT_STR(
        OPENVINO_VERSION_MINOR) "." GATEKIT_STR(OPENVINO_VERSION_PATCH) "\", ";
    const char* rt = ov::get_openvino_version().buildNumber;
    std::string rts;
    for (const char* p = rt; p && *p; ++p)
      if (*p != '"' && *p != '\\') rts += *p;
    info += "\"openvino_runtime_build\": \"" + rts + "\", ";
#if defined(GATEKIT_HAVE_TBB)
    info += "\"threading\": \"tbb\", ";
#else
    info += "\"threading\": \"ov::parallel_for\", ";
#endif
    info += gatekit::build_info_common_json();
    info += "}";
  });
  return info.c_str();
}
