// OpenVINO extension: the gatekit ops (opset "gatekit"), attribute stride (1 or 2):
//
//   y = GatedBlock(x, mask, W1, b1, W2, b2, residual)                   the mask is an input
//   y = GatedBlockWithGate(x, G1, g1, G2, W1, b1, W2, b2, residual)     the block computes its own mask
//   y = GatedBlockWithGateAndShortcut(x, G1, g1, G2, W1, b1, W2, b2, Ws, bs)   ... and its residual (1x1 conv):
//       no layout reorders around a shortcut convolution between two ops, which the plugin runs blocked
//
// and their int8 forms (gated_block_int8.h: int8 weights with per-channel scales, quantization inside):
//
//   y = GatedBlockInt8(x, mask, W1, w1_scale, b1, W2, w2_scale, b2, residual, x_scale, h_scale)
//   y = GatedBlockWithGateInt8(x, G1, g1, G2, W1, w1_scale, b1, W2, w2_scale, b2, residual, x_scale, h_scale)
//   y = GatedBlockWithGateAndShortcutInt8(x, G1, g1, G2, W1, w1_scale, b1, W2, w2_scale, b2, Ws, ws_scale, bs,
//                                         x_scale, h_scale)
//
// Load with core.add_extension(path); the ONNX frontend then maps ONNX nodes of these types in domain
// "gatekit" to these ops, so the same .onnx file serves ONNX Runtime and OpenVINO.  The CPU plugin runs the
// ops through evaluate(); weights are packed on the first evaluate() and cached, shared by clones of the node.
// The extension is tied to the OpenVINO release it was built against (libopenvino.so.<version>).
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/core/version.hpp>
#include <openvino/frontend/onnx/extension/op.hpp>
#include <openvino/op/constant.hpp>
#include <openvino/op/op.hpp>

#if defined(GATEKIT_HAVE_TBB)
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>
#else
#include <openvino/core/parallel.hpp>
#endif

