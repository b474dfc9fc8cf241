"""Native GatedBlock op (native/): the ONNX Runtime custom-op library and the OpenVINO extension, run on
one-node ONNX models built with onnx.helper and checked against a float64 numpy reference.

The libraries are built once per session with gatekit.native_ops.build() into the ops cache
($GATEKIT_OPS_DIR or ~/.cache/gatekit/ops; about 25 s on 2 cores the first time, then reused); the tests skip
when no C++ compiler or cmake is available.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from gatekit import native_ops  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TOL = 1e-5

# (batch, Cin, H, W, C, Cout, stride): odd widths, odd and tiny maps, stride 1 and 2, batch 1 and 8; the 4x4 and
# 8x8 cases with 28-40 inner channels give conv2 its widest pixel tiles (24 output channels over 3 weight blocks on
# one pixel vector) and conv1 its one-vector tiles at up to 12 rows; the last two are small maps with enough
# active channels (about 40 of 80-96 at random) for conv2's output-channel tiles on AVX-512
# (kChannelTileMaxPixels), output channels not a multiple of 16.
CASES = [
    (1, 3, 7, 7, 5, 7, 1),
    (8, 3, 9, 9, 5, 7, 2),
    (1, 4, 1, 1, 6, 3, 1),
    (1, 4, 2, 2, 6, 3, 2),
    (8, 16, 8, 8, 24, 16, 1),
    (1, 8, 16, 16, 32, 16, 2),
    (2, 5, 11, 6, 13, 9, 1),
    (2, 12, 4, 4, 40, 44, 1),
    (1, 8, 8, 8, 28, 48, 2),
    (2, 24, 9, 9, 96, 40, 1),
    (1, 40, 10, 10, 80, 36, 2),
    # small maps, input channels in whole vectors: conv1's channel dots and conv2's row tiles (AVX-512)
    (2, 64, 5, 5, 40, 48, 1),
    (1, 64, 9, 9, 36, 40, 2),
    (2, 64, 9, 9, 48, 40, 1),
]
MASKS = ("random", "off", "on", "mixed")
BUILD_SKIP_REASONS = (
    "cmake not found",
    "too old",
    "no C++ compiler",
    "neither ninja nor make",
    "native sources not found",
)


# ---------------------------------------------------------------------------------------------------------
# Reference and models.


def conv3x3(x, w, stride):
    """3x3 convolution, padding 1, in float64."""
    n, _, h, wd = x.shape
    ho, wo = (h - 1) // stride + 1, (wd - 1) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, w.shape[0], ho, wo))
    for i in range(3):
        for j in range(3):
            patch = xp[:, :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out


def reference(x, mask, w1, b1, w2, b2, res, stride):
    f = np.float64
    h = np.maximum(conv3x3(x.astype(f), w1.astype(f), stride) + b1.astype(f)[None, :, None, None], 0)
    h = h * mask.astype(f)[:, :, None, None]
    return np.maximum(conv3x3(h, w2.astype(f), 1) + b2.astype(f)[None, :, None, None] + res.astype(f), 0)


def rel_err(y, ref):
    return float(np.abs(y.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))


def make_weights(rng, cin, c, cout):
    return (
        (rng.standard_normal((c, cin, 3, 3)) * 0.3).astype(np.float32),
        (rng.standard_normal(c) * 0.1).astype(np.float32),
        (rng.standard_normal((cout, c, 3, 3)) * 0.3).astype(np.float32),
        (rng.standard_normal(cout) * 0.1).astype(np.float32),
    )


def gate_reference(x, g1, gb1, g2):
    """The gate in float64: mask = (G2 relu(G1 mean_hw(x) + g1) >= 0), and the logits."""
    f = np.float64
    hid = np.maximum(x.astype(f).mean(axis=(2, 3)) @ g1.astype(f).T + gb1.astype(f), 0)
    logits = hid @ g2.astype(f).T
    return (logits >= 0).astype(np.float32), logits


def make_gate(rng, cin, c, hidden=None):
    """Gate weights whose hidden units are mostly on (bias around +0.5), so that the logits vary per sample."""
    hidden = hidden or max(cin // 2, 2)
    return (
        (rng.standard_normal((hidden, cin)) * 0.3).astype(np.float32),
        (0.5 + rng.standard_normal(hidden) * 0.2).astype(np.float32),
        (rng.standard_normal((c, hidden)) * 0.5).astype(np.float32),
    )


def block_model(path, weights, cin, h, w, stride, batch="N", residual_is_x=False, gate=None, shortcut=None):
    """One GatedBlock node (domain gatekit, opset 1); residual is an input, or x itself. With `gate`
    (G1, g1, G2), one GatedBlockWithGate node instead: no mask input, the op computes it; with `shortcut` too
    (Ws, bs), one GatedBlockWithGateAndShortcut node: no residual input, the op computes it."""
    w1, b1, w2, b2 = weights
    c, cout = w1.shape[0], w2.shape[0]
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, cin, h, w])]
    if gate is None:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [batch, c]))
    if not residual_is_x and shortcut is None:
        inputs.append(helper.make_tensor_value_info("residual", TensorProto.FLOAT, [batch, cout, ho, wo]))
    residual = "x" if residual_is_x else "residual"
    inits = [numpy_helper.from_array(a, n) for a, n in zip(weights, ("W1", "b1", "W2", "b2"))]
    if gate is None:
        node = helper.make_node(
            "GatedBlock", ["x", "mask", "W1", "b1", "W2", "b2", residual], ["y"], domain="gatekit", stride=stride
        )
    elif shortcut is not None:
        inits += [numpy_helper.from_array(a, n) for a, n in zip((*gate, *shortcut), ("G1", "g1", "G2", "Ws", "bs"))]
        node = helper.make_node(
            "GatedBlockWithGateAndShortcut",
            ["x", "G1", "g1", "G2", "W1", "b1", "W2", "b2", "Ws", "bs"],
            ["y"],
            domain="gatekit",
            stride=stride,
        )
    else:
        inits += [numpy_helper.from_array(a, n) for a, n in zip(gate, ("G1", "g1", "G2"))]
        node = helper.make_node(
            "GatedBlockWithGate",
            ["x", "G1", "g1", "G2", "W1", "b1", "W2", "b2", residual],
            ["y"],
            domain="gatekit",
            stride=stride,
        )
    graph = helper.make_graph(
        [node],
        "gated_block",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, cout, ho, wo])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("gatekit", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def make_mask(rng, n, c, kind):
    if kind == "off":
        return np.zeros((n, c), np.float32)
    if kind == "on":
        return np.ones((n, c), np.float32)
    if kind == "random":
        return (rng.random((n, c)) < 0.5).astype(np.float32)
    # "mixed": every sample its own mask (all on, all off, single channel, all but one, random densities).
    m = (rng.random((n, c)) < rng.uniform(0.1, 0.9, (n, 1))).astype(np.float32)
    m[0] = 1.0
    if n > 1:
        m[1] = 0.0
    if n > 2:
        m[2] = 0.0
        m[2, rng.integers(c)] = 1.0
    if n > 3:
        m[3] = 1.0
        m[3, rng.integers(c)] = 0.0
    return m


def case_data(case, kind, seed):
    """Model inputs and weights of one case (deterministic)."""
    n, cin, h, w, c, cout, stride = case
    rng = np.random.default_rng(seed)
    weights = make_weights(rng, cin, c, cout)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    feeds = {
        "x": rng.standard_normal((n, cin, h, w)).astype(np.float32),
        "mask": make_mask(rng, n, c, kind),
        "residual": rng.standard_normal((n, cout, ho, wo)).astype(np.float32),
    }
    return weights, feeds


def ort_session(model_path, lib, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.register_custom_ops_library(str(lib))
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])


def ov_compile(model_path, lib, threads):
    import openvino as ov

    core = ov.Core()
    core.add_extension(str(lib))
    model = core.read_model(str(model_path))
    return core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads})


def run_cases(runtime, lib, workdir, threads, cases=CASES, masks=MASKS):
    """Max relative error per (case, mask kind); one model per case, dynamic batch."""
    errs = {}
    for ci, case in enumerate(cases):
        n, cin, h, w, c, cout, stride = case
        weights, _ = case_data(case, "on", seed=ci)
        path = block_model(Path(workdir) / f"block{ci}.onnx", weights, cin, h, w, stride)
        if runtime == "ort":
            sess = ort_session(path, lib, threads)
            run = lambda feeds, sess=sess: sess.run(None, feeds)[0]  # noqa: E731
        else:
            cm = ov_compile(path, lib, threads)
            run = lambda feeds, cm=cm: cm(feeds)[cm.output(0)]  # noqa: E731
        for kind in masks:
            _, feeds = case_data(case, kind, seed=1000 * ci + len(kind))
            y = run(feeds)
            ref = reference(feeds["x"], feeds["mask"], *weights, feeds["residual"], stride)
            assert y.shape == ref.shape
            errs[f"{case}/{kind}"] = rel_err(y, ref)
    return errs


# ---------------------------------------------------------------------------------------------------------
# Fixtures.


@pytest.fixture(scope="session")
def built():
    info = native_ops.build(jobs=2)
    if info.get("status") != "ok":
        reason = info.get("reason") or "unknown"
        if any(s in reason for s in BUILD_SKIP_REASONS):
            pytest.skip(f"native ops not built: {reason}")
        pytest.fail(f"native ops build failed: {reason}")
    return info


@pytest.fixture(scope="session")
def ort_lib(built):
    pytest.importorskip("onnxruntime")
    lib = built["libraries"]["ort"]
    assert lib["status"] == "built", lib
    return Path(lib["path"])


@pytest.fixture(scope="session")
def ov_lib(built):
    pytest.importorskip("openvino")
    lib = built["libraries"]["openvino"]
    if lib["status"] != "built":
        pytest.skip(f"OpenVINO extension not built: {lib.get('reason')}")
    return Path(lib["path"])


# ---------------------------------------------------------------------------------------------------------
# Tests.


def test_build_info_and_status(built, ort_lib):
    st = native_ops.status()
    assert st["libraries"]["ort"]["usable"], st["libraries"]["ort"]
    assert native_ops.library_for("ort") == ort_lib
    info = built["libraries"]["ort"]["build_info"]
    assert info["library"] == "gatekit_ort_ops" and info["ort_api_version"] == native_ops.ORT_API_VERSION
    assert "portable" in info["isa_compiled"]
    assert info["isa_selected"] in info["isa_compiled"]
    assert info["conv2_channel_tiles"] == (info["isa_selected"] == "avx512")  # the only path with them
    assert info["conv1_channel_dots"] == (info["isa_selected"] == "avx512")
    tiles = "yes" if info["conv2_channel_tiles"] else "no (AVX-512 only)"
    dots = "yes" if info["conv1_channel_dots"] else "no (AVX-512 only)"
    assert (
        f"kernel path in use: {info['isa_selected']}; conv2 output-channel tiles: {tiles}; conv1 channel dots on "
        f"small maps: {dots}"
    ) in native_ops._summary_status(st)
    # The build identity is exported by the library itself, readable with ctypes.
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import ctypes, sys; f = ctypes.CDLL(sys.argv[1]).gatekit_ops_build_info;"
            " f.restype = ctypes.c_char_p; print(f().decode())",
            str(ort_lib),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)["library"] == "gatekit_ort_ops"


@pytest.mark.parametrize("threads", [1, 2])
def test_ort_matches_reference(ort_lib, tmp_path, threads):
    errs = run_cases("ort", ort_lib, tmp_path, threads)
    worst = max(errs, key=errs.get)
    assert errs[worst] <= TOL, f"{worst}: {errs[worst]:.3g}"


@pytest.mark.parametrize("threads", [1, 2])
def test_openvino_matches_reference(ov_lib, tmp_path, threads):
    errs = run_cases("openvino", ov_lib, tmp_path, threads)
    worst = max(errs, key=errs.get)
    assert errs[worst] <= TOL, f"{worst}: {errs[worst]:.3g}"


def test_residual_is_x_and_same_file_on_both_runtimes(ort_lib, ov_lib, tmp_path):
    """residual = x (identity shortcut); the same .onnx file on ORT and OpenVINO, also after an IR round trip."""
    import openvino as ov

    case = (8, 12, 8, 8, 20, 12, 1)
    n, cin, h, w, c, cout, stride = case
    weights, feeds = case_data(case, "mixed", seed=7)
    path = block_model(tmp_path / "identity.onnx", weights, cin, h, w, stride, batch=n, residual_is_x=True)
    del feeds["residual"]
    ref = reference(feeds["x"], feeds["mask"], *weights, feeds["x"], stride)
    y_ort = ort_session(path, ort_lib, 2).run(None, feeds)[0]
    cm = ov_compile(path, ov_lib, 2)
    y_ov = cm(feeds)[cm.output(0)]
    assert rel_err(y_ort, ref) <= TOL and rel_err(y_ov, ref) <= TOL
    core = ov.Core()
    core.add_extension(str(ov_lib))
    xml = tmp_path / "identity.xml"
    ov.save_model(core.read_model(str(path)), str(xml), compress_to_fp16=False)
    cm2 = core.compile_model(core.read_model(str(xml)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert rel_err(cm2(feeds)[cm2.output(0)], ref) <= TOL


@pytest.mark.parametrize("runtime,threads", [("ort", 1), ("ort", 2), ("openvino", 1), ("openvino", 2)])
def test_gated_block_with_gate_computes_its_own_mask(runtime, threads, request, tmp_path):
    """GatedBlockWithGate: the gate (pool, FC + bias, ReLU, FC, >= 0) inside the op, per sample, equals the
    float64 reference of gate and block; a zero G2 row gives a logit of exactly 0, which counts as on."""
    lib = request.getfixturevalue("ort_lib" if runtime == "ort" else "ov_lib")
    for ci, case in enumerate([CASES[1], CASES[4], CASES[6], CASES[7], (8, 12, 8, 8, 20, 12, 1)]):
        n, cin, h, w, c, cout, stride = case
        rng = np.random.default_rng(50 + ci)
        weights, gate = make_weights(rng, cin, c, cout), make_gate(rng, cin, c)
        gate[2][0] = 0.0  # channel 0: logit exactly 0 -> on in every sample
        identity = cin == cout and stride == 1
        path = block_model(tmp_path / f"gate{ci}.onnx", weights, cin, h, w, stride, gate=gate, residual_is_x=identity)
        feeds = {"x": rng.standard_normal((n, cin, h, w)).astype(np.float32)}
        if not identity:
            ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
            feeds["residual"] = rng.standard_normal((n, cout, ho, wo)).astype(np.float32)
        mask, logits = gate_reference(feeds["x"], *gate)
        assert np.abs(logits[:, 1:]).min() > 1e-4  # no decision within rounding of the threshold
        assert mask[:, 0].all() and 0 < mask[:, 1:].mean() < 1  # a mix of on and off channels
        if runtime == "ort":
            y = ort_session(path, lib, threads).run(None, feeds)[0]
        else:
            cm = ov_compile(path, lib, threads)
            y = cm(feeds)[cm.output(0)]
        ref = reference(feeds["x"], mask, *weights, feeds.get("residual", feeds["x"]), stride)
        assert rel_err(y, ref) <= TOL, f"{case}: {rel_err(y, ref):.3g}"


@pytest.mark.parametrize("runtime,threads", [("ort", 1), ("ort", 2), ("openvino", 1), ("openvino", 2)])
def test_gated_block_with_gate_and_shortcut_computes_its_residual(runtime, threads, request, tmp_path):
    """GatedBlockWithGateAndShortcut: the residual is the 1x1 projection of x at the block's stride, computed in
    the op (stride 1 and 2, batch 1 and 8, odd widths, samples with every channel off), equal to the float64
    reference; with Ws = 0 and bs = 0 only conv2's sum remains (the shortcut adds nothing else)."""
    lib = request.getfixturevalue("ort_lib" if runtime == "ort" else "ov_lib")
    for ci, case in enumerate([CASES[1], CASES[3], CASES[5], CASES[6], CASES[8], (8, 12, 8, 8, 20, 12, 1)]):
        n, cin, h, w, c, cout, stride = case
        rng = np.random.default_rng(70 + ci)
        weights, gate = make_weights(rng, cin, c, cout), make_gate(rng, cin, c)
        gate[2][-1] = -np.abs(gate[2][-1]) - 1.0  # with a ReLU hidden layer >= 0: never negative, so ...
        gate[2][-1][:] = -1.0  # ... a row of -1 turns the last channel off whenever any hidden unit is on
        ws = (rng.standard_normal((cout, cin)) / np.sqrt(cin)).astype(np.float32)
        bs = (0.1 * rng.standard_normal(cout)).astype(np.float32)
        x = rng.standard_normal((n, cin, h, w)).astype(np.float32)
        mask, _ = gate_reference(x, *gate)
        for shortcut in ((ws, bs), (np.zeros_like(ws), np.zeros_like(bs))):
            path = block_model(tmp_path / f"sc{ci}.onnx", weights, cin, h, w, stride, gate=gate, shortcut=shortcut)
            if runtime == "ort":
                y = ort_session(path, lib, threads).run(None, {"x": x})[0]
            else:
                cm = ov_compile(path, lib, threads)
                y = cm({"x": x})[cm.output(0)]
            res = (
                np.einsum("nchw,oc->nohw", x[:, :, ::stride, ::stride].astype(np.float64), shortcut[0])
                + shortcut[1][None, :, None, None]
            )
            ref = reference(x, mask, *weights, res, stride)
            assert y.shape == ref.shape and rel_err(y, ref) <= TOL, f"{case}: {rel_err(y, ref):.3g}"


