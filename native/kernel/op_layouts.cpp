// The gatekit ops' weight-shape contract (op_layouts.h), one check for both runtime wrappers.
#include "op_layouts.h"

namespace gatekit {

namespace {

std::string dims_str(const std::vector<int64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

}  // namespace

std::string weight_shape_error(const OpLayout& L, const InputDims& dims) {
  std::vector<int64_t> w1, w2, d;
  if (!dims(L.weights, w1) || !dims(L.weights + 2, w2)) return std::string();
  if (w1.size() != 4 || w1[2] != 3 || w1[3] != 3) return "W1 must be [C, Cin, 3, 3], got " + dims_str(w1);
  const int64_t C = w1[0], Cin = w1[1];
  if (w2.size() != 4 || w2[1] != C || w2[2] != 3 || w2[3] != 3)
    return "W2 must be [Cout, C, 3, 3] with C = " + std::to_string(C) + ", got " + dims_str(w2);
  const int64_t Cout = w2[0];
  if (dims(L.weights + 1, d) && d != std::vector<int64_t>{C}) return "b1 must be [C], got " + dims_str(d);
  if (dims(L.weights + 3, d) && d != std::vector<int64_t>{Cout}) return "b2 must be [Cout], got " + dims_str(d);
  std::vector<int64_t> g1;
  if (L.gate >= 0 && dims(L.gate, g1)) {
    if (g1.size() != 2 || g1[1] != Cin)
      return "G1 must be [Hd, Cin] with Cin = " + std::to_string(Cin) + ", got " + dims_str(g1);
    const int64_t Hd = g1[0];
    if (dims(L.gate + 1, d) && d != std::vector<int64_t>{Hd}) return "g1 must be [Hd], got " + dims_str(d);
    if (dims(L.gate + 2, d) && d != std::vector<int64_t>{C, Hd})
      return "G2 must be [C, Hd] = [" + std::to_string(C) + ", " + std::to_string(Hd) + "], got " + dims_str(d);
  }
  if (L.shortcut >= 0) {
    if (dims(L.shortcut, d) &&
        !((d.size() == 2 || (d.size() == 4 && d[2] == 1 && d[3] == 1)) && d[0] == Cout && d[1] == Cin))
      return "Ws must be [Cout, Cin] or [Cout, Cin, 1, 1] = [" + std::to_string(Cout) + ", " + std::to_string(Cin) +
             "], got " + dims_str(d);
    if (dims(L.shortcut + 1, d) && d != std::vector<int64_t>{Cout}) return "bs must be [Cout], got " + dims_str(d);
  }
  return std::string();
}

const char* int8_input_name(const OpLayoutInt8& L, int i) {
  static const char* const weights[6] = {"W1", "w1_scale", "b1", "W2", "w2_scale", "b2"};
  static const char* const gate[3] = {"G1", "g1", "G2"};
  static const char* const shortcut[3] = {"Ws", "ws_scale", "bs"};
  if (i == 0) return "x";
  if (i == L.mask) return "mask";
  if (i == L.residual) return "residual";
  if (i >= L.weights && i < L.weights + 6) return weights[i - L.weights];
  if (L.gate >= 0 && i >= L.gate && i < L.gate + 3) return gate[i - L.gate];
  if (L.shortcut >= 0 && i >= L.shortcut && i < L.shortcut + 3) return shortcut[i - L.shortcut];
  if (i == L.scales) return "x_scale";
  if (i == L.scales + 1) return "h_scale";
  return "?";
}

Int8Input int8_input_kind(const OpLayoutInt8& L, int i) {
  if (i == 0 || i == L.mask || i == L.residual) return Int8Input::kTensor;
  if (i == L.weights || i == L.weights + 3 || (L.shortcut >= 0 && i == L.shortcut)) return Int8Input::kInt8Weight;
  return Int8Input::kFloatConstant;
}

std::string weight_shape_error_int8(const OpLayoutInt8& L, const InputDims& dims) {
  std::vector<int64_t> w1, w2, d;
  const int w = L.weights;
  if (!dims(w, w1) || !dims(w + 3, w2)) return std::string();
  if (w1.size() != 4 || w1[2] != 3 || w1[3] != 3) return "W1 must be [C, Cin, 3, 3], got " + dims_str(w1);
  const int64_t C = w1[0], Cin = w1[1];
  if (w2.size() != 4 || w2[1] != C || w2[2] != 3 || w2[3] != 3)
    return "W2 must be [Cout, C, 3, 3] with C = " + std::to_string(C) + ", got " + dims_str(w2);
  const int64_t Cout = w2[0];
  if (dims(w + 1, d) && d != std::vector<int64_t>{C}) return "w1_scale must be [C], got " + dims_str(d);
  if (dims(w + 2, d) && d != std::vector<int64_t>{C}) return "b1 must be [C], got " + dims_str(d);
  if (dims(w + 4, d) && d != std::vector<int64_t>{Cout}) return "w2_scale must be [Cout], got " + dims_str(d);
  if (dims(w + 5, d) && d != std::vector<int64_t>{Cout}) return "b2 must be [Cout], got " + dims_str(d);
  std::vector<int64_t> g1;
  if (L.gate >= 0 && dims(L.gate, g1)) {
    if (g1.size() != 2 || g1[1] != Cin)
      return "G1 must be [Hd, Cin] with Cin = " + std::to_string(Cin) + ", got " + dims_str(g1);
    const int64_t Hd = g1[0];
    if (dims(L.gate + 1, d) && d != std::vector<int64_t>{Hd}) return "g1 must be [Hd], got " + dims_str(d);
    if (dims(L.gate + 2, d) && d != std::vector<int64_t>{C, Hd})
      return "G2 must be [C, Hd] = [" + std::to_string(C) + ", " + std::to_string(Hd) + "], got " + dims_str(d);
  }
  if (L.shortcut >= 0) {
    if (dims(L.shortcut, d) &&
        !((d.size() == 2 || (d.size() == 4 && d[2] == 1 && d[3] == 1)) && d[0] == Cout && d[1] == Cin))
      return "Ws must be [Cout, Cin] or [Cout, Cin, 1, 1] = [" + std::to_string(Cout) + ", " + std::to_string(Cin) +
             "], got " + dims_str(d);
    if (dims(L.shortcut + 1, d) && d != std::vector<int64_t>{Cout}) return "ws_scale must be [Cout], got " + dims_str(d);
    if (dims(L.shortcut + 2, d) && d != std::vector<int64_t>{Cout}) return "bs must be [Cout], got " + dims_str(d);
  }
  for (int k = 0; k < 2; ++k)
    if (dims(L.scales + k, d) && !(d.empty() || d == std::vector<int64_t>{1}))
      return std::string(k ? "h_scale" : "x_scale") + " must be a scalar ([] or [1]), got " + dims_str(d);
  return std::string();
}

}  // namespace gatekit