#include "channel_gate.h"
#include "gated_block.h"
#include "gated_block_int8.h"
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
    const std::string err = gatekit::weight_shape_error(L, [&in](int i, std::vector<int64_t>& d) {
      d.assign(in[i].get_shape().begin(), in[i].get_shape().end());
      return true;
    });
    OPENVINO_ASSERT(err.empty(), op, err);
    const int last = L.shortcut >= 0 ? L.shortcut + 1 : L.weights + 3;
    for (int k = 1; k <= last; ++k)
      if (k != L.mask && k != L.residual)
        OPENVINO_ASSERT(in[k].get_element_type() == ov::element::f32, op, "weights must be f32");
    const auto& w1 = in[w].get_shape();
    const auto& w2 = in[w + 2].get_shape();
    Packed p;
    const float* ws = L.shortcut >= 0 ? in[L.shortcut].data<const float>() : nullptr;
    const float* bs = L.shortcut >= 0 ? in[L.shortcut + 1].data<const float>() : nullptr;
    p.block = gatekit::pack_block(in[w].data<const float>(), in[w + 1].data<const float>(), in[w + 2].data<const float>(),
                                  in[w + 3].data<const float>(), (int64_t)w1[0], (int64_t)w1[1], (int64_t)w2[0], ws, bs);
    if (L.gate >= 0) {
      const int g = L.gate;
      p.gate = gatekit::pack_gate(in[g].data<const float>(), in[g + 1].data<const float>(), in[g + 2].data<const float>(),
                                  (int64_t)in[g].get_shape()[0], (int64_t)w1[1], (int64_t)w1[0]);
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
    const std::string op = std::string("gatekit::") + L.name + ": ";
    const std::string err = gatekit::weight_shape_error(L, [this](int i, std::vector<int64_t>& d) {
      const auto& ps = get_input_partial_shape(i);
      if (!ps.is_static()) return false;
      d.clear();
      for (const auto& v : ps.to_shape()) d.push_back((int64_t)v);
      return true;
    });
    NODE_VALIDATION_CHECK(this, err.empty(), op, err);
    const auto& w1 = get_input_partial_shape(L.weights);
    const auto& x = get_input_partial_shape(0);
    if (w1.is_static() && x.rank().is_static())
      NODE_VALIDATION_CHECK(this, x.rank().get_length() == 4 && (x[1].is_dynamic() || x[1] == w1[1]), op,
                            "x must be [N, ", w1[1], ", H, W], got ", x);
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

// ---------------------------------------------------------------------------------------------------------
// The int8 ops.
using Layout8 = gatekit::OpLayoutInt8;
using gatekit::Int8Input;

struct Packed8 {
  std::shared_ptr<const gatekit::PackedBlockInt8> block;
  std::shared_ptr<const gatekit::PackedGate> gate;
};

// Packed weights keyed by the constant inputs they were packed from (as PackCache).
class PackCache8 {
 public:
  Packed8 get(const ov::TensorVector& in, const Layout8& L) {
    std::vector<std::pair<const void*, size_t>> key;
    for (int i = 0; i < (int)L.inputs; ++i)
      if (gatekit::int8_input_kind(L, i) != Int8Input::kTensor) key.emplace_back(in[i].data(), in[i].get_size());
    std::lock_guard<std::mutex> lock(m_mutex);
    for (const auto& e : m_entries)
      if (e.first == key) return e.second;
    const std::string op = std::string("gatekit::") + L.name + ": ";
    const std::string err = gatekit::weight_shape_error_int8(L, [&in](int i, std::vector<int64_t>& d) {
      d.assign(in[i].get_shape().begin(), in[i].get_shape().end());
      return true;
    });
    OPENVINO_ASSERT(err.empty(), op, err);
    for (int i = 0; i < (int)L.inputs; ++i) {
      const Int8Input kind = gatekit::int8_input_kind(L, i);
      if (kind == Int8Input::kInt8Weight)
        OPENVINO_ASSERT(in[i].get_element_type() == ov::element::i8, op, "input ", gatekit::int8_input_name(L, i),
                        " must be int8");
      if (kind == Int8Input::kFloatConstant)
        OPENVINO_ASSERT(in[i].get_element_type() == ov::element::f32, op, "input ", gatekit::int8_input_name(L, i),
                        " must be f32");
    }
    const int w = L.weights;
    const auto& w1 = in[w].get_shape();
    gatekit::Int8BlockWeights wt;
    wt.c = (int64_t)w1[0];
    wt.cin = (int64_t)w1[1];
    wt.cout = (int64_t)in[w + 3].get_shape()[0];
    wt.w1 = in[w].data<const int8_t>();
    wt.w1_scale = in[w + 1].data<const float>();
    wt.b1 = in[w + 2].data<const float>();
    wt.w2 = in[w + 3].data<const int8_t>();
    wt.w2_scale = in[w + 4].data<const float>();
    wt.b2 = in[w + 5].data<const float>();
    if (L.shortcut >= 0) {
      wt.ws = in[L.shortcut].data<const int8_t>();
      wt.ws_scale = in[L.shortcut + 1].data<const float>();
      wt.bs = in[L.shortcut + 2].data<const float>();
    }
    wt.x_scale = in[L.scales].data<const float>()[0];
    wt.h_scale = in[L.scales + 1].data<const float>()[0];
    Packed8 p;
    try {
      p.block = gatekit::pack_block_int8(wt);
      if (L.gate >= 0) {
        const int g = L.gate;
        p.gate = gatekit::pack_gate(in[g].data<const float>(), in[g + 1].data<const float>(),
                                    in[g + 2].data<const float>(), (int64_t)in[g].get_shape()[0], wt.cin, wt.c);
      }
    } catch (const std::invalid_argument& e) {
      OPENVINO_THROW(op, e.what());
    }
    if (m_entries.size() >= 8) m_entries.erase(m_entries.begin());
    m_entries.emplace_back(key, p);
    return p;
  }

 private:
  std::mutex m_mutex;
  std::vector<std::pair<std::vector<std::pair<const void*, size_t>>, Packed8>> m_entries;
};

class BlockOpInt8 : public ov::op::Op {
 public:
  void validate_and_infer_types() override {
    const Layout8& L = *m_layout;
    NODE_VALIDATION_CHECK(this, get_input_size() == L.inputs, L.name, " expects ", L.inputs, " inputs, got ",
                          get_input_size());
    NODE_VALIDATION_CHECK(this, m_stride == 1 || m_stride == 2, L.name, ": stride must be 1 or 2, got ", m_stride);
    const auto et = get_input_element_type(0);
    NODE_VALIDATION_CHECK(this, et == ov::element::f32 || et.is_dynamic(), L.name, ": x must be f32");
    const std::string op = std::string("gatekit::") + L.name + ": ";
    for (int i = 1; i < (int)L.inputs; ++i) {
      const auto t = get_input_element_type(i);
      if (t.is_dynamic()) continue;
      const Int8Input kind = gatekit::int8_input_kind(L, i);
      const char* name = gatekit::int8_input_name(L, i);
      NODE_VALIDATION_CHECK(this, kind != Int8Input::kInt8Weight || t == ov::element::i8, op, "input ", name,
                            " must be int8, got ", t);
      NODE_VALIDATION_CHECK(this, kind == Int8Input::kInt8Weight || t == ov::element::f32, op, "input ", name,
                            " must be f32, got ", t);
    }
    const std::string err = gatekit::weight_shape_error_int8(L, [this](int i, std::vector<int64_t>& d) {
      const auto& ps = get_input_partial_shape(i);
      if (!ps.is_static()) return false;
      d.clear();
      for (const auto& v : ps.to_shape()) d.push_back((int64_t)v);
      return true;
    });
    NODE_VALIDATION_CHECK(this, err.empty(), op, err);
    // x_scale and h_scale, where they are constants here already: finite and > 0.
    for (int k = 0; k < 2; ++k) {
      const auto c = ov::as_type_ptr<ov::op::v0::Constant>(input_value(L.scales + k).get_node_shared_ptr());
      if (!c || c->get_element_type() != ov::element::f32 || ov::shape_size(c->get_shape()) != 1) continue;
      const float v = c->cast_vector<float>()[0];
      NODE_VALIDATION_CHECK(this, std::isfinite(v) && v > 0.0f, op, k ? "h_scale" : "x_scale",
                            " must be a finite number > 0, got ", v);
    }
    const auto& w1 = get_input_partial_shape(L.weights);
    const auto& x = get_input_partial_shape(0);
    if (w1.is_static() && x.rank().is_static())
      NODE_VALIDATION_CHECK(this, x.rank().get_length() == 4 && (x[1].is_dynamic() || x[1] == w1[1]), op,
                            "x must be [N, ", w1[1], ", H, W], got ", x);
    ov::PartialShape out = L.residual >= 0 ? get_input_partial_shape(L.residual) : ov::PartialShape::dynamic(4);
    const auto& w2 = get_input_partial_shape(L.weights + 3);
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

  bool visit_attributes(ov::AttributeVisitor& visitor) override {
    visitor.on_attribute("stride", m_stride);
    return true;
  }

  bool has_evaluate() const override { return true; }

  bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
    const Layout8& L = *m_layout;
    if (inputs.size() != L.inputs || outputs.size() != 1) return false;
    if (inputs[0].get_element_type() != ov::element::f32 ||
        (L.residual >= 0 && inputs[L.residual].get_element_type() != ov::element::f32))
      return false;
    if (L.mask >= 0 && inputs[L.mask].get_element_type() != ov::element::f32) return false;
    const Packed8 packed = m_cache->get(inputs, L);
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
    io.mask = L.mask >= 0 ? inputs[L.mask].data<const float>() : nullptr;
    io.gate = packed.gate.get();
    io.residual = L.residual >= 0 ? inputs[L.residual].data<const float>() : nullptr;
    io.y = outputs[0].data<float>();
    io.n = N;
    io.h = H;
    io.w = W;
    io.stride = (int)m_stride;
    io.threads = ov_threads();
    const std::string err = gatekit::run_block_int8(*packed.block, io, &ov_parallel_for, nullptr);
    OPENVINO_ASSERT(err.empty(), op, err);
    return true;
  }

 protected:
  explicit BlockOpInt8(const Layout8& L) : m_layout(&L) {}
  BlockOpInt8(const ov::OutputVector& args, int64_t stride, const Layout8& L) : Op(args), m_stride(stride), m_layout(&L) {}

  template <class Self>
  std::shared_ptr<ov::Node> clone_as(const ov::OutputVector& new_args) const {
    check_new_args_count(this, new_args);
    auto node = std::make_shared<Self>(new_args, m_stride);
    node->m_cache = m_cache;
    return node;
  }

  int64_t m_stride = 1;
  const Layout8* m_layout;
  std::shared_ptr<PackCache8> m_cache = std::make_shared<PackCache8>();
};

class GatedBlockInt8 : public BlockOpInt8 {
 public:
  OPENVINO_OP("GatedBlockInt8", "gatekit");
  GatedBlockInt8() : BlockOpInt8(gatekit::kGatedBlockInt8) {}
  GatedBlockInt8(const ov::OutputVector& args, int64_t stride) : BlockOpInt8(args, stride, gatekit::kGatedBlockInt8) {
    constructor_validate_and_infer_types();
  }
  std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& a) const override {
    return clone_as<GatedBlockInt8>(a);
  }
};

