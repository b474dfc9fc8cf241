// Runs an ONNX model with the gatekit op library on ONNX Runtime through its C API, without Python: how the
// aarch64 build is checked on an x86 host, under qemu-user, against the runtime library of onnxruntime's aarch64
// wheel (tests/test_native_export.py).  The runtime is loaded with dlopen, so nothing links against it.
//
//   gatekit_ort_run <libonnxruntime.so> <op library> <model.onnx> <threads> <in.f32> <N,C,H,W> <out.f32> [...]
//
// Each (input file, shape, output file) triple is one run of the model's single input and output: raw float32
// in, raw float32 out.  Prints one JSON line per run ({"output": [dims]}) and then the op library's build info;
// any error ends the program with one line on stderr and exit status 1.
#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ort_abi.h"

namespace {

const OrtApi* api = nullptr;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "gatekit_ort_run: %s\n", what.c_str());
  std::exit(1);
}

void check(OrtStatus* status, const char* call) {
  if (!status) return;
  const std::string msg = api->GetErrorMessage(status);
  api->ReleaseStatus(status);
  die(std::string(call) + ": " + msg);
}

std::vector<int64_t> parse_shape(const char* text) {
  std::vector<int64_t> dims;
  const char* p = text;
  while (*p) {
    char* end = nullptr;
    const long long v = std::strtoll(p, &end, 10);
    if (end == p || v <= 0) die(std::string("bad shape '") + text + "': expected positive integers like 4,3,32,32");
    dims.push_back(v);
    p = *end == ',' ? end + 1 : end;
    if (*end && *end != ',') die(std::string("bad shape '") + text + "'");
  }
  if (dims.empty()) die("empty shape");
  return dims;
}

std::vector<float> read_floats(const char* path, size_t count) {
  FILE* f = std::fopen(path, "rb");
  if (!f) die(std::string("cannot open ") + path);
  std::vector<float> data(count);
  const size_t got = std::fread(data.data(), sizeof(float), count, f);
  const bool more = std::fgetc(f) != EOF;
  std::fclose(f);
  if (got != count || more) die(std::string(path) + ": expected exactly " + std::to_string(count) + " float32 values");
  return data;
}

