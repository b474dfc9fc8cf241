"""int8 gated-block ops (native/README.md, "int8 ops"): GatedBlockInt8, GatedBlockWithGateInt8 and
GatedBlockWithGateAndShortcutInt8 on ONNX Runtime and OpenVINO, one-node models built with onnx.helper, checked
against a numpy integer reference (int64 accumulators, the contract's epilogue with fmaf emulated exactly), so
that every output must be equal bit for bit; each int8 kernel path in a child process; OpenVINO against ONNX
Runtime; the C++ self-check of the integer intermediates.

The libraries are built once per session (tests/test_native_ops.py's fixtures); the tests skip without a C++
compiler or cmake.
"""

import ctypes
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

from tests.test_native_ops import (  # noqa: E402,F401  (built, ort_lib, ov_lib: fixtures)
    built,
    gate_reference,
    make_gate,
    ort_lib,
    ort_session,
    ov_compile,
    ov_lib,
)

REPO = Path(__file__).resolve().parent.parent
F32, F64 = np.float32, np.float64

# (batch, Cin, H, W, C, Cout, stride): odd and tiny maps, stride 1 and 2, batch 8, channel counts off multiples
# of 4 and 16, the x0.25 network's stage shapes (16@34x34, 32@17x17 from stride 2, 64@5x5).
CASES = [
    (1, 3, 7, 7, 5, 7, 1),
    (8, 3, 9, 9, 5, 7, 2),
    (1, 4, 1, 1, 6, 3, 1),
    (8, 13, 9, 7, 19, 21, 2),
    (2, 5, 11, 6, 13, 9, 1),
    (1, 16, 34, 34, 16, 16, 1),
    (1, 16, 34, 34, 36, 32, 2),
    (2, 64, 5, 5, 64, 64, 1),
]
MASKS = ("on", "off", "random", "mixed")
PATHS = ("avx512vnni", "avxvnni", "avx2", "portable")


# ---------------------------------------------------------------------------------------------------------
# Reference.


def fmaf(a, b, c):
    """float32 fused multiply-add, a * b + c rounded once, of float32 arrays.  The product is exact in float64;
    the sum is float64's rounding s plus its error e (TwoSum); s rounded to float32 is the answer unless s lies
    exactly halfway between two float32 values, where the sign of e decides."""
    a, b, c = (np.asarray(v, F32).astype(F64) for v in (a, b, c))
    p = a * b
    s = p + c
    bv = s - p
    e = (p - (s - bv)) + (c - bv)
    r = s.astype(F32)
    d = s - r.astype(F64)
    up, down = np.nextafter(r, F32(np.inf)), np.nextafter(r, F32(-np.inf))
    to_up = (d > 0) & (d == (up.astype(F64) - r) / 2) & (e > 0)
    to_down = (d < 0) & (-d == (r - down.astype(F64)) / 2) & (e < 0)
    return np.where(to_up, up, np.where(to_down, down, r)).astype(F32)


def quant(v, scale):
    """clamp(round_half_even(v / scale), 0, 255) in float32, NaN -> 0 (the contract's QuantizeLinear)."""
    q = np.asarray(v, F32) / F32(scale)
    q = np.where(q > 0, q, F32(0))
    return np.rint(np.minimum(q, F32(255))).astype(np.int64)