class GatedBlockWithGateInt8 : public BlockOpInt8 {
 public:
  OPENVINO_OP("GatedBlockWithGateInt8", "gatekit");
  GatedBlockWithGateInt8() : BlockOpInt8(gatekit::kGatedBlockWithGateInt8) {}
  GatedBlockWithGateInt8(const ov::OutputVector& args, int64_t stride)
      : BlockOpInt8(args, stride, gatekit::kGatedBlockWithGateInt8) {
    constructor_validate_and_infer_types();
  }
  std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& a) const override {
    return clone_as<GatedBlockWithGateInt8>(a);
  }
};

class GatedBlockWithGateAndShortcutInt8 : public BlockOpInt8 {
 public:
  OPENVINO_OP("GatedBlockWithGateAndShortcutInt8", "gatekit");
  GatedBlockWithGateAndShortcutInt8() : BlockOpInt8(gatekit::kGatedBlockWithGateAndShortcutInt8) {}
  GatedBlockWithGateAndShortcutInt8(const ov::OutputVector& args, int64_t stride)
      : BlockOpInt8(args, stride, gatekit::kGatedBlockWithGateAndShortcutInt8) {
    constructor_validate_and_infer_types();
  }
  std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& a) const override {
    return clone_as<GatedBlockWithGateAndShortcutInt8>(a);
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
         "GatedBlockWithGateAndShortcut", "gatekit"),
     std::make_shared<ov::OpExtension<gatekit_ov::GatedBlockInt8>>(),
     std::make_shared<ov::frontend::onnx::OpExtension<gatekit_ov::GatedBlockInt8>>("GatedBlockInt8", "gatekit"),
     std::make_shared<ov::OpExtension<gatekit_ov::GatedBlockWithGateInt8>>(),
     std::make_shared<ov::frontend::onnx::OpExtension<gatekit_ov::GatedBlockWithGateInt8>>("GatedBlockWithGateInt8",
                                                                                           "gatekit"),
     std::make_shared<ov::OpExtension<gatekit_ov::GatedBlockWithGateAndShortcutInt8>>(),
     std::make_shared<ov::frontend::onnx::OpExtension<gatekit_ov::GatedBlockWithGateAndShortcutInt8>>(
         "GatedBlockWithGateAndShortcutInt8", "gatekit")}));

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
    info += ", " + gatekit::build_info_int8_json();
    info += "}";
  });
  return info.c_str();
}