void write_floats(const char* path, const float* data, size_t count) {
  FILE* f = std::fopen(path, "wb");
  if (!f) die(std::string("cannot write ") + path);
  const size_t put = std::fwrite(data, sizeof(float), count, f);
  if (std::fclose(f) != 0 || put != count) die(std::string("cannot write ") + path);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 8 || (argc - 5) % 3 != 0) {
    std::fprintf(stderr, "usage: %s <libonnxruntime.so> <op library> <model.onnx> <threads> "
                         "<in.f32> <N,C,H,W> <out.f32> [<in.f32> <shape> <out.f32> ...]\n", argv[0]);
    return 2;
  }
  void* ort = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!ort) die(std::string("cannot load the runtime: ") + dlerror());
  typedef const OrtApiBase* (*GetApiBaseFn)(void);
  const auto get_base = reinterpret_cast<GetApiBaseFn>(dlsym(ort, "OrtGetApiBase"));
  if (!get_base) die(std::string(argv[1]) + " has no OrtGetApiBase");
  const OrtApiBase* base = get_base();
  api = base->GetApi(GATEKIT_ORT_API_VERSION);
  if (!api) die(std::string("onnxruntime ") + base->GetVersionString() + " lacks ORT API 17");
  const int threads = std::atoi(argv[4]);
  if (threads < 1) die("threads must be at least 1");

  OrtEnv* env = nullptr;
  check(api->CreateEnv(ORT_LOGGING_LEVEL_ERROR, "gatekit_ort_run", &env), "CreateEnv");
  OrtSessionOptions* options = nullptr;
  check(api->CreateSessionOptions(&options), "CreateSessionOptions");
  check(api->SetIntraOpNumThreads(options, threads), "SetIntraOpNumThreads");
  check(api->SetInterOpNumThreads(options, 1), "SetInterOpNumThreads");
  void* ops_handle = nullptr;
  check(api->RegisterCustomOpsLibrary(options, argv[2], &ops_handle), "RegisterCustomOpsLibrary");
  OrtSession* session = nullptr;
  check(api->CreateSession(env, argv[3], options, &session), "CreateSession");

  size_t n_in = 0, n_out = 0;
  check(api->SessionGetInputCount(session, &n_in), "SessionGetInputCount");
  check(api->SessionGetOutputCount(session, &n_out), "SessionGetOutputCount");
  if (n_in != 1 || n_out != 1) die("the model must have one input and one output");
  OrtAllocator* alloc = nullptr;
  check(api->GetAllocatorWithDefaultOptions(&alloc), "GetAllocatorWithDefaultOptions");
  char* in_name = nullptr;
  char* out_name = nullptr;
  check(api->SessionGetInputName(session, 0, alloc, &in_name), "SessionGetInputName");
  check(api->SessionGetOutputName(session, 0, alloc, &out_name), "SessionGetOutputName");
  OrtMemoryInfo* cpu = nullptr;
  check(api->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &cpu), "CreateCpuMemoryInfo");

  for (int a = 5; a + 2 < argc; a += 3) {
    const std::vector<int64_t> shape = parse_shape(argv[a + 1]);
    size_t count = 1;
    for (int64_t d : shape) count *= (size_t)d;
    std::vector<float> x = read_floats(argv[a], count);
    OrtValue* input = nullptr;
    check(api->CreateTensorWithDataAsOrtValue(cpu, x.data(), count * sizeof(float), shape.data(), shape.size(),
                                              ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &input), "CreateTensorWithDataAsOrtValue");
    OrtValue* output = nullptr;
    const char* const in_names[] = {in_name};
    const char* const out_names[] = {out_name};
    check(api->Run(session, nullptr, in_names, &input, 1, out_names, 1, &output), "Run");
    OrtTensorTypeAndShapeInfo* info = nullptr;
    check(api->GetTensorTypeAndShape(output, &info), "GetTensorTypeAndShape");
    ONNXTensorElementDataType type;
    check(api->GetTensorElementType(info, &type), "GetTensorElementType");
    size_t rank = 0;
    check(api->GetDimensionsCount(info, &rank), "GetDimensionsCount");
    std::vector<int64_t> dims(rank);
    check(api->GetDimensions(info, dims.data(), rank), "GetDimensions");
    api->ReleaseTensorTypeAndShapeInfo(info);
    if (type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) die("the output is not float32");
    size_t out_count = 1;
    std::string dims_json;
    for (size_t i = 0; i < rank; ++i) {
      out_count *= (size_t)dims[i];
      dims_json += (i ? ", " : "") + std::to_string(dims[i]);
    }
    void* y = nullptr;
    check(api->GetTensorMutableData(output, &y), "GetTensorMutableData");
    write_floats(argv[a + 2], static_cast<const float*>(y), out_count);
    std::printf("{\"output\": [%s]}\n", dims_json.c_str());
    api->ReleaseValue(output);
    api->ReleaseValue(input);
  }

  typedef const char* (*BuildInfoFn)(void);
  const auto build_info = reinterpret_cast<BuildInfoFn>(ops_handle ? dlsym(ops_handle, "gatekit_ops_build_info") : nullptr);
  std::printf("%s\n", build_info ? build_info() : "{}");
  check(api->AllocatorFree(alloc, in_name), "AllocatorFree");
  check(api->AllocatorFree(alloc, out_name), "AllocatorFree");
  api->ReleaseMemoryInfo(cpu);
  api->ReleaseSession(session);
  api->ReleaseSessionOptions(options);
  api->ReleaseEnv(env);
  return 0;
}
