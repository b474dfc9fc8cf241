"""int8 post-training quantization of a float graph with the runtime's own tool (torch-free: `gatekit export`
quantizes artifacts with it, calibrated on real training images; `gatekit profile --precision int8`
quantizes its synthetic graphs the same way, so a LUT times what an int8 export runs).

- ONNX Runtime: `onnxruntime.quantization.quantize_static`, QDQ format, per-channel symmetric int8
  weights, uint8 activations (the x86 VNNI kernels' U8S8 form), MinMax calibration.
- OpenVINO: `nncf.quantize` on the IR (performance preset: symmetric weights and activations),
  with NNCF's fast bias correction.

Both record what they did (tool, version, format, calibration set and count, excluded nodes) for the
manifest. Nodes can be kept in float by name pattern (`EXCLUDE_PRESETS`: the stem, the last block, the
head), the usual fix when a quantized graph drifts too far from float.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from gatekit.errors import GatekitError

# --quant-exclude names -> regular expressions over the exported graph's node names (torch.onnx names them
# after the module path: /stem/Conv, /blocks.7/conv2/Conv, /head/Gemm)
EXCLUDE_PRESETS = {"stem": r"^/stem/", "head": r"^/head/"}


def exclude_patterns(names: list[str], n_blocks: int) -> list[str]:
    """Regular expressions for `--quant-exclude` names: stem, last (the last block), head, or blockN."""
    out = []
    for name in names:
        if name in EXCLUDE_PRESETS:
            out.append(EXCLUDE_PRESETS[name])
        elif name == "last":
            out.append(rf"^/blocks\.{n_blocks - 1}/")
        elif re.fullmatch(r"block\d+", name) and int(name[5:]) < n_blocks:
            out.append(rf"^/blocks\.{int(name[5:])}/")
        else:
            raise GatekitError(f"--quant-exclude {name!r}: use stem, last, head or block0..block{n_blocks - 1}")
    return out


def _matching(node_names: list[str], patterns: list[str]) -> list[str]:
    return [n for n in node_names if any(re.search(p, n) for p in patterns)]


def quantize_onnx(src: Path, dst: Path, calibration: list[np.ndarray], patterns: list[str]) -> dict:
    """int8 QDQ ONNX from a float ONNX graph; returns what the manifest records."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = Path(dst).with_name(Path(src).stem + ".pre.onnx")
    preprocess = "shape inference and ONNX Runtime's basic graph optimizations"
    try:  # the quantizer's recommended preparation
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        src = pre
    except Exception as e:  # a graph the preprocessor cannot take is quantized as exported (still correct); recorded
        preprocess = f"skipped: {str(e).splitlines()[0][:200]}"
    model = onnx.load(str(src))
    name = model.graph.input[0].name
    excluded = _matching([n.name for n in model.graph.node], patterns)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calibration)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {name: x}

    try:
        quantize_static(
            str(src),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=excluded,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )
    except Exception as e:  # the quantizer raises several error types; one line names the cause
        raise GatekitError(f"ONNX Runtime's quantizer failed: {str(e).splitlines()[0][:300]}") from None
    return {
        "tool": "onnxruntime.quantization",
        "version": onnxruntime.__version__,
        "format": "QDQ",
        "weights": "int8, per channel, symmetric",
        "activations": "uint8, per tensor, asymmetric",
        "calibration_method": "MinMax",
        "excluded_nodes": excluded,
        "preprocess": preprocess,
    }


def quantize_openvino(model, calibration: list[np.ndarray], patterns: list[str]):
    """(int8 ov.Model, record) from a float OpenVINO model with NNCF."""
    import nncf

    scope = nncf.IgnoredScope(patterns=patterns, validate=False) if patterns else None
    try:
        quantized = nncf.quantize(
            model,
            nncf.Dataset(calibration),
            subset_size=len(calibration),
            preset=nncf.QuantizationPreset.PERFORMANCE,
            **({"ignored_scope": scope} if scope else {}),
        )
    except Exception as e:
        raise GatekitError(f"NNCF failed to quantize the IR: {str(e).splitlines()[0][:300]}") from None
    record = {
        "tool": "nncf",
        "version": nncf.__version__,
        "format": "OpenVINO IR with FakeQuantize",
        "weights": "int8, per channel, symmetric",
        "activations": "int8/uint8, per tensor, symmetric (performance preset)",
        "calibration_method": "MinMax with fast bias correction",
        "excluded_patterns": patterns,
    }
    return quantized, record


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