def standard_block_model(path, weights, cin, h, w, stride, gate=None, shortcut=None):
    """The op's standard-ops form, every inner channel computed and then masked, as the fallback graphs compute the
    channels they keep: relu(conv2(mask * relu(conv1(x) + b1)) + b2 + residual). With `gate` (G1, g1, G2) the mask
    is ReduceMean, Gemm, Relu, MatMul, GreaterOrEqual 0, Cast (the exported gate); with `shortcut` (Ws, bs) the
    residual is a 1x1 Conv of x at the block's stride. Inputs as block_model's."""
    w1, b1, w2, b2 = weights
    c, cout = w1.shape[0], w2.shape[0]
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", cin, h, w])]
    inits = [numpy_helper.from_array(a, n) for a, n in zip(weights, ("W1", "b1", "W2", "b2"))]
    inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), "hw_axes"))
    nodes = [
        helper.make_node("Conv", ["x", "W1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[stride, stride]),
        helper.make_node("Relu", ["c1"], ["r1"]),
    ]
    if gate is None:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", c]))
    else:
        g1, gb1, g2 = gate
        inits += [
            numpy_helper.from_array(g1, "G1"),
            numpy_helper.from_array(gb1, "g1"),
            numpy_helper.from_array(np.ascontiguousarray(g2.T), "G2T"),
            numpy_helper.from_array(np.zeros((), np.float32), "zero"),
        ]
        nodes += [
            helper.make_node("ReduceMean", ["x"], ["pooled"], axes=[2, 3], keepdims=0),
            helper.make_node("Gemm", ["pooled", "G1", "g1"], ["hidden"], transB=1),
            helper.make_node("Relu", ["hidden"], ["hidden_relu"]),
            helper.make_node("MatMul", ["hidden_relu", "G2T"], ["logits"]),
            helper.make_node("GreaterOrEqual", ["logits", "zero"], ["on"]),
            helper.make_node("Cast", ["on"], ["mask"], to=TensorProto.FLOAT),
        ]
    if shortcut is not None:
        ws, bs = shortcut
        inits += [numpy_helper.from_array(ws.reshape(cout, cin, 1, 1), "Ws"), numpy_helper.from_array(bs, "bs")]
        nodes.append(helper.make_node("Conv", ["x", "Ws", "bs"], ["residual"], strides=[stride, stride]))
    else:
        inputs.append(helper.make_tensor_value_info("residual", TensorProto.FLOAT, ["N", cout, ho, wo]))
    nodes += [
        helper.make_node("Unsqueeze", ["mask", "hw_axes"], ["mask4"]),
        helper.make_node("Mul", ["r1", "mask4"], ["h"]),
        helper.make_node("Conv", ["h", "W2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "residual"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "standard_block",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", cout, ho, wo])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("op", ["GatedBlock", "GatedBlockWithGate", "GatedBlockWithGateAndShortcut"])
def test_nan_and_inf_propagate_as_through_the_standard_ops(ort_lib, ov_lib, tmp_path, op):
    """A NaN or an infinity in x (and a NaN in the residual input): the op's y is NaN, and +inf, exactly where the
    standard-ops form's is on ONNX Runtime (a gate's NaN logit turns its channel off, the off channels' 0 * NaN
    is NaN), equal elsewhere; a clean sample in the same batch is untouched. The op follows the same rule on
    OpenVINO (whose own Relu maps NaN to 0, so OpenVINO's standard ops are not the comparison there)."""
    for ci, case in enumerate([(4, 12, 8, 8, 20, 12, 1), (4, 8, 9, 7, 16, 24, 2), (4, 64, 5, 5, 40, 48, 1)]):
        n, cin, h, w, c, cout, stride = case
        rng = np.random.default_rng(90 + ci)
        weights, gate = make_weights(rng, cin, c, cout), make_gate(rng, cin, c)
        shortcut = (
            (rng.standard_normal((cout, cin)) / np.sqrt(cin)).astype(np.float32),
            (0.1 * rng.standard_normal(cout)).astype(np.float32),
        )
        x = rng.standard_normal((n, cin, h, w)).astype(np.float32)
        x[0, cin - 1, h // 2, w // 2] = np.nan  # sample 0: a NaN pixel in one channel
        x[1, 0, 0, 0] = np.inf  # sample 1: +inf in a corner, -inf in the opposite one
        x[1, 0, h - 1, w - 1] = -np.inf
        feeds = {"x": x}  # sample 2 clean; sample 3 clean but for a NaN in its residual input (GatedBlock)
        ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
        if op == "GatedBlock":
            feeds["mask"] = make_mask(rng, n, c, "random")
            feeds["mask"][2] = 0.0  # the clean sample skips every channel
        if op != "GatedBlockWithGateAndShortcut":
            feeds["residual"] = rng.standard_normal((n, cout, ho, wo)).astype(np.float32)
            feeds["residual"][3, cout // 2, ho // 2, 0] = np.nan
        g = None if op == "GatedBlock" else gate
        sc = shortcut if op == "GatedBlockWithGateAndShortcut" else None
        native = block_model(tmp_path / f"n{ci}.onnx", weights, cin, h, w, stride, gate=g, shortcut=sc)
        standard = standard_block_model(tmp_path / f"s{ci}.onnx", weights, cin, h, w, stride, gate=g, shortcut=sc)
        import onnxruntime as ort

        y = ort_session(native, ort_lib, 2).run(None, feeds)[0]
        want = ort.InferenceSession(str(standard), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        np.testing.assert_array_equal(np.isnan(y), np.isnan(want), err_msg=f"{op} {case}: where NaN is")
        np.testing.assert_array_equal(np.isposinf(y), np.isposinf(want), err_msg=f"{op} {case}: where +inf is")
        assert not np.isneginf(y).any()
        assert np.isnan(y[0]).any() and np.isnan(y[1]).any() and not np.isnan(y[2]).any()
        assert np.isnan(y[3]).sum() == (1 if op != "GatedBlockWithGateAndShortcut" else 0)
        finite = np.isfinite(want)
        assert rel_err(y[finite], want[finite].astype(np.float64)) <= TOL, f"{op} {case}"
        cm = ov_compile(native, ov_lib, 2)
        y_ov = cm(feeds)[cm.output(0)]
        np.testing.assert_array_equal(np.isnan(y_ov), np.isnan(y), err_msg=f"{op} {case}: OpenVINO")
        assert rel_err(y_ov[finite], want[finite].astype(np.float64)) <= TOL


@pytest.mark.parametrize("bad", ["Ws", "bs"])
def test_gated_block_with_shortcut_refuses_mismatched_shortcut(ort_lib, ov_lib, tmp_path, bad):
    """A shortcut whose Ws is not [Cout, Cin] or whose bs is not [Cout]: one line naming the op and the input, on
    both runtimes, when the session is created or the model read (OpenVINO checks the constants' shapes then)."""
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(4)
    weights, gate = make_weights(rng, 4, 6, 5), make_gate(rng, 4, 6)
    ws = np.zeros((5, 3 if bad == "Ws" else 4), np.float32)
    bs = np.zeros(6 if bad == "bs" else 5, np.float32)
    path = block_model(tmp_path / "bad.onnx", weights, 4, 5, 5, 2, gate=gate, shortcut=(ws, bs))
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(ort_lib))
    want = {"Ws": r"Ws must be \[Cout, Cin\] or \[Cout, Cin, 1, 1\]", "bs": r"bs must be \[Cout\]"}[bad]
    with pytest.raises(Exception, match=r"gatekit::GatedBlockWithGateAndShortcut: " + want):
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match=r"gatekit::GatedBlockWithGateAndShortcut: " + want):
        ov_compile(path, ov_lib, 1)


def test_gated_block_with_gate_refuses_mismatched_gate(ort_lib, ov_lib, tmp_path):
    """A gate whose G2 does not have the block's C rows: one line naming the op and the input (ORT when the
    session is created, OpenVINO when the model is read)."""
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(3)
    weights, gate = make_weights(rng, 4, 6, 5), make_gate(rng, 4, 7, hidden=1)
    path = block_model(tmp_path / "bad.onnx", weights, 4, 5, 5, 1, gate=gate)
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(ort_lib))
    with pytest.raises(Exception, match=r"gatekit::GatedBlockWithGate: G2 must be \[C, Hd\] = \[6, 1\]"):
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match=r"gatekit::GatedBlockWithGate: G2 must be \[C, Hd\] = \[6, 1\]"):
        ov_compile(path, ov_lib, 1)


_ISA_CHILD = r"""
import ctypes, json, sys, tempfile
sys.path.insert(0, sys.argv[1])
from tests import test_native_ops as t
lib = sys.argv[2]
f = ctypes.CDLL(lib).gatekit_ops_build_info
f.restype = ctypes.c_char_p
info = json.loads(f().decode())
with tempfile.TemporaryDirectory() as d:
    errs = t.run_cases("ort", lib, d, threads=2, masks=("random", "mixed"))
print(json.dumps({"info": info, "errs": errs}))
"""


def _child_json(script, lib, env=None):
    """Run `script` in a fresh Python (argv: the repository, the library) and return the JSON of its last line."""
    out = subprocess.run(
        [sys.executable, "-c", script, str(REPO), str(lib)], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("isa", ["avx512", "avx2", "portable"])
def test_each_isa_path(ort_lib, isa):
    """GATEKIT_OPS_ISA forces a kernel path (chosen once per process, hence a child process per path)."""
    res = _child_json(_ISA_CHILD, ort_lib, env=dict(os.environ, GATEKIT_OPS_ISA=isa))
    info = res["info"]
    if isa not in info["isa_compiled"] or not info["isa_request_honoured"]:
        pytest.skip(f"{isa} path not available here (compiled: {info['isa_compiled']})")
    assert info["isa_selected"] == isa
    errs = res["errs"]
    worst = max(errs, key=errs.get)
    assert errs[worst] <= TOL, f"{isa} {worst}: {errs[worst]:.3g}"


_HUGE_CHILD = r"""
import ctypes, json, sys, tempfile
from pathlib import Path
import numpy as np
sys.path.insert(0, sys.argv[1])
from tests import test_native_ops as t
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
# What a long-lived process has: malloc serving large requests from its heap (glibc raises its mmap threshold
# as large blocks are freed), and touched, freed memory there.
libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD
libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
bufs = [libc.malloc(3 << 20) for _ in range(12)]
for b in bufs:
    libc.memset(b, 1, 3 << 20)
for b in bufs:
    libc.free(b)
def huge_kb():
    return sum(int(l.split()[1]) for l in open("/proc/self/smaps") if l.startswith("AnonHugePages:"))
rng = np.random.default_rng(0)
weights = t.make_weights(rng, 256, 256, 256)
with tempfile.TemporaryDirectory() as d:
    path = t.block_model(Path(d) / "b.onnx", weights, 256, 8, 8, 1)
    before = huge_kb()
    sess = t.ort_session(path, sys.argv[2], 1)
    x = rng.standard_normal((1, 256, 8, 8)).astype(np.float32)
    mask = (rng.random((1, 256)) < 0.3).astype(np.float32)
    sess.run(None, {"x": x, "mask": mask, "residual": x})
    print(json.dumps({"rise_kb": huge_kb() - before}))
"""


def _thp_mode(name):
    try:
        text = Path(f"/sys/kernel/mm/transparent_hugepage/{name}").read_text()
    except OSError:
        return None
    return text[text.index("[") + 1 : text.index("]")] if "[" in text else None


@pytest.mark.benchmark
def test_packed_weights_on_huge_pages(ort_lib):
    """Packed weights of 1 MiB or more go on 2 MiB pages even where malloc would hand out touched heap memory
    (madvise cannot turn that into huge pages): a 256-channel block's four packed weight buffers (2.4 MB each)
    must add at least 8 MB of huge pages to the process. A busy host may have no free 2 MiB page at that
    moment, so up to three fresh processes try; weights that never go on huge pages fail all three."""
    if not sys.platform.startswith("linux"):
        pytest.skip("transparent huge pages are a Linux feature")
    enabled, defrag = _thp_mode("enabled"), _thp_mode("defrag")
    if enabled not in ("always", "madvise") or defrag not in ("always", "madvise", "defer+madvise"):
        pytest.skip(f"transparent huge pages here: enabled [{enabled}], defrag [{defrag}]: faults may not get them")
    rises = [_child_json(_HUGE_CHILD, ort_lib)["rise_kb"]]
    while rises[-1] < 8 * 1024 and len(rises) < 3:
        rises.append(_child_json(_HUGE_CHILD, ort_lib)["rise_kb"])
    assert rises[-1] >= 8 * 1024, f"only {rises} kB of the packed weights on huge pages"


# The kernel self-check's count with --quick on the portable path: 24 cases x 7 mask patterns x 2 worker setups x
# 2 residual forms (native/kernel/selfcheck.cpp).
AARCH64_SELFCHECK_CASES = 24 * 7 * 2 * 2


def test_kernel_on_aarch64_under_user_mode_emulation(aarch64_build, qemu_aarch64):
    """The aarch64 (NEON) path, which no x86 machine runs natively: the kernel self-check (native/kernel/selfcheck.cpp,
    every case and mask pattern against a float64 reference, NaN and infinities included; 1 worker and 3 on threads
    of their own) cross-built with native/cmake/aarch64-linux-gnu.cmake and run under qemu-user."""
    run = qemu_aarch64(aarch64_build / "gatekit_kernel_selfcheck", "--quick")
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    res = json.loads(run.stdout.strip().splitlines()[-1])
    assert res["isa"] == "portable" and res["failed"] == 0 and res["cases"] == AARCH64_SELFCHECK_CASES, res
    assert res["worst_rel_error"] <= TOL


def test_ort_without_library_fails_to_load(tmp_path):
    """Without the library ORT cannot load the model: the tests above really ran the native op."""
    ort = pytest.importorskip("onnxruntime")
    weights, _ = case_data(CASES[0], "on", seed=0)
    path = block_model(tmp_path / "plain.onnx", weights, 3, 7, 7, 1)
    with pytest.raises(Exception, match="GatedBlock"):
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


_OLD_RUNTIME_CHILD = r"""
import ctypes, glob, os, sys, onnxruntime
capi = os.path.join(os.path.dirname(onnxruntime.__file__), "capi")
ort = ctypes.CDLL(glob.glob(os.path.join(capi, "libonnxruntime.so*"))[0])
ort.OrtGetApiBase.restype = ctypes.c_void_p
real_get_api = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint32)(
    ctypes.cast(ort.OrtGetApiBase(), ctypes.POINTER(ctypes.c_void_p))[0])
version = ctypes.create_string_buffer(b"1.16.3")
GETAPI = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint32)
GETVER = ctypes.CFUNCTYPE(ctypes.c_void_p)
get_api = GETAPI(lambda v: real_get_api(v) if v <= 16 else 0)  # a runtime that stops at API 16
get_ver = GETVER(lambda: ctypes.addressof(version))
class Base(ctypes.Structure):
    _fields_ = [("GetApi", GETAPI), ("GetVersionString", GETVER)]
base = Base(get_api, get_ver)
lib = ctypes.CDLL(sys.argv[1])
lib.RegisterCustomOps.restype = ctypes.c_void_p
lib.RegisterCustomOps.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
status = lib.RegisterCustomOps(None, ctypes.byref(base))
assert status, "registration should have failed"
api1 = ctypes.cast(real_get_api(1), ctypes.POINTER(ctypes.c_void_p))
print(ctypes.CFUNCTYPE(ctypes.c_char_p, ctypes.c_void_p)(api1[2])(status).decode())
ctypes.CFUNCTYPE(None, ctypes.c_void_p)(api1[93])(status)
"""


def test_ort_library_refuses_older_runtime(ort_lib):
    """Registered with a runtime that lacks ORT API 17, the library fails with a clear status message."""
    pytest.importorskip("onnxruntime")
    out = subprocess.run(
        [sys.executable, "-c", _OLD_RUNTIME_CHILD, str(ort_lib)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    msg = out.stdout.strip()
    assert "API version 17" in msg and "1.16.3" in msg and "onnxruntime >= 1.17" in msg


def test_weights_must_be_constant(ort_lib, tmp_path):
    """W1 fed as a graph input instead of an initializer: refused when the session is created."""
    import onnxruntime as ort

    weights, _ = case_data(CASES[0], "on", seed=0)
    path = block_model(tmp_path / "w.onnx", weights, 3, 7, 7, 1)
    model = onnx.load(str(path))
    w1 = [i for i in model.graph.initializer if i.name == "W1"][0]
    model.graph.initializer.remove(w1)
    model.graph.input.append(helper.make_tensor_value_info("W1", TensorProto.FLOAT, [5, 3, 3, 3]))
    onnx.save(model, str(path))
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(ort_lib))
    with pytest.raises(Exception, match="constant initializer"):
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _fake_build(tmp_path, built, runtime, **overrides):
    """A copy of a built library with its build.json claiming other runtime versions."""
    d = tmp_path / "fake"
    d.mkdir(exist_ok=True)
    info = json.loads(json.dumps(built))
    lib = info["libraries"][runtime]
    src = Path(lib["path"])
    lib["path"] = str(d / src.name)
    lib.update(overrides)
    (d / src.name).write_bytes(src.read_bytes())
    (d / "build.json").write_text(json.dumps(info))
    return d / src.name


def test_check_library_refuses_other_openvino(built, tmp_path):
    if built["libraries"]["openvino"]["status"] != "built":
        pytest.skip("OpenVINO extension not built")
    path = _fake_build(tmp_path, built, "openvino", openvino_version="2026.3.0")
    installed = native_ops.runtime_versions()
    versions = dict(installed, openvino="2026.4.1")
    with pytest.raises(native_ops.NativeOpsError) as e:
        native_ops.check_library("openvino", path, versions)
    msg = str(e.value)
    assert "\n" not in msg and "2026.3.0" in msg and "2026.4.1" in msg
    assert native_ops.check_library("openvino", path, dict(installed, openvino="2026.3.0"))["status"] == "built"


def test_check_library_refuses_old_onnxruntime(built, tmp_path):
    path = _fake_build(tmp_path, built, "ort")
    versions = dict(native_ops.runtime_versions(), onnxruntime="1.16.3")
    with pytest.raises(native_ops.NativeOpsError) as e:
        native_ops.check_library("onnxruntime", path, versions)
    msg = str(e.value)
    assert "\n" not in msg and "1.16.3" in msg and "1.17" in msg
    with pytest.raises(native_ops.NativeOpsError, match="not installed"):
        native_ops.check_library("ort", path, dict(versions, onnxruntime=None))
    assert native_ops.check_library("ort", path, dict(versions, onnxruntime="1.17.0"))["ort_api_version"] == 17


def test_build_without_cmake_says_why(tmp_path):
    """No cmake on PATH: build() reports it in one reason, writes no library, and the CLI exits non-zero."""
    env = dict(os.environ, PATH=str(tmp_path), GATEKIT_OPS_DIR=str(tmp_path / "ops"))
    code = "import json; from gatekit import native_ops; print(json.dumps(native_ops.build()))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    if info["tools"].get("cmake"):
        pytest.skip("cmake found outside PATH (cmake Python package)")
    assert info["status"] == "failed" and "cmake not found" in info["reason"]
    assert not list((tmp_path / "ops").rglob("*.so"))
    out = subprocess.run(
        [sys.executable, "-m", "gatekit.native_ops", "build"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1 and "cmake not found" in out.stdout


def test_cli_status_and_cached_build(built):
    env = dict(os.environ)
    out = subprocess.run(
        [sys.executable, "-m", "gatekit.native_ops", "build"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "up to date" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "gatekit.native_ops", "status", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    assert st["libraries"]["ort"]["usable"]


def _package_configure(build_dir: Path, env: dict, *args) -> subprocess.CompletedProcess:
    """CMake's configure step of a package build (what scikit-build-core runs, SKBUILD set), nothing compiled."""
    return subprocess.run(
        [
            shutil.which("cmake") or "cmake",
            "-S",
            str(REPO / "native"),
            "-B",
            str(build_dir),
            "-DSKBUILD=ON",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DCMAKE_INSTALL_PREFIX={build_dir / 'wheel'}",
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_package_build_refuses_cpu_specific_flags(tmp_path):
    """A package's library runs on any CPU of its platform: CXXFLAGS that raise every file's baseline are refused."""
    if not shutil.which("cmake") or not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("needs cmake and a C++ compiler on PATH")
    env = dict(os.environ, CXXFLAGS="-O2 -march=native")
    out = _package_configure(tmp_path / "b", env)
    assert out.returncode != 0
    assert (
        "the compiler flags (CXXFLAGS) carry -march=native, which ties the package's op library to one CPU"
        in " ".join(out.stderr.split())
    ), out.stderr[-2000:]


def test_package_build_without_a_compiler_carries_sources_and_says_why(tmp_path, monkeypatch):
    """No C++ compiler at a package build: the package still gets the sources and a build.json saying why it has
    no library; at run time packaged_library() passes that reason on."""
    if not shutil.which("cmake"):
        pytest.skip("needs cmake on PATH")
    bare = tmp_path / "bin"  # cmake and a build tool, no compiler
    bare.mkdir()
    for tool in ("cmake", "ninja", "make"):
        if shutil.which(tool):
            (bare / tool).symlink_to(shutil.which(tool))
    env = {k: v for k, v in os.environ.items() if k != "CXX"}
    env["PATH"] = str(bare)
    out = _package_configure(tmp_path / "b", env, *(["-G", "Ninja"] if (bare / "ninja").exists() else []))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "no C++ compiler found: this package carries no op library" in " ".join(out.stderr.split())
    out = subprocess.run(
        [str(bare / "cmake"), "--install", str(tmp_path / "b")], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    pkg = tmp_path / "b" / "wheel" / "gatekit"
    assert (pkg / "_native" / "CMakeLists.txt").is_file() and (pkg / "_native" / "kernel" / "gated_block.cpp").is_file()
    assert not list((pkg / "_ops").glob("*.so"))
    record = json.loads((pkg / "_ops" / "build.json").read_text())
    assert record["status"] == "failed" and record["packaged"] is True
    why = "no C++ compiler when the package was built; `gatekit ops build` builds it"
    assert record["libraries"]["ort"] == {"status": "not built", "reason": why}
    assert record["source_hash"] == native_ops.source_hash(REPO / "native")
    monkeypatch.setattr(native_ops, "package_dir", lambda: pkg / "_ops")
    assert native_ops.packaged_library("ort") == (None, record["libraries"]["ort"]["reason"])
