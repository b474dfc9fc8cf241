// ONNX Runtime custom-op library: the gatekit ops (domain "gatekit", opset 1), attribute stride (1 or 2):
//
//   y = GatedBlock(x, mask, W1, b1, W2, b2, residual)                   the mask is an input
//   y = GatedBlockWithGate(x, G1, g1, G2, W1, b1, W2, b2, residual)     the block computes its own mask
//   y = GatedBlockWithGateAndShortcut(x, G1, g1, G2, W1, b1, W2, b2, Ws, bs)   ... and its residual (1x1 conv)
//
// and their int8 forms (gated_block_int8.h: int8 weights with per-channel scales, quantization inside):
//
//   y = GatedBlockInt8(x, mask, W1, w1_scale, b1, W2, w2_scale, b2, residual, x_scale, h_scale)
//   y = GatedBlockWithGateInt8(x, G1, g1, G2, W1, w1_scale, b1, W2, w2_scale, b2, residual, x_scale, h_scale)
//   y = GatedBlockWithGateAndShortcutInt8(x, G1, g1, G2, W1, w1_scale, b1, W2, w2_scale, b2, Ws, ws_scale, bs,
//                                         x_scale, h_scale)
//
// C API only, no link to libonnxruntime; exports RegisterCustomOps (loaded with
// SessionOptions.register_custom_ops_library) and gatekit_ops_build_info.  The weights (W1, b1, W2, b2, the
// gate's G1, g1, G2 and the shortcut's Ws, bs) must be constant initializers: they are read and packed once in CreateKernelV2,
// when the session is created.  Tasks run on the session's intra-op thread pool through
// KernelContext_ParallelFor.
#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#if defined(GATEKIT_USE_ORT_HEADERS)
#include <onnxruntime_c_api.h>
#define GATEKIT_ORT_API_VERSION 17
#define GATEKIT_ORT_HEADERS "official"
#else
#include "ort_abi.h"
#define GATEKIT_ORT_HEADERS "gatekit ort_abi.h"
#endif

#include "channel_gate.h"
#include "gated_block.h"
#include "gated_block_int8.h"
#include "op_layouts.h"

#define GATEKIT_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

const char* const kDomain = "gatekit";
const OrtApi* g_api = nullptr;  // the API 17 table of the runtime that registered us

using Layout = gatekit::OpLayout;
using gatekit::kGatedBlock;
using gatekit::kGatedBlockWithGate;
using gatekit::kGatedBlockWithGateAndShortcut;

// An OrtCustomOp followed by its layout: ORT hands the OrtCustomOp* back to every callback.
struct OpDef {
  OrtCustomOp op;
  const Layout* layout;
};
const Layout& layout_of(const OrtCustomOp* op) { return *reinterpret_cast<const OpDef*>(op)->layout; }

struct Kernel {
  const OrtApi* api = nullptr;
  const Layout* layout = nullptr;
  std::shared_ptr<const gatekit::PackedBlock> pb;
  std::shared_ptr<const gatekit::PackedGate> gate;  // GatedBlockWithGate only
  int stride = 1;
  int64_t C = 0, Cin = 0, Cout = 0;
};

OrtStatus* fail(const OrtApi* api, const Layout& layout, const std::string& msg) {
  return api->CreateStatus(ORT_FAIL, (std::string("gatekit::") + layout.name + ": " + msg).c_str());
}

// Element type and dimensions of a tensor value.
OrtStatus* value_dims(const OrtApi* api, const OrtValue* v, std::vector<int64_t>& dims, bool* is_float,
                      ONNXTensorElementDataType* type = nullptr) {
  OrtTensorTypeAndShapeInfo* info = nullptr;
  OrtStatus* st = api->GetTensorTypeAndShape(v, &info);
  if (st) return st;
  size_t n = 0;
  ONNXTensorElementDataType et = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  st = api->GetTensorElementType(info, &et);
  if (!st) st = api->GetDimensionsCount(info, &n);
  if (!st) {
    dims.assign(n, 0);
    st = api->GetDimensions(info, dims.data(), n);
  }
  api->ReleaseTensorTypeAndShapeInfo(info);
  if (is_float) *is_float = et == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  if (type) *type = et;
  return st;
}

