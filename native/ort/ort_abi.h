// The part of the ONNX Runtime C ABI that gatekit_ort_ops.cpp uses, declared by the gatekit project.
//
// This is not a copy of ONNX Runtime's header.  ONNX Runtime's C API is a versioned, append-only binary
// interface:
//   * a custom-op library exports `OrtStatus* RegisterCustomOps(OrtSessionOptions*, const OrtApiBase*)`;
//   * OrtApiBase is two function pointers: GetApi(version) and GetVersionString();
//   * GetApi(N) returns a table of function pointers (struct OrtApi) in which every entry keeps its position
//     forever and release 1.N only appends entries, so a caller built for version N may use every slot that
//     existed in 1.N on any runtime >= 1.N (and GetApi returns NULL on older runtimes);
//   * struct OrtCustomOp likewise only grows at its end, and the runtime reads only the fields that existed
//     in the version the op declares in OrtCustomOp::version.
// So this header declares: the entry-point signature, OrtApiBase, the OrtApi slots we call at their fixed
// positions (index in the comment; the slots we do not call are padding), the OrtCustomOp fields up to
// version 17, and the enum values we pass.  The positions match ONNX Runtime's public onnxruntime_c_api.h
// (checked for API 17 against ORT 1.32); tests/test_native_ops.py runs the op end to end on the installed
// runtime.  To build against the official header instead, configure with
// -DONNXRUNTIME_INCLUDE_DIR=<directory holding onnxruntime_c_api.h>.
#pragma once

#include <cstddef>
#include <cstdint>

#define GATEKIT_ORT_API_VERSION 17

