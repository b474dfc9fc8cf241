// OpenVINO extension: gatekit::GatedBlock (type "GatedBlock", opset "gatekit").
//
// Load with core.add_extension(path); the ONNX frontend then maps ONNX nodes GatedBlock of domain "gatekit"
// to this op, so the same .onnx file serves ONNX Runtime and OpenVINO.  The CPU plugin runs the op through
// evaluate(); weights are packed on the first evaluate() and cached, shared by clones of the node.
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

#include "gated_block.h"

#define GATEKIT_EXPORT extern "C" __attribute__((visibility("default")))

namespace gatekit_ov {

// Packed weights, keyed by the weight tensors they were packed from.  Shared by a node and its clones; a
// compiled model may hand each stream its own copy of the constants, hence a few entries.
class PackCache {
 public:
  std::shared_ptr<const gatekit::PackedBlock> get(const ov::TensorVector& in) {
    Key key;
    for (int k = 0; k < 4; ++k) {
      key.ptr[k] = in[2 + k].data();
      key.size[k] = in[2 + k].get_size();
    }
    std::lock_guard<std::mutex> lock(m_mutex);
    for (const auto& e : m_entries)
      if (std::memcmp(&e.first, &key, sizeof(Key)) == 0) return e.second;
    const auto& w1 = in[2].get_shape();
    const auto& w2 = in[4].get_shape();
    OPENVINO_ASSERT(w1.size() == 4 && w1[2] == 3 && w1[3] == 3, "gatekit::GatedBlock: W1 must be [C, Cin, 3, 3]");
    OPENVINO_ASSERT(w2.size() == 4 && w2[1] == w1[0] && w2[2] == 3 && w2[3] == 3,
                    "gatekit::GatedBlock: W2 must be [Cout, C, 3, 3]");
    OPENVINO_ASSERT(in[3].get_size() == w1[0] && in[5].get_size() == w2[0],
                    "gatekit::GatedBlock: b1 must be [C] and b2 [Cout]");
    for (int k = 2; k < 6; ++k)
      OPENVINO_ASSERT(in[k].get_element_type() == ov::element::f32, "gatekit::GatedBlock: weights must be f32");
    auto pb = gatekit::pack_block(in[2].data<const float>(), in[3].data<const float>(), in[4].data<const float>(),
                                  in[5].data<const float>(), (int64_t)w1[0], (int64_t)w1[1], (int64_t)w2[0]);
    if (m_entries.size() >= 8) m_entries.erase(m_entries.begin());
    m_entries.emplace_back(key, pb);
    return pb;
  }

 private:
  struct Key {
    const void* ptr[4];
    size_t size[4];
  };
  std::mutex m_mutex;
  std::vector<std::pair<Key, std::shared_ptr<const gatekit::PackedBlock>>> m_entries;
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

class GatedBlock : public ov::op::Op {
 public:
  OPENVINO_OP("GatedBlock", "gatekit");

  GatedBlock() = default;
  GatedBlock(const ov::OutputVector& args, int64_t stride) : Op(args), m_stride(stride) {
    constructor_validate_and_infer_types();
  }

  void validate_and_infer_types() override {
    NODE_VALIDATION_CHECK(this, get_input_size() == 7, "GatedBlock expects 7 inputs, got ", get_input_size());
    NODE_VALIDATION_CHECK(this, m_stride == 1 || m_stride == 2, "GatedBlock: stride must be 1 or 2, got ", m_stride);
    const auto et = get_input_element_type(0);
    NODE_VALIDATION_CHECK(this, et == ov::element::f32 || et.is_dynamic(), "GatedBlock: x must be f32");
    // Output: [N, Cout, Ho, Wo], the residual's shape; filled in from x and W2 where the residual is unknown.
    ov::PartialShape out = get_input_partial_shape(6);
    const auto& x = get_input_partial_shape(0);
    const auto& w2 = get_input_partial_shape(4);
    if (out.rank().is_dynamic()) out = ov::PartialShape::dynamic(4);
    NODE_VALIDATION_CHECK(this, out.rank().get_length() == 4, "GatedBlock: residual must be 4-D");
    if (x.rank().is_static() && x.rank().get_length() == 4) {
      ov::PartialShape from_x{x[0], w2.rank().is_static() ? w2[0] : ov::Dimension::dynamic(),
                              x[2].is_static() ? ov::Dimension((x[2].get_length() - 1) / m_stride + 1)
                                               : ov::Dimension::dynamic(),
                              x[3].is_static() ? ov::Dimension((x[3].get_length() - 1) / m_stride + 1)
                                               : ov::Dimension::dynamic()};
      NODE_VALIDATION_CHECK(this, ov::PartialShape::merge_into(out, from_x),
                            "GatedBlock: residual shape ", get_input_partial_shape(6),
                            " does not match the output shape ", from_x);
    }
    set_output_type(0, et.is_dynamic() ? ov::element::f32 : et, out);
  }

  std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& new_args) const override {
    check_new_args_count(this, new_args);
    auto node = std::make_shared<GatedBlock>(new_args, m_stride);
    node->m_cache = m_cache;
    return node;
  }

  bool visit_attributes(ov::AttributeVisitor& visitor) override {
    visitor.on_attribute("stride", m_stride);
    return true;
  }

  bool has_evaluate() const override { return true; }

  bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
    if (inputs.size() != 7 || outputs.size() != 1) return false;
    for (size_t i : {size_t(0), size_t(1), size_t(6)})
      if (inputs[i].get_element_type() != ov::element::f32) return false;
    auto pb = m_cache->get(inputs);
    const auto dims = gatekit::block_dims(*pb);
    const auto& xs = inputs[0].get_shape();
    OPENVINO_ASSERT(xs.size() == 4 && (int64_t)xs[1] == dims.cin, "gatekit::GatedBlock: x must be [N, ", dims.cin,
                    ", H, W], got ", xs);
    const int64_t N = xs[0], H = xs[2], W = xs[3];
    const ov::Shape ys{(size_t)N, (size_t)dims.cout, (size_t)gatekit::out_size(H, (int)m_stride),
                       (size_t)gatekit::out_size(W, (int)m_stride)};
    OPENVINO_ASSERT(inputs[1].get_shape() == ov::Shape({(size_t)N, (size_t)dims.c}),
                    "gatekit::GatedBlock: mask must be [N, C], got ", inputs[1].get_shape());
    OPENVINO_ASSERT(inputs[6].get_shape() == ys, "gatekit::GatedBlock: residual must be ", ys, ", got ",
                    inputs[6].get_shape());
    outputs[0].set_shape(ys);
    gatekit::BlockIO io;
    io.x = inputs[0].data<const float>();
    io.mask = inputs[1].data<const float>();
    io.residual = inputs[6].data<const float>();
    io.y = outputs[0].data<float>();
    io.n = N;
    io.h = H;
    io.w = W;
    io.stride = (int)m_stride;
    io.threads = ov_threads();
    const std::string err = gatekit::run_block(*pb, io, &ov_parallel_for, nullptr);
    OPENVINO_ASSERT(err.empty(), err);
    return true;
  }

 private:
  int64_t m_stride = 1;
  std::shared_ptr<PackCache> m_cache = std::make_shared<PackCache>();
};

}  // namespace gatekit_ov

OPENVINO_CREATE_EXTENSIONS(std::vector<ov::Extension::Ptr>(
    {std::make_shared<ov::OpExtension<gatekit_ov::GatedBlock>>(),
     std::make_shared<ov::frontend::onnx::OpExtension<gatekit_ov::GatedBlock>>("GatedBlock", "gatekit")}));

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