std::string dims_str(const std::vector<int64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

// ---------------------------------------------------------------------------------------------------------
// A float32 constant initializer input: its data and dimensions, or an error naming it.
OrtStatus* constant_input(const OrtApi* api, const Layout& L, const OrtKernelInfo* info, size_t index, const char* name,
                          const float** data, std::vector<int64_t>& dims) {
  int is_const = 0;
  const OrtValue* v = nullptr;
  OrtStatus* st = api->KernelInfoGetConstantInput_tensor(info, index, &is_const, &v);
  if (st) return st;
  if (!is_const || !v)
    return fail(api, L, std::string("input ") + name +
                            " must be a constant initializer (the weights are packed once, when the session is created)");
  bool is_float = false;
  st = value_dims(api, v, dims, &is_float);
  if (st) return st;
  if (!is_float) return fail(api, L, std::string("input ") + name + " must be float32");
  void* p = nullptr;
  st = api->GetTensorMutableData(const_cast<OrtValue*>(v), &p);
  if (st) return st;
  *data = static_cast<const float*>(p);
  return nullptr;
}

OrtStatusPtr create_kernel(const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info, void** out) noexcept {
  const Layout& L = layout_of(op);
  try {
    *out = nullptr;
    int64_t stride = 1;
    OrtStatus* st = api->KernelInfoGetAttribute_int64(info, "stride", &stride);
    if (st) {  // absent: ONNX default of 1
      api->ReleaseStatus(st);
      stride = 1;
    }
    if (stride != 1 && stride != 2)
      return fail(api, L, "attribute stride must be 1 or 2, got " + std::to_string(stride));

    // Every constant input (weights, gate, shortcut): its data and dimensions, by input index.
    const size_t n_in = L.inputs;
    std::vector<const float*> data(n_in, nullptr);
    std::vector<std::vector<int64_t>> dims(n_in);
    std::vector<bool> have(n_in, false);
    auto read = [&](int first, int count, const char* const* names) -> OrtStatus* {
      for (int i = 0; i < count; ++i) {
        OrtStatus* s = constant_input(api, L, info, (size_t)(first + i), names[i], &data[first + i], dims[first + i]);
        if (s) return s;
        have[first + i] = true;
      }
      return nullptr;
    };
    static const char* const wnames[4] = {"W1", "b1", "W2", "b2"};
    static const char* const gnames[3] = {"G1", "g1", "G2"};
    static const char* const snames[2] = {"Ws", "bs"};
    if ((st = read(L.weights, 4, wnames))) return st;
    if (L.gate >= 0 && (st = read(L.gate, 3, gnames))) return st;
    if (L.shortcut >= 0 && (st = read(L.shortcut, 2, snames))) return st;
    const std::string err = gatekit::weight_shape_error(L, [&](int i, std::vector<int64_t>& d) {
      if (i < 0 || (size_t)i >= n_in || !have[i]) return false;
      d = dims[i];
      return true;
    });
    if (!err.empty()) return fail(api, L, err);
    const int64_t C = dims[L.weights][0], Cin = dims[L.weights][1], Cout = dims[L.weights + 2][0];

    auto k = std::make_unique<Kernel>();
    if (L.gate >= 0) {
      const int g = L.gate;
      k->gate = gatekit::pack_gate(data[g], data[g + 1], data[g + 2], dims[g][0], Cin, C);
    }
    const float* ws = L.shortcut >= 0 ? data[L.shortcut] : nullptr;
    const float* bs = L.shortcut >= 0 ? data[L.shortcut + 1] : nullptr;
    k->api = api;
    k->layout = &L;
    k->stride = (int)stride;
    k->C = C;
    k->Cin = Cin;
    k->Cout = Cout;
    const int w = L.weights;
    k->pb = gatekit::pack_block(data[w], data[w + 1], data[w + 2], data[w + 3], C, Cin, Cout, ws, bs);
    *out = k.release();
    return nullptr;
  } catch (const std::exception& e) {
    return fail(api, L, e.what());
  } catch (...) {
    return fail(api, L, "unknown error while packing weights");
  }
}

// CPUs this process may run on.  ORT's C API does not tell a kernel its session's intra-op thread count,
// so tasks are balanced for this many (with fewer threads the split costs almost nothing: see
// gated_block.cpp, task_target).
int usable_cpus() {
  static const int n = [] {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
    return 1;
  }();
  return n;
}

struct PfCtx {
  const OrtApi* api;
  const OrtKernelContext* ctx;
};

void ort_parallel_for(void* c, size_t n, gatekit::TaskFn fn, void* arg) {
  const PfCtx* p = static_cast<const PfCtx*>(c);
  if (n <= 1) {
    if (n == 1) fn(arg, 0);
    return;
  }
  OrtStatus* st = p->api->KernelContext_ParallelFor(p->ctx, fn, n, 0, arg);
  if (st) {  // nothing ran: fall back to this thread
    p->api->ReleaseStatus(st);
    for (size_t i = 0; i < n; ++i) fn(arg, i);
  }
}

OrtStatusPtr compute(void* op_kernel, OrtKernelContext* ctx) noexcept {
  const Kernel* k = static_cast<const Kernel*>(op_kernel);
  const OrtApi* api = k->api;
  const Layout& L = *k->layout;
  try {
    // x, the residual and the mask where they are inputs
    const OrtValue* in[3] = {nullptr, nullptr, nullptr};
    const int idx[3] = {0, L.residual, L.mask};
    std::vector<int64_t> d[3];
    const float* ptr[3] = {nullptr, nullptr, nullptr};
    for (int i = 0; i < 3; ++i) {
      if (idx[i] < 0) continue;
      OrtStatus* st = api->KernelContext_GetInput(ctx, idx[i], &in[i]);
      if (st) return st;
      if (!in[i]) return fail(api, L, "missing input");
      st = value_dims(api, in[i], d[i], nullptr);
      if (st) return st;
      void* p = nullptr;
      st = api->GetTensorMutableData(const_cast<OrtValue*>(in[i]), &p);
      if (st) return st;
      ptr[i] = static_cast<const float*>(p);
    }
    const auto& xd = d[0];
    if (xd.size() != 4 || xd[1] != k->Cin)
      return fail(api, L, "x must be [N, " + std::to_string(k->Cin) + ", H, W], got " + dims_str(xd));
    const int64_t N = xd[0], H = xd[2], W = xd[3];
    const int64_t Ho = gatekit::out_size(H, k->stride), Wo = gatekit::out_size(W, k->stride);
    if (L.mask >= 0 && d[2] != std::vector<int64_t>{N, k->C})
      return fail(api, L, "mask must be [" + std::to_string(N) + ", " + std::to_string(k->C) + "], got " + dims_str(d[2]));
    const std::vector<int64_t> yd{N, k->Cout, Ho, Wo};
    if (L.residual >= 0 && d[1] != yd)
      return fail(api, L, "residual must be " + dims_str(yd) + ", got " + dims_str(d[1]));

    OrtValue* yv = nullptr;
    OrtStatus* st = api->KernelContext_GetOutput(ctx, 0, yd.data(), yd.size(), &yv);
    if (st) return st;
    void* yp = nullptr;
    st = api->GetTensorMutableData(yv, &yp);
    if (st) return st;

    gatekit::BlockIO io;
    io.x = ptr[0];
    io.mask = ptr[2];  // null for GatedBlockWithGate: its gate decides
    io.gate = k->gate.get();
    io.residual = ptr[1];  // null with a shortcut: the block computes it
    io.y = static_cast<float*>(yp);
    io.n = N;
    io.h = H;
    io.w = W;
    io.stride = k->stride;
    io.threads = usable_cpus();
    PfCtx pf{api, ctx};
    const std::string err = gatekit::run_block(*k->pb, io, &ort_parallel_for, &pf);
    if (!err.empty()) return api->CreateStatus(ORT_RUNTIME_EXCEPTION, err.c_str());
    return nullptr;
  } catch (const std::exception& e) {
    return fail(api, L, e.what());
  } catch (...) {
    return fail(api, L, "unknown error");
  }
}

void destroy_kernel(void* op_kernel) noexcept { delete static_cast<Kernel*>(op_kernel); }

// Output shape = residual shape (left to the graph's value_info where the op computes its residual).  ORT
// ignores the returned status, so errors are dropped here.
OrtStatusPtr infer_shape(const OrtCustomOp* op, OrtShapeInferContext* ctx) noexcept {
  const OrtApi* api = g_api;
  if (!api || layout_of(op).residual < 0) return nullptr;
  OrtTensorTypeAndShapeInfo* info = nullptr;  // owned by ctx
  OrtStatus* st = api->ShapeInferContext_GetInputTypeShape(ctx, (size_t)layout_of(op).residual, &info);
  if (st) {
    api->ReleaseStatus(st);
    return nullptr;
  }
  size_t n = 0;
  st = api->GetDimensionsCount(info, &n);
  if (st) {
    api->ReleaseStatus(st);
    return nullptr;
  }
  if (n != 4) return nullptr;  // unknown residual shape: leave the output shape unknown
  st = api->ShapeInferContext_SetOutputTypeShape(ctx, 0, info);
  if (st) api->ReleaseStatus(st);
  return nullptr;
}

const char* op_name(const OrtCustomOp* op) noexcept { return layout_of(op).name; }
const char* op_ep(const OrtCustomOp*) noexcept { return nullptr; }  // CPU
ONNXTensorElementDataType op_type(const OrtCustomOp*, size_t) noexcept { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
size_t op_inputs(const OrtCustomOp* op) noexcept { return layout_of(op).inputs; }
size_t op_outputs(const OrtCustomOp*) noexcept { return 1; }
OrtCustomOpInputOutputCharacteristic op_required(const OrtCustomOp*, size_t) noexcept { return INPUT_OUTPUT_REQUIRED; }
OrtMemType op_memtype(const OrtCustomOp*, size_t) noexcept { return OrtMemTypeDefault; }
int op_one(const OrtCustomOp*) noexcept { return 1; }
int op_start(const OrtCustomOp*) noexcept { return 1; }
int op_end(const OrtCustomOp*) noexcept { return 2147483647; }

OpDef make_op(const Layout* layout) {
  OpDef def;
  std::memset(&def.op, 0, sizeof(def.op));
  def.layout = layout;
  OrtCustomOp& op = def.op;
  op.version = GATEKIT_ORT_API_VERSION;
  op.CreateKernel = nullptr;  // CreateKernelV2 is used (API >= 16)
  op.GetName = &op_name;
  op.GetExecutionProviderType = &op_ep;
  op.GetInputType = &op_type;
  op.GetInputTypeCount = &op_inputs;
  op.GetOutputType = &op_type;
  op.GetOutputTypeCount = &op_outputs;
  op.KernelCompute = nullptr;  // KernelComputeV2 is used
  op.KernelDestroy = &destroy_kernel;
  op.GetInputCharacteristic = &op_required;
  op.GetOutputCharacteristic = &op_required;
  op.GetInputMemoryType = &op_memtype;
  op.GetVariadicInputMinArity = &op_one;
  op.GetVariadicInputHomogeneity = &op_one;
  op.GetVariadicOutputMinArity = &op_one;
  op.GetVariadicOutputHomogeneity = &op_one;
  op.CreateKernelV2 = &create_kernel;
  op.KernelComputeV2 = &compute;
  op.InferOutputShapeFn = &infer_shape;
  op.GetStartVersion = &op_start;
  op.GetEndVersion = &op_end;
  return def;
}

const OpDef g_ops[3] = {make_op(&kGatedBlock), make_op(&kGatedBlockWithGate), make_op(&kGatedBlockWithGateAndShortcut)};

// ---------------------------------------------------------------------------------------------------------
// The int8 ops.
using Layout8 = gatekit::OpLayoutInt8;
using gatekit::Int8Input;

struct OpDef8 {
  OrtCustomOp op;
  const Layout8* layout;
};
const Layout8& layout8_of(const OrtCustomOp* op) { return *reinterpret_cast<const OpDef8*>(op)->layout; }

struct Kernel8 {
  const OrtApi* api = nullptr;
  const Layout8* layout = nullptr;
  std::shared_ptr<const gatekit::PackedBlockInt8> pb;
  std::shared_ptr<const gatekit::PackedGate> gate;
  int stride = 1;
  int64_t C = 0, Cin = 0, Cout = 0;
};

OrtStatus* fail8(const OrtApi* api, const Layout8& layout, const std::string& msg) {
  return api->CreateStatus(ORT_FAIL, (std::string("gatekit::") + layout.name + ": " + msg).c_str());
}

OrtStatusPtr create_kernel8(const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info, void** out) noexcept {
  const Layout8& L = layout8_of(op);
  try {
    *out = nullptr;
    int64_t stride = 1;
    OrtStatus* st = api->KernelInfoGetAttribute_int64(info, "stride", &stride);
    if (st) {  // absent: ONNX default of 1
      api->ReleaseStatus(st);
      stride = 1;
    }
    if (stride != 1 && stride != 2)
      return fail8(api, L, "attribute stride must be 1 or 2, got " + std::to_string(stride));
    // Every constant input: int8 weights, float32 scales, biases and gate; read and checked by kind.
    const int n_in = (int)L.inputs;
    std::vector<const void*> data(n_in, nullptr);
    std::vector<std::vector<int64_t>> dims(n_in);
    std::vector<bool> have(n_in, false);
    for (int i = 0; i < n_in; ++i) {
      const Int8Input kind = gatekit::int8_input_kind(L, i);
      if (kind == Int8Input::kTensor) continue;
      const char* name = gatekit::int8_input_name(L, i);
      int is_const = 0;
      const OrtValue* v = nullptr;
      st = api->KernelInfoGetConstantInput_tensor(info, (size_t)i, &is_const, &v);
      if (st) return st;
      if (!is_const || !v)
        return fail8(api, L, std::string("input ") + name +
                                 " must be a constant initializer (the weights are packed once, when the session is created)");
      ONNXTensorElementDataType et = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
      st = value_dims(api, v, dims[i], nullptr, &et);
      if (st) return st;
      if (kind == Int8Input::kInt8Weight && et != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8)
        return fail8(api, L, std::string("input ") + name + " must be int8");
      if (kind == Int8Input::kFloatConstant && et != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
        return fail8(api, L, std::string("input ") + name + " must be float32");
      void* p = nullptr;
      st = api->GetTensorMutableData(const_cast<OrtValue*>(v), &p);
      if (st) return st;
      data[i] = p;
      have[i] = true;
    }
    const std::string err = gatekit::weight_shape_error_int8(L, [&](int i, std::vector<int64_t>& d) {
      if (i < 0 || i >= n_in || !have[i]) return false;
      d = dims[i];
      return true;
    });
    if (!err.empty()) return fail8(api, L, err);
    const int w = L.weights;
    auto f32 = [&](int i) { return static_cast<const float*>(data[i]); };
    auto i8 = [&](int i) { return static_cast<const int8_t*>(data[i]); };
    gatekit::Int8BlockWeights wt;
    wt.c = dims[w][0];
    wt.cin = dims[w][1];
    wt.cout = dims[w + 3][0];
    wt.w1 = i8(w);
    wt.w1_scale = f32(w + 1);
    wt.b1 = f32(w + 2);
    wt.w2 = i8(w + 3);
    wt.w2_scale = f32(w + 4);
    wt.b2 = f32(w + 5);
    if (L.shortcut >= 0) {
      wt.ws = i8(L.shortcut);
      wt.ws_scale = f32(L.shortcut + 1);
      wt.bs = f32(L.shortcut + 2);
    }
    wt.x_scale = *f32(L.scales);
    wt.h_scale = *f32(L.scales + 1);
    auto k = std::make_unique<Kernel8>();
    if (L.gate >= 0) {
      const int g = L.gate;
      k->gate = gatekit::pack_gate(f32(g), f32(g + 1), f32(g + 2), dims[g][0], wt.cin, wt.c);
    }
    k->api = api;
    k->layout = &L;
    k->stride = (int)stride;
    k->C = wt.c;
    k->Cin = wt.cin;
    k->Cout = wt.cout;
    k->pb = gatekit::pack_block_int8(wt);
    *out = k.release();
    return nullptr;
  } catch (const std::exception& e) {
    return fail8(api, L, e.what());
  } catch (...) {
    return fail8(api, L, "unknown error while packing weights");
  }
}

OrtStatusPtr compute8(void* op_kernel, OrtKernelContext* ctx) noexcept {
  const Kernel8* k = static_cast<const Kernel8*>(op_kernel);
  const OrtApi* api = k->api;
  const Layout8& L = *k->layout;
  try {
    // x, the residual and the mask where they are inputs
    const OrtValue* in[3] = {nullptr, nullptr, nullptr};
    const int idx[3] = {0, L.residual, L.mask};
    std::vector<int64_t> d[3];
    const float* ptr[3] = {nullptr, nullptr, nullptr};
    for (int i = 0; i < 3; ++i) {
      if (idx[i] < 0) continue;
      OrtStatus* st = api->KernelContext_GetInput(ctx, idx[i], &in[i]);
      if (st) return st;
      if (!in[i]) return fail8(api, L, "missing input");
      st = value_dims(api, in[i], d[i], nullptr);
      if (st) return st;
      void* p = nullptr;
      st = api->GetTensorMutableData(const_cast<OrtValue*>(in[i]), &p);
      if (st) return st;
      ptr[i] = static_cast<const float*>(p);
    }
    const auto& xd = d[0];
    if (xd.size() != 4 || xd[1] != k->Cin)
      return fail8(api, L, "x must be [N, " + std::to_string(k->Cin) + ", H, W], got " + dims_str(xd));
    const int64_t N = xd[0], H = xd[2], W = xd[3];
    const int64_t Ho = gatekit::out_size(H, k->stride), Wo = gatekit::out_size(W, k->stride);
    if (L.mask >= 0 && d[2] != std::vector<int64_t>{N, k->C})
      return fail8(api, L, "mask must be [" + std::to_string(N) + ", " + std::to_string(k->C) + "], got " + dims_str(d[2]));
    const std::vector<int64_t> yd{N, k->Cout, Ho, Wo};
    if (L.residual >= 0 && d[1] != yd)
      return fail8(api, L, "residual must be " + dims_str(yd) + ", got " + dims_str(d[1]));

    OrtValue* yv = nullptr;
    OrtStatus* st = api->KernelContext_GetOutput(ctx, 0, yd.data(), yd.size(), &yv);
    if (st) return st;
    void* yp = nullptr;
    st = api->GetTensorMutableData(yv, &yp);
    if (st) return st;

    gatekit::BlockIO io;
    io.x = ptr[0];
    io.mask = ptr[2];  // null with a gate: it decides
    io.gate = k->gate.get();
    io.residual = ptr[1];  // null with a shortcut: the block computes it
    io.y = static_cast<float*>(yp);
    io.n = N;
    io.h = H;
    io.w = W;
    io.stride = k->stride;
    io.threads = usable_cpus();
    PfCtx pf{api, ctx};
    const std::string err = gatekit::run_block_int8(*k->pb, io, &ort_parallel_for, &pf);
    if (!err.empty())
      return api->CreateStatus(ORT_RUNTIME_EXCEPTION, (std::string("gatekit::") + L.name + ": " + err).c_str());
    return nullptr;
  } catch (const std::exception& e) {
    return fail8(api, L, e.what());
  } catch (...) {
    return fail8(api, L, "unknown error");
  }
}

void destroy_kernel8(void* op_kernel) noexcept { delete static_cast<Kernel8*>(op_kernel); }

OrtStatusPtr infer_shape8(const OrtCustomOp* op, OrtShapeInferContext* ctx) noexcept {
  const OrtApi* api = g_api;
  const int residual = layout8_of(op).residual;
  if (!api || residual < 0) return nullptr;
  OrtTensorTypeAndShapeInfo* info = nullptr;  // owned by ctx
  OrtStatus* st = api->ShapeInferContext_GetInputTypeShape(ctx, (size_t)residual, &info);
  if (st) {
    api->ReleaseStatus(st);
    return nullptr;
  }
  size_t n = 0;
  st = api->GetDimensionsCount(info, &n);
  if (st) {
    api->ReleaseStatus(st);
    return nullptr;
  }
  if (n != 4) return nullptr;
  st = api->ShapeInferContext_SetOutputTypeShape(ctx, 0, info);
  if (st) api->ReleaseStatus(st);
  return nullptr;
}

const char* op_name8(const OrtCustomOp* op) noexcept { return layout8_of(op).name; }
ONNXTensorElementDataType op_input_type8(const OrtCustomOp* op, size_t i) noexcept {
  return gatekit::int8_input_kind(layout8_of(op), (int)i) == Int8Input::kInt8Weight ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8
                                                                                   : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}
size_t op_inputs8(const OrtCustomOp* op) noexcept { return layout8_of(op).inputs; }

OpDef8 make_op8(const Layout8* layout) {
  OpDef8 def;
  const OpDef base = make_op(nullptr);
  def.op = base.op;
  def.layout = layout;
  OrtCustomOp& op = def.op;
  op.GetName = &op_name8;
  op.GetInputType = &op_input_type8;
  op.GetInputTypeCount = &op_inputs8;
  op.KernelDestroy = &destroy_kernel8;
  op.CreateKernelV2 = &create_kernel8;
  op.KernelComputeV2 = &compute8;
  op.InferOutputShapeFn = &infer_shape8;
  return def;
}

const OpDef8 g_ops8[3] = {make_op8(&gatekit::kGatedBlockInt8), make_op8(&gatekit::kGatedBlockWithGateInt8),
                          make_op8(&gatekit::kGatedBlockWithGateAndShortcutInt8)};

// Domains must outlive every session created from the options they were added to; ORT does not tell us
// when that is, so they are kept for the life of the process (one small object per registration).
std::mutex g_domains_mutex;
std::vector<OrtCustomOpDomain*> g_domains;

}  // namespace

GATEKIT_EXPORT OrtStatus* RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(GATEKIT_ORT_API_VERSION);
  if (!api) {
    // Every runtime serves API 1, whose first slot is CreateStatus.
    const OrtApi* api1 = api_base->GetApi(1);
    const char* ver = api_base->GetVersionString ? api_base->GetVersionString() : "?";
    std::string msg = std::string("gatekit_ort_ops was built for ONNX Runtime API version ") +
                      std::to_string(GATEKIT_ORT_API_VERSION) + " (onnxruntime >= 1." +
                      std::to_string(GATEKIT_ORT_API_VERSION) + "); this onnxruntime " + ver +
                      " does not provide it: upgrade onnxruntime";
    if (!api1) {
      std::fprintf(stderr, "%s\n", msg.c_str());
      return nullptr;
    }
    return api1->CreateStatus(ORT_FAIL, msg.c_str());
  }
  g_api = api;
  OrtCustomOpDomain* domain = nullptr;
  OrtStatus* st = api->CreateCustomOpDomain(kDomain, &domain);
  if (st) return st;
  {
    std::lock_guard<std::mutex> lock(g_domains_mutex);
    g_domains.push_back(domain);
  }
  for (const OpDef& def : g_ops) {
    st = api->CustomOpDomain_Add(domain, &def.op);
    if (st) return st;
  }
  for (const OpDef8& def : g_ops8) {
    st = api->CustomOpDomain_Add(domain, &def.op);
    if (st) return st;
  }
  return api->AddCustomOpDomain(options, domain);
}

GATEKIT_EXPORT const char* gatekit_ops_build_info() {
  static std::once_flag once;
  static std::string info;
  std::call_once(once, [] {
    info = "{\"library\": \"gatekit_ort_ops\", \"runtime\": \"onnxruntime\", ";
    info += "\"ort_api_version\": " + std::to_string(GATEKIT_ORT_API_VERSION) + ", ";
    info += "\"ort_headers\": \"" GATEKIT_ORT_HEADERS "\", ";
    info += gatekit::build_info_common_json();
    info += ", " + gatekit::build_info_int8_json();
    info += "}";
  });
  return info.c_str();
}