def conv3x3_int(x, w, stride):
    """3x3 convolution, padding 1, in int64."""
    n, _, h, wd = x.shape
    ho, wo = (h - 1) // stride + 1, (wd - 1) // stride + 1
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, w.shape[0], ho, wo), np.int64)
    w = w.astype(np.int64)
    for i in range(3):
        for j in range(3):
            patch = xp[:, :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out


def reference(x, mask, blk, stride, residual=None):
    """y of the int8 block (gated_block_int8.h) and its integer intermediates."""
    xs, hs = F32(blk["x_scale"]), F32(blk["h_scale"])
    qx = quant(x, xs)
    acc1 = conv3x3_int(qx, blk["W1"], stride)
    assert np.abs(acc1).max() < 2**31
    col = lambda v: np.asarray(v, F32)[None, :, None, None]  # noqa: E731
    h = fmaf(acc1.astype(F32), col(xs * blk["w1_scale"]), col(blk["b1"]))
    qh = quant(h, hs) * (mask != 0)[:, :, None, None]
    acc2 = conv3x3_int(qh, blk["W2"], 1)
    if "Ws" in blk:
        ws = blk["Ws"].reshape(blk["Ws"].shape[0], -1).astype(np.int64)
        accs = np.einsum("nchw,oc->nohw", qx[:, :, ::stride, ::stride], ws)
        residual = fmaf(accs.astype(F32), col(xs * blk["ws_scale"]), col(blk["bs"]))
    y = fmaf(acc2.astype(F32), col(hs * blk["w2_scale"]), col(blk["b2"])) + residual.astype(F32)
    y = np.where(F32(0) > y, F32(0), y)  # ReLU; a NaN passes
    bad = ~np.isfinite(x).reshape(x.shape[0], -1).all(axis=1)
    y[bad] = np.nan
    return y, {"qx": qx, "acc1": acc1, "qh": qh, "acc2": acc2}


def make_block(rng, cin, c, cout, shortcut=False, ties=False):
    """int8 weights over the whole range, per-channel scales that spread h over a few hundred steps of h_scale
    (past both ends of [0, 255]).  With `ties`, x_scale is 0.5, so that x in steps of 0.125 divides to exact
    halves (round half to even)."""
    xs = F32(0.5) if ties else F32(0.01 + 0.02 * rng.random())
    k = cin * 9
    blk = {
        "W1": rng.integers(-128, 128, (c, cin, 3, 3)).astype(np.int8),
        "w1_scale": ((0.5 + rng.random(c)) * 7e-5 / (np.sqrt(k) * xs)).astype(F32),
        "b1": (0.3 * rng.standard_normal(c)).astype(F32),
        "W2": rng.integers(-128, 128, (cout, c, 3, 3)).astype(np.int8),
        "w2_scale": ((0.5 + rng.random(cout)) * 1e-3).astype(F32),
        "b2": (0.3 * rng.standard_normal(cout)).astype(F32),
        "x_scale": np.array(xs, F32),
        "h_scale": np.array(0.004 + 0.004 * rng.random(), F32),
    }
    if shortcut:
        blk["Ws"] = rng.integers(-128, 128, (cout, cin)).astype(np.int8)
        blk["ws_scale"] = ((0.5 + rng.random(cout)) * 1e-3).astype(F32)
        blk["bs"] = (0.3 * rng.standard_normal(cout)).astype(F32)
    return blk


def make_x(rng, shape, blk, ties=False):
    """x from -0.5 to 2.5 times 128 x_scale: a sixth quantizes to 0, a sixth saturates at 255."""
    u = 1.0 + 1.5 * (2 * rng.random(shape) - 1)
    if ties:
        return (np.round(u * 512) * 0.125).astype(F32)
    return (u * 128 * blk["x_scale"]).astype(F32)


def make_mask(rng, n, c, kind):
    if kind == "on":
        return np.ones((n, c), F32)
    if kind == "off":
        return np.zeros((n, c), F32)
    if kind == "random":
        return (rng.random((n, c)) < 0.4).astype(F32)
    # "mixed": every sample its own mask: all on, all off, one channel, all but one, densities 0.1-0.9; values
    # other than 1 count as on
    m = (rng.random((n, c)) < rng.uniform(0.1, 0.9, (n, 1))).astype(F32) * rng.choice([1.0, -2.5, 0.25], (n, c))
    m[0] = 1.0
    if n > 1:
        m[1] = 0.0
    if n > 2:
        m[2] = 0.0
        m[2, rng.integers(c)] = 1.0
    if n > 3:
        m[3] = 1.0
        m[3, rng.integers(c)] = 0.0
    return m.astype(F32)


def int8_model(path, blk, cin, h, w, stride, batch="N", gate=None, scalar_shape=()):
    """One int8 op node: GatedBlockInt8 (mask and residual inputs), with `gate` (G1, g1, G2) GatedBlockWithGateInt8
    (residual input), with a shortcut in blk too GatedBlockWithGateAndShortcutInt8 (no residual input)."""
    c, cout = blk["W1"].shape[0], blk["W2"].shape[0]
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, cin, h, w])]
    inits = {k: v for k, v in blk.items() if k not in ("x_scale", "h_scale")}
    inits["x_scale"] = np.asarray(blk["x_scale"], F32).reshape(scalar_shape)
    inits["h_scale"] = np.asarray(blk["h_scale"], F32).reshape(scalar_shape)
    conv = ["W1", "w1_scale", "b1", "W2", "w2_scale", "b2"]
    if gate is None:
        op, names = "GatedBlockInt8", ["x", "mask", *conv, "residual", "x_scale", "h_scale"]
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [batch, c]))
    else:
        inits.update(zip(("G1", "g1", "G2"), gate))
        if "Ws" in blk:
            op, names = (
                "GatedBlockWithGateAndShortcutInt8",
                ["x", "G1", "g1", "G2", *conv, "Ws", "ws_scale", "bs", "x_scale", "h_scale"],
            )
        else:
            op, names = "GatedBlockWithGateInt8", ["x", "G1", "g1", "G2", *conv, "residual", "x_scale", "h_scale"]
    if "residual" in names:
        inputs.append(helper.make_tensor_value_info("residual", TensorProto.FLOAT, [batch, cout, ho, wo]))
    node = helper.make_node(op, names, ["y"], domain="gatekit", stride=stride)
    graph = helper.make_graph(
        [node],
        "gated_block_int8",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, cout, ho, wo])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("gatekit", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def case_feeds(case, kind, seed, blk, ties=False):
    n, cin, h, w, c, cout, stride = case
    rng = np.random.default_rng(seed)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    return {
        "x": make_x(rng, (n, cin, h, w), blk, ties),
        "mask": make_mask(rng, n, c, kind),
        "residual": rng.standard_normal((n, cout, ho, wo)).astype(F32),
    }


def runner(runtime, lib, path, threads):
    if runtime == "ort":
        sess = ort_session(path, lib, threads)
        names = {i.name for i in sess.get_inputs()}
        return lambda feeds: sess.run(None, {k: v for k, v in feeds.items() if k in names})[0]
    cm = ov_compile(path, lib, threads)
    names = {i.get_any_name() for i in cm.inputs}
    return lambda feeds: cm({k: v for k, v in feeds.items() if k in names})[cm.output(0)]


def run_cases(runtime, lib, workdir, threads, cases=CASES, masks=MASKS):
    """Per (case, mask): the number of outputs that differ from the reference (bit for bit; NaN equals NaN),
    and the outputs."""
    diffs, outs = {}, {}
    for ci, case in enumerate(cases):
        n, cin, h, w, c, cout, stride = case
        ties = ci % 2 == 1
        blk = make_block(np.random.default_rng(ci), cin, c, cout, ties=ties)
        path = int8_model(
            Path(workdir) / f"int8_{ci}.onnx", blk, cin, h, w, stride, scalar_shape=(1,) if ci % 3 else ()
        )
        run = runner(runtime, lib, path, threads)
        for kind in masks:
            feeds = case_feeds(case, kind, 1000 * ci + len(kind), blk, ties)
            y = run(feeds)
            ref, _ = reference(feeds["x"], feeds["mask"], blk, stride, feeds["residual"])
            assert y.shape == ref.shape and y.dtype == F32
            key = f"{case}/{kind}"
            diffs[key] = int((~((y == ref) | (np.isnan(y) & np.isnan(ref)))).sum())
            outs[key] = y
    return diffs, outs


# ---------------------------------------------------------------------------------------------------------
# Tests.


def test_fmaf_reference_is_exact():
    """The numpy fmaf agrees with the C library's fmaf, on random values and on sums that land exactly halfway
    between two float32 values (where rounding the float64 sum to float32 would round twice)."""
    libm = ctypes.CDLL("libm.so.6") if sys.platform.startswith("linux") else None
    if libm is None:
        pytest.skip("needs glibc's libm")
    libm.fmaf.restype = ctypes.c_float
    libm.fmaf.argtypes = [ctypes.c_float] * 3
    rng = np.random.default_rng(0)
    a = rng.integers(-(2**26), 2**26, 3000).astype(F32)
    b = (rng.standard_normal(3000) * 1e-4).astype(F32)
    c = rng.standard_normal(3000).astype(F32)
    # a * b odd and above 2^24 (float32 steps of 2): a float32 midpoint; c = +-2^-30 is below float64's half step
    # there, so the float64 sum is the midpoint itself, and rounding it to float32 takes the even neighbour
    a = np.concatenate([a, np.array([4097, 4097, -4097, 4099], F32)])
    b = np.concatenate([b, np.array([4097, 4097, 4097, 4097], F32)])
    c = np.concatenate([c, np.array([2**-30, -(2**-30), -(2**-30), 2**-30], F32)])
    want = np.array([libm.fmaf(float(x), float(y), float(z)) for x, y, z in zip(a, b, c)], F32)
    got = fmaf(a, b, c)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    naive = (a.astype(F64) * b + c).astype(F32)
    assert not np.array_equal(naive, want)  # the crafted midpoints do round twice the naive way


def test_build_info_lists_int8_paths(built, ort_lib):
    info = built["libraries"]["ort"]["build_info"]
    assert "portable" in info["int8_isa_compiled"]
    assert info["int8_isa_selected"] in info["int8_isa_compiled"]


@pytest.mark.parametrize("threads", [1, 2])
def test_ort_int8_matches_integer_reference(ort_lib, tmp_path, threads):
    diffs, _ = run_cases("ort", ort_lib, tmp_path, threads)
    bad = {k: v for k, v in diffs.items() if v}
    assert not bad, bad


@pytest.mark.parametrize("threads", [1, 2])
def test_openvino_int8_agrees_with_ort(ort_lib, ov_lib, tmp_path, threads):
    """The same .onnx files on OpenVINO: every output equal to ONNX Runtime's (and so to the reference)."""
    cases = CASES[:6]
    _, y_ort = run_cases("ort", ort_lib, tmp_path, threads, cases=cases, masks=("random", "mixed"))
    diffs, y_ov = run_cases("openvino", ov_lib, tmp_path, threads, cases=cases, masks=("random", "mixed"))
    for k in y_ort:
        assert np.array_equal(y_ort[k].view(np.uint32), y_ov[k].view(np.uint32)), k
    assert not any(diffs.values()), diffs


@pytest.mark.parametrize("runtime", ["ort", "openvino"])
def test_int8_with_gate_and_shortcut(runtime, request, tmp_path):
    """GatedBlockWithGateInt8 (the gate in fp32 inside the op) and GatedBlockWithGateAndShortcutInt8 (the 1x1
    projection in int8 inside the op, its own accumulator and scale), batch 8, stride 1 and 2, odd widths."""
    lib = request.getfixturevalue("ort_lib" if runtime == "ort" else "ov_lib")
    for ci, case in enumerate([(8, 12, 8, 8, 20, 12, 1), (8, 13, 9, 7, 19, 21, 2), (2, 16, 17, 17, 33, 32, 2)]):
        n, cin, h, w, c, cout, stride = case
        rng = np.random.default_rng(80 + ci)
        gate = make_gate(rng, cin, c)
        gate[2][0] = 0.0  # channel 0: logit exactly 0 -> on in every sample
        for shortcut in (False, True):
            blk = make_block(rng, cin, c, cout, shortcut=shortcut)
            x = make_x(rng, (n, cin, h, w), blk)
            mask, logits = gate_reference(x, *gate)
            assert np.abs(logits[:, 1:]).min() > 1e-4 and 0 < mask[:, 1:].mean() < 1
            ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
            feeds = {"x": x, "residual": rng.standard_normal((n, cout, ho, wo)).astype(F32)}
            path = int8_model(tmp_path / f"g{ci}{shortcut}.onnx", blk, cin, h, w, stride, gate=gate)
            y = runner(runtime, lib, path, 2)(feeds)
            ref, _ = reference(x, mask, blk, stride, None if shortcut else feeds["residual"])
            assert np.array_equal(y, ref), f"{case} shortcut={shortcut}: {(y != ref).sum()} outputs differ"


@pytest.mark.parametrize("runtime", ["ort", "openvino"])
def test_int8_nonfinite_input_gives_nan(runtime, request, tmp_path):
    """A sample whose x holds a NaN or an infinity gets NaN in every output (not a confident number); the other
    samples are exact.  A NaN residual passes through the ReLU."""
    lib = request.getfixturevalue("ort_lib" if runtime == "ort" else "ov_lib")
    case = (4, 8, 9, 9, 12, 10, 2)
    n, cin, h, w, c, cout, stride = case
    blk = make_block(np.random.default_rng(5), cin, c, cout)
    feeds = case_feeds(case, "random", 6, blk)
    feeds["x"][1, 3, 4, 4] = np.nan
    feeds["x"][2, 0, 0, 0] = np.inf
    feeds["mask"][1] = 0.0  # no active channel: the sample is still NaN
    feeds["residual"][3, 2, 1, 1] = np.nan
    path = int8_model(tmp_path / "nan.onnx", blk, cin, h, w, stride)
    y = runner(runtime, lib, path, 2)(feeds)
    ref, _ = reference(feeds["x"], feeds["mask"], blk, stride, feeds["residual"])
    assert np.isnan(y[1]).all() and np.isnan(y[2]).all()
    assert np.isnan(y[3, 2, 1, 1]) and np.isfinite(y[0]).all()
    assert np.array_equal(y, ref, equal_nan=True)


@pytest.mark.parametrize(
    "bad,want",
    [
        ("w2_scale", r"w2_scale must be \[Cout\]"),
        ("x_scale", r"x_scale must be a finite number > 0"),
        ("h_scale_shape", r"h_scale must be a scalar"),
        ("W1_float", r"input W1 must be int8"),
    ],
)
def test_int8_refuses_bad_weights(ort_lib, ov_lib, tmp_path, bad, want):
    """One line naming the op and the input, on both runtimes, when the session is created or the model read."""
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(4)
    blk = make_block(rng, 4, 6, 5)
    if bad == "w2_scale":
        blk["w2_scale"] = blk["w2_scale"][:4]
    elif bad == "x_scale":
        blk["x_scale"] = np.array(0.0, F32)
    elif bad == "W1_float":
        blk["W1"] = blk["W1"].astype(F32)
    path = int8_model(tmp_path / "bad.onnx", blk, 4, 5, 5, 1, scalar_shape=(1, 1) if bad == "h_scale_shape" else ())
    if bad == "h_scale_shape":
        m = onnx.load(str(path))  # x_scale stays [], h_scale becomes [1, 1]
        for t in m.graph.initializer:
            if t.name == "x_scale":
                t.CopyFrom(numpy_helper.from_array(np.asarray(blk["x_scale"], F32).reshape(()), "x_scale"))
        onnx.save(m, str(path))
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(ort_lib))
    # ONNX Runtime checks an input's type against the op's declaration itself, naming input and op
    ort_want = r"\(W1\) of operator \(GatedBlockInt8\)" if bad == "W1_float" else r"gatekit::GatedBlockInt8: " + want
    with pytest.raises(Exception, match=ort_want) as e:
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    assert "\n" not in str(e.value).strip()
    with pytest.raises(Exception, match=r"gatekit::GatedBlockInt8: " + want):
        ov_compile(path, ov_lib, 1)