extern "C" {

struct OrtStatus;
struct OrtSessionOptions;
struct OrtCustomOpDomain;
struct OrtKernelInfo;
struct OrtKernelContext;
struct OrtValue;
struct OrtTensorTypeAndShapeInfo;
struct OrtShapeInferContext;
typedef OrtStatus* OrtStatusPtr;

// Enum values (fixed by the ABI).
typedef enum OrtErrorCode {
  ORT_OK = 0,
  ORT_FAIL = 1,
  ORT_INVALID_ARGUMENT = 2,
  ORT_RUNTIME_EXCEPTION = 6,
} OrtErrorCode;

typedef enum ONNXTensorElementDataType {
  ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED = 0,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT = 1,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8 = 3,
} ONNXTensorElementDataType;

typedef enum OrtCustomOpInputOutputCharacteristic {
  INPUT_OUTPUT_REQUIRED = 0,
} OrtCustomOpInputOutputCharacteristic;

typedef enum OrtMemType {
  OrtMemTypeDefault = 0,
} OrtMemType;

struct OrtApi;

struct OrtApiBase {
  const OrtApi* (*GetApi)(uint32_t version);
  const char* (*GetVersionString)(void);
};

// struct OrtApi, slots 0 .. 274 (API 17 ends at 274 = KernelContext_ParallelFor).
#define GATEKIT_ORT_PAD(first, last) void* pad_##first##_##last[(last) - (first) + 1]
struct OrtApi {
  OrtStatus* (*CreateStatus)(OrtErrorCode code, const char* msg);             // 0
  void* slot_1;                                                               // 1 GetErrorCode
  const char* (*GetErrorMessage)(const OrtStatus* status);                    // 2
  GATEKIT_ORT_PAD(3, 25);
  OrtStatusPtr (*CreateCustomOpDomain)(const char* domain, OrtCustomOpDomain** out);          // 26
  OrtStatusPtr (*CustomOpDomain_Add)(OrtCustomOpDomain* domain, const struct OrtCustomOp* op);  // 27
  OrtStatusPtr (*AddCustomOpDomain)(OrtSessionOptions* options, OrtCustomOpDomain* domain);    // 28
  GATEKIT_ORT_PAD(29, 50);
  OrtStatusPtr (*GetTensorMutableData)(OrtValue* value, void** out);          // 51
  GATEKIT_ORT_PAD(52, 59);
  OrtStatusPtr (*GetTensorElementType)(const OrtTensorTypeAndShapeInfo* info, ONNXTensorElementDataType* out);  // 60
  OrtStatusPtr (*GetDimensionsCount)(const OrtTensorTypeAndShapeInfo* info, size_t* out);                       // 61
  OrtStatusPtr (*GetDimensions)(const OrtTensorTypeAndShapeInfo* info, int64_t* dims, size_t n);               // 62
  GATEKIT_ORT_PAD(63, 64);
  OrtStatusPtr (*GetTensorTypeAndShape)(const OrtValue* value, OrtTensorTypeAndShapeInfo** out);  // 65
  GATEKIT_ORT_PAD(66, 85);
  OrtStatusPtr (*KernelInfoGetAttribute_int64)(const OrtKernelInfo* info, const char* name, int64_t* out);  // 86
  GATEKIT_ORT_PAD(87, 88);
  void* slot_89;                                                              // 89 KernelContext_GetOutputCount
  OrtStatusPtr (*KernelContext_GetInput)(const OrtKernelContext* ctx, size_t index, const OrtValue** out);  // 90
  OrtStatusPtr (*KernelContext_GetOutput)(OrtKernelContext* ctx, size_t index, const int64_t* dims,
                                          size_t dim_count, OrtValue** out);  // 91
  void* slot_92;                                                              // 92 ReleaseEnv
  void (*ReleaseStatus)(OrtStatus* status);                                   // 93
  GATEKIT_ORT_PAD(94, 98);
  void (*ReleaseTensorTypeAndShapeInfo)(OrtTensorTypeAndShapeInfo* info);    // 99
  GATEKIT_ORT_PAD(100, 248);
  OrtStatusPtr (*KernelInfoGetConstantInput_tensor)(const OrtKernelInfo* info, size_t index, int* is_constant,
                                                    const OrtValue** out);    // 249 (API 15)
  GATEKIT_ORT_PAD(250, 267);
  OrtStatusPtr (*ShapeInferContext_GetInputTypeShape)(const OrtShapeInferContext* ctx, size_t index,
                                                      OrtTensorTypeAndShapeInfo** info);       // 268 (API 17)
  void* slot_269;                                                             // 269 ShapeInferContext_GetAttribute
  OrtStatusPtr (*ShapeInferContext_SetOutputTypeShape)(const OrtShapeInferContext* ctx, size_t index,
                                                       const OrtTensorTypeAndShapeInfo* info);  // 270 (API 17)
  GATEKIT_ORT_PAD(271, 273);
  OrtStatusPtr (*KernelContext_ParallelFor)(const OrtKernelContext* ctx, void (*fn)(void*, size_t), size_t total,
                                            size_t num_batch, void* usr_data);  // 274 (API 17)
};
#undef GATEKIT_ORT_PAD

static_assert(offsetof(OrtApi, GetErrorMessage) == 2 * sizeof(void*), "OrtApi layout");
static_assert(offsetof(OrtApi, CreateCustomOpDomain) == 26 * sizeof(void*), "OrtApi layout");
static_assert(offsetof(OrtApi, GetTensorMutableData) == 51 * sizeof(void*), "OrtApi layout");
static_assert(offsetof(OrtApi, GetTensorElementType) == 60 * sizeof(void*), "OrtApi layout");
static_assert(offsetof(OrtApi, GetTensorTypeAndShape) == 65 * sizeof(void*), "OrtApi layout");
static_assert(offsetof(OrtApi, KernelInfoGetAttribute_int64) == 86 * sizeof(void*), "OrtApi layout");
static_assert(offsetof(OrtApi, KernelContext_GetInput) == 90 * sizeof(void*), "OrtApi layout");
static_assert(offsetof(OrtApi, ReleaseStatus) == 93 * sizeof(void*), "OrtApi layout");
static_assert(offsetof(OrtApi, ReleaseTensorTypeAndShapeInfo) == 99 * sizeof(void*), "OrtApi layout");
static_assert(offsetof(OrtApi, KernelInfoGetConstantInput_tensor) == 249 * sizeof(void*), "OrtApi layout");
static_assert(offsetof(OrtApi, ShapeInferContext_GetInputTypeShape) == 268 * sizeof(void*), "OrtApi layout");
static_assert(offsetof(OrtApi, ShapeInferContext_SetOutputTypeShape) == 270 * sizeof(void*), "OrtApi layout");
static_assert(offsetof(OrtApi, KernelContext_ParallelFor) == 274 * sizeof(void*), "OrtApi layout");

// struct OrtCustomOp, fields up to version 17 (later versions append more fields after GetEndVersion).
struct OrtCustomOp {
  uint32_t version;
  void* (*CreateKernel)(const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info);
  const char* (*GetName)(const OrtCustomOp* op);
  const char* (*GetExecutionProviderType)(const OrtCustomOp* op);
  ONNXTensorElementDataType (*GetInputType)(const OrtCustomOp* op, size_t index);
  size_t (*GetInputTypeCount)(const OrtCustomOp* op);
  ONNXTensorElementDataType (*GetOutputType)(const OrtCustomOp* op, size_t index);
  size_t (*GetOutputTypeCount)(const OrtCustomOp* op);
  void (*KernelCompute)(void* op_kernel, OrtKernelContext* context);
  void (*KernelDestroy)(void* op_kernel);
  OrtCustomOpInputOutputCharacteristic (*GetInputCharacteristic)(const OrtCustomOp* op, size_t index);   // v8
  OrtCustomOpInputOutputCharacteristic (*GetOutputCharacteristic)(const OrtCustomOp* op, size_t index);  // v8
  OrtMemType (*GetInputMemoryType)(const OrtCustomOp* op, size_t index);                                // v13
  int (*GetVariadicInputMinArity)(const OrtCustomOp* op);                                                // v14
  int (*GetVariadicInputHomogeneity)(const OrtCustomOp* op);                                             // v14
  int (*GetVariadicOutputMinArity)(const OrtCustomOp* op);                                               // v14
  int (*GetVariadicOutputHomogeneity)(const OrtCustomOp* op);                                            // v14
  OrtStatusPtr (*CreateKernelV2)(const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info,
                                 void** kernel);                                                         // v16
  OrtStatusPtr (*KernelComputeV2)(void* op_kernel, OrtKernelContext* context);                           // v16
  OrtStatusPtr (*InferOutputShapeFn)(const OrtCustomOp* op, OrtShapeInferContext* ctx);                 // v17
  int (*GetStartVersion)(const OrtCustomOp* op);                                                         // v17
  int (*GetEndVersion)(const OrtCustomOp* op);                                                           // v17
};

static_assert(offsetof(OrtCustomOp, CreateKernel) == 1 * sizeof(void*), "OrtCustomOp layout");
static_assert(offsetof(OrtCustomOp, KernelDestroy) == 9 * sizeof(void*), "OrtCustomOp layout");
static_assert(offsetof(OrtCustomOp, CreateKernelV2) == 17 * sizeof(void*), "OrtCustomOp layout");
static_assert(offsetof(OrtCustomOp, GetEndVersion) == 21 * sizeof(void*), "OrtCustomOp layout");

}  // extern "C"
