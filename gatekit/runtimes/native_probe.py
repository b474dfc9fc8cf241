"""Which gatekit ops a built op library runs: a library built from older sources has the fp32 gated-block ops
but not the int8 ones. Answered by loading a one-block graph per op into the runtime with the library (a
session on ONNX Runtime, a compiled model on OpenVINO), once per library file and op set in a process.
Torch-free: onnx and the runtime only."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from gatekit.native_ops import DOMAIN

INT8_OPS = ("GatedBlockInt8", "GatedBlockWithGateInt8", "GatedBlockWithGateAndShortcutInt8")
_CACHE: dict[tuple, bool] = {}


def probe_model(ops) -> bytes:
    """An ONNX graph chaining one node of each gatekit int8 op in `ops` on an 8-channel 4x4 map (stride 1)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    c = 8
    inits, nodes = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    w = lambda: rng.integers(-127, 128, (c, c, 3, 3)).astype(np.int8)  # noqa: E731
    ones, zeros = np.ones(c, np.float32), np.zeros(c, np.float32)
    weights = [
        const("w1", w()),
        const("w1s", ones * 0.01),
        const("b1", zeros),
        const("w2", w()),
        const("w2s", ones * 0.01),
        const("b2", zeros),
    ]
    scales = [const("xs", np.array(0.05, np.float32)), const("hs", np.array(0.05, np.float32))]
    gate = [
        const("g1", np.zeros((2, c), np.float32)),
        const("gb", np.ones(2, np.float32)),
        const("g2", np.ones((c, 2), np.float32)),
    ]
    x = "input"
    for i, op in enumerate(ops):
        if op == "GatedBlockInt8":
            mask = const(f"mask{i}", np.ones((1, c), np.float32))
            inputs = [x, mask, *weights, x, *scales]
        elif op == "GatedBlockWithGateInt8":
            inputs = [x, *gate, *weights, x, *scales]
        elif op == "GatedBlockWithGateAndShortcutInt8":
            short = [
                const(f"ws{i}", rng.integers(-127, 128, (c, c, 1, 1)).astype(np.int8)),
                const(f"wss{i}", ones * 0.01),
                const(f"bs{i}", zeros),
            ]
            inputs = [x, *gate, *weights, *short, *scales]
        else:
            raise ValueError(f"unknown gatekit int8 op {op!r}")
        y = f"y{i}"
        nodes.append(helper.make_node(op, inputs, [y], domain=DOMAIN, stride=1))
        x = y
    nodes.append(helper.make_node("Identity", [x], ["output"]))
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, c, 4, 4]) for n in ("input", "output")]
    graph = helper.make_graph(nodes, "gatekit_probe", info[:1], info[1:], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])
    model.ir_version = 8
    return model.SerializeToString()


def _runs(runtime: str, library: str, model: bytes) -> bool:
    x = np.full((1, 8, 4, 4), 0.5, np.float32)
    try:
        if runtime == "ort":
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.log_severity_level = 4
            so.register_custom_ops_library(library)
            session = ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
            out = session.run(None, {"input": x})[0]
        else:
            import openvino as ov

            core = ov.Core()
            core.add_extension(library)
            with tempfile.TemporaryDirectory(prefix="gatekit-probe-") as tmp:
                path = Path(tmp) / "probe.onnx"
                path.write_bytes(model)
                compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
                out = compiled({0: x})[compiled.output(0)]
    except Exception:  # the runtime's own error types: an op it does not know, or cannot build
        return False
    return bool(np.isfinite(out).all())


def library_runs(runtime: str, library: str | os.PathLike | None, ops=INT8_OPS) -> bool:
    """Whether `library` (an op library built for `runtime`, "ort" or "openvino") runs every op in `ops`."""
    if library is None:
        return False
    path = Path(library)
    try:
        st = path.stat()
    except OSError:
        return False
    key = (runtime, str(path.resolve()), st.st_mtime_ns, st.st_size, tuple(ops))
    if key not in _CACHE:
        _CACHE[key] = _runs(runtime, str(path), probe_model(tuple(ops)))
    return _CACHE[key]