def test_openvino_int8_ir_round_trip(ov_lib, tmp_path):
    """The op survives an IR round trip (save_model, read_model of the XML) with the same outputs."""
    import openvino as ov

    case = (2, 13, 9, 7, 19, 21, 2)
    n, cin, h, w, c, cout, stride = case
    blk = make_block(np.random.default_rng(9), cin, c, cout)
    feeds = case_feeds(case, "mixed", 10, blk)
    path = int8_model(tmp_path / "rt.onnx", blk, cin, h, w, stride)
    core = ov.Core()
    core.add_extension(str(ov_lib))
    xml = tmp_path / "rt.xml"
    ov.save_model(core.read_model(str(path)), str(xml), compress_to_fp16=False)
    cm = core.compile_model(core.read_model(str(xml)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    y = cm(feeds)[cm.output(0)]
    ref, _ = reference(feeds["x"], feeds["mask"], blk, stride, feeds["residual"])
    assert np.array_equal(y, ref)


_ISA_CHILD = r"""
import ctypes, json, sys, tempfile
sys.path.insert(0, sys.argv[1])
from tests import test_native_int8 as t
lib = sys.argv[2]
f = ctypes.CDLL(lib).gatekit_ops_build_info
f.restype = ctypes.c_char_p
info = json.loads(f().decode())
with tempfile.TemporaryDirectory() as d:
    diffs, _ = t.run_cases("ort", lib, d, threads=2, masks=("random", "mixed", "on"))
print(json.dumps({"info": info, "diffs": diffs}))
"""


@pytest.mark.parametrize("isa", PATHS)
def test_each_int8_isa_path(ort_lib, isa):
    """GATEKIT_OPS_ISA forces an int8 kernel path (chosen once per process, hence a child process per path)."""
    out = subprocess.run(
        [sys.executable, "-c", _ISA_CHILD, str(REPO), str(ort_lib)],
        env=dict(os.environ, GATEKIT_OPS_ISA=isa),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    info = res["info"]
    if isa not in info["int8_isa_compiled"] or not info["int8_isa_request_honoured"]:
        pytest.skip(f"int8 path {isa} not available here (compiled: {info['int8_isa_compiled']})")
    assert info["int8_isa_selected"] == isa
    bad = {k: v for k, v in res["diffs"].items() if v}
    assert not bad, bad


# C++ self-check: the kernel sources compiled as CMake compiles them (per-ISA flags), the fp32 part (the gate)
# on its portable path only.
_SELFCHECK_UNITS = (
    ("gated_block.cpp", []),
    ("channel_gate.cpp", []),
    ("isa_portable.cpp", []),
    ("gated_block_int8.cpp", ["-DGATEKIT_HAVE_AVX2=1", "-DGATEKIT_HAVE_AVXVNNI=1", "-DGATEKIT_HAVE_AVX512VNNI=1"]),
    ("int8_isa_portable.cpp", []),
    ("int8_isa_avx2.cpp", ["-mavx2", "-mfma"]),
    ("int8_isa_avxvnni.cpp", ["-mavx2", "-mfma", "-mavxvnni"]),
    ("int8_isa_avx512vnni.cpp", ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-mfma"]),
    ("selfcheck_int8.cpp", []),
)


def _compile_all(cxx, units, kdir, out_dir, flags):
    """Compile (source, extra flags) units two at a time (-O3 for the kernels, as CMake; -O2 for the self-check
    itself); returns the object files."""
    objs, procs = [], []
    for src, extra in units:
        obj = out_dir / (Path(src).stem + ".o")
        objs.append(obj)
        opt = "-O2" if src.startswith("selfcheck") else "-O3"
        procs.append(
            subprocess.Popen(
                [cxx, opt, *flags, f"-I{kdir}", *extra, "-c", str(kdir / src), "-o", str(obj)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
        if len(procs) >= 2:
            p = procs.pop(0)
            assert p.wait(timeout=900) == 0, p.stdout.read()[-3000:]
    for p in procs:
        assert p.wait(timeout=900) == 0, p.stdout.read()[-3000:]
    return objs


def test_int8_kernel_selfcheck(tmp_path):
    """native/kernel/selfcheck_int8.cpp on every int8 path this CPU runs: accumulators, hidden u8 values and y
    bit for bit against a scalar integer reference (18 cases x 5 mask patterns x 4 thread settings x shortcut)."""
    import platform

    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if not cxx:
        pytest.skip("no C++ compiler")
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    units = _SELFCHECK_UNITS if x86 else [u for u in _SELFCHECK_UNITS if "avx" not in u[0]]
    if not x86:
        units = [(s, [f for f in e if not f.startswith("-DGATEKIT_HAVE")]) for s, e in units]
    kdir = REPO / "native" / "kernel"
    flags = ["-std=c++17", "-pthread", "-ffp-contract=off"]
    objs = _compile_all(cxx, units, kdir, tmp_path, flags)
    exe = tmp_path / "selfcheck_int8"
    link = subprocess.run([cxx, "-pthread", *map(str, objs), "-o", str(exe)], capture_output=True, text=True)
    assert link.returncode == 0, link.stderr[-3000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    res = json.loads(run.stdout.strip().splitlines()[-1])
    assert res["failed"] == 0 and res["cases"] == 720 * len(res["isa"]) and "portable" in res["isa"]
    assert res["values_checked"] > 4_000_000 * len(res["isa"])


def test_int8_kernel_on_aarch64_under_user_mode_emulation(tmp_path):
    """The portable int8 path on aarch64 with the dot-product extension (Cortex-A76 / A78, as in Raspberry Pi 5
    and Jetson Orin): cross-compiled with aarch64-linux-gnu-g++ -march=armv8.2-a+dotprod, its conv loops must use
    sdot, and the self-check (--quick: 1 worker and 3 on threads of their own) must pass under qemu-user (Debian
    packages g++-aarch64-linux-gnu qemu-user; skipped without them).  Exactness only: emulation says nothing about
    speed."""
    cxx, qemu = shutil.which("aarch64-linux-gnu-g++"), shutil.which("qemu-aarch64")
    sysroot = Path("/usr/aarch64-linux-gnu")
    if not (cxx and qemu and sysroot.is_dir()):
        pytest.skip("needs aarch64-linux-gnu-g++ and qemu-aarch64 (Debian: g++-aarch64-linux-gnu qemu-user)")
    kdir = REPO / "native" / "kernel"
    units = [(s, []) for s, _ in _SELFCHECK_UNITS if "avx" not in s]
    objs = _compile_all(
        cxx, units, kdir, tmp_path, ["-std=c++17", "-pthread", "-ffp-contract=off", "-march=armv8.2-a+dotprod"]
    )
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if objdump:
        dis = subprocess.run([objdump, "-d", str(tmp_path / "int8_isa_portable.o")], capture_output=True, text=True)
        assert dis.returncode == 0 and dis.stdout.count("sdot") >= 16, "no sdot in the portable int8 kernels"
    exe = tmp_path / "selfcheck_int8-aarch64"
    link = subprocess.run([cxx, "-pthread", *map(str, objs), "-o", str(exe)], capture_output=True, text=True)
    assert link.returncode == 0, link.stderr[-3000:]
    run = subprocess.run([qemu, "-L", str(sysroot), str(exe), "--quick"], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    res = json.loads(run.stdout.strip().splitlines()[-1])
    assert res["isa"] == ["portable"] and res["failed"] == 0 and res["cases"] == 360  # --quick: 2 thread settings
