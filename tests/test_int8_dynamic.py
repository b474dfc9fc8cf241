"""The int8 dynamic graph: the int8 block's arithmetic against an integer reference, its calibration, the two
forms it is written in (gatekit's int8 ops; Q/DQ standard ops that run without the op library), export
verified against the fp32 gated graph with the gate agreement recorded, its refusals, and bench / pick / the
LUT treating it as one more precision."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gatekit.errors import GatekitError
from tests.conftest import REPO

CKPT = REPO / "benchmarks" / "train_cifar10" / "checkpoints" / "vicreg-dual.safetensors"  # real, ResNet-18 x0.25


# ---------------------------------------------------------------------------------------------------------
# The arithmetic, against an integer reference written with numpy (int64 sums, no torch).


def _fma(acc, scale, bias):
    """fmaf((float)acc, scale, bias) per channel (axis 1)."""
    a = acc.astype(np.float32).astype(np.float64)
    s, b = (v.astype(np.float64)[None, :, None, None] for v in (scale, bias))
    return (a * s + b).astype(np.float32)


def _conv3x3(q, w, stride):
    n, c, h, wd = q.shape
    ho, wo = (h - 1) // stride + 1, (wd - 1) // stride + 1
    p = np.pad(q, ((0, 0), (0, 0), (1, 1), (1, 1)))
    taps = np.stack(
        [
            p[:, :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
            for i in range(3)
            for j in range(3)
        ],
        axis=2,
    )  # n, c, 9, ho, wo
    return np.einsum("nctij,oct->noij", taps, w.reshape(w.shape[0], c, 9).astype(np.int64))


def integer_reference(x, mask, w1, s1, b1, w2, s2, b2, residual, xs, hs, stride, ws=None, ss=None, bs=None):
    """The int8 gated block as INT8_OP semantics state it: u8 activations (zero point 0, round half to even),
    int32-range integer sums over the active channels only, float32 scales and biases."""
    xs, hs = np.float32(xs), np.float32(hs)
    qx = np.clip(np.rint(x / xs), 0, 255).astype(np.int64)
    acc1 = _conv3x3(qx, w1, stride)
    h = _fma(acc1, xs * s1, b1)
    qh = np.clip(np.rint(h / hs), 0, 255).astype(np.int64) * (mask != 0)[:, :, None, None]
    acc2 = _conv3x3(qh, w2, 1)
    assert np.abs(acc1).max() < 2**31 and np.abs(acc2).max() < 2**31
    if residual is None:
        accs = np.einsum("ncij,oc->noij", qx[:, :, ::stride, ::stride], ws.reshape(ws.shape[0], -1).astype(np.int64))
        residual = _fma(accs, xs * ss, bs)
    return np.maximum(_fma(acc2, hs * s2, b2) + residual, 0)


@pytest.mark.parametrize(
    "stride,cin,c,cout,size,shortcut",
    [(1, 16, 24, 16, 9, False), (2, 13, 7, 21, 10, True), (1, 5, 3, 5, 5, False), (2, 16, 32, 32, 17, True)],
)
@pytest.mark.parametrize("masks", ["all on", "all off", "random", "per sample"])
def test_int8_block_equals_the_integer_reference(stride, cin, c, cout, size, shortcut, masks):
    import torch

    from gatekit.export.int8 import int8_block

    rng = np.random.default_rng(stride * 100 + cin)
    n = 8
    x = np.maximum(rng.standard_normal((n, cin, size, size)) * 2, 0).astype(np.float32)
    x[0, 0, 0, 0] = 1000.0  # clipped to 255 steps
    w1 = rng.integers(-127, 128, (c, cin, 3, 3)).astype(np.int8)
    w2 = rng.integers(-127, 128, (cout, c, 3, 3)).astype(np.int8)
    s1, s2 = (rng.uniform(1e-4, 2e-3, k).astype(np.float32) for k in (c, cout))
    b1, b2 = (rng.standard_normal(k).astype(np.float32) for k in (c, cout))
    mask = {
        "all on": np.ones((n, c)),
        "all off": np.zeros((n, c)),
        "random": rng.integers(0, 2, (n, c)) * 3.0,
        "per sample": np.tril(np.ones((n, c)), k=c // 2 - 4),
    }[masks].astype(np.float32)
    ho = (size - 1) // stride + 1
    xs, hs = np.float32(0.031), np.float32(0.047)
    t = torch.from_numpy
    if shortcut:
        ws = rng.integers(-127, 128, (cout, cin, 1, 1)).astype(np.int8)
        ss = rng.uniform(1e-3, 5e-3, cout).astype(np.float32)
        bs = rng.standard_normal(cout).astype(np.float32)
        want = integer_reference(x, mask, w1, s1, b1, w2, s2, b2, None, xs, hs, stride, ws, ss, bs)
        got = int8_block(
            t(x),
            t(mask),
            t(w1),
            t(s1),
            t(b1),
            t(w2),
            t(s2),
            t(b2),
            None,
            torch.tensor(xs),
            torch.tensor(hs),
            stride,
            t(ws),
            t(ss),
            t(bs),
        )
    else:
        residual = rng.standard_normal((n, cout, ho, ho)).astype(np.float32)
        want = integer_reference(x, mask, w1, s1, b1, w2, s2, b2, residual, xs, hs, stride)
        got = int8_block(
            t(x),
            t(mask),
            t(w1),
            t(s1),
            t(b1),
            t(w2),
            t(s2),
            t(b2),
            t(residual),
            torch.tensor(xs),
            torch.tensor(hs),
            stride,
        )
    np.testing.assert_array_equal(got.numpy(), want)
    if masks == "all off" and not shortcut:
        np.testing.assert_array_equal(
            got.numpy(), np.maximum(_fma(np.zeros_like(want, dtype=np.int64), s2 * hs, b2) + residual, 0)
        )


def test_weights_are_int8_per_output_channel_and_symmetric():
    import torch

    from gatekit.export.int8 import quantize_weight

    w = torch.randn(6, 4, 3, 3)
    w[2] *= 100
    w[4] = 0
    q, s = quantize_weight(w)
    assert q.dtype == torch.int8 and s.shape == (6,)
    assert int(q.min()) >= -127 and int(q.max()) <= 127
    assert all(int(q[i].abs().max()) == 127 for i in (0, 1, 2, 3, 5))  # each channel uses its whole range
    assert s[4] == 1 and not q[4].any()
    err = (q.float() * s.view(-1, 1, 1, 1) - w).abs()
    assert bool((err <= s.view(-1, 1, 1, 1) / 2 + 1e-7).all())


def test_mse_threshold_clips_rare_outliers_not_the_bulk():
    from gatekit.export.int8 import HIST_BINS, mse_threshold

    rng = np.random.default_rng(0)
    values = np.concatenate([np.abs(rng.standard_normal(1_000_000)), [12.0]])  # one outlier three times past the bulk
    hist = np.histogram(values, bins=HIST_BINS, range=(0, values.max()))[0]
    t = mse_threshold(hist, float(values.max()))
    assert 3.5 < t < 8.0  # the outlier is clipped; the bulk (99.95% below 3.5) is not

    def mse(t):  # on the values themselves, not the histogram
        step = t / 255
        return float(np.mean((values - np.clip(np.round(values / step), 0, 255) * step) ** 2))

    assert mse(t) < 0.8 * mse(12.0) and mse(t) <= 1.05 * min(mse(c) for c in np.linspace(3.5, 12, 60))
    flat = np.histogram(rng.uniform(0, 1, 100000), bins=HIST_BINS, range=(0, 1))[0]
    assert mse_threshold(flat, 1.0) > 0.97  # a uniform distribution keeps its range
    assert mse_threshold(np.zeros(HIST_BINS), 0.0) == 1.0


# ---------------------------------------------------------------------------------------------------------
# A tiny random model: the two forms as built and traced, calibration, refusals.


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch

    from gatekit.checkpoint import save_model
    from gatekit.export.exporter import ExportOptions, Prepared
    from gatekit.models import GatedResNet, ModelConfig

    tmp = tmp_path_factory.mktemp("int8")
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 2, 64).astype(np.uint8)
    np.savez(tmp / "d.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    torch.manual_seed(3)
    model = GatedResNet(ModelConfig(width=0.125)).eval()  # random gates: on for some inputs, off for others
    save_model(tmp / "m.safetensors", model, {"train_config": {"dataset": "npz", "data_dir": str(tmp / "d.npz")}})
    opts = ExportOptions(
        graph="dynamic",
        precision="int8",
        calib=64,
        quant_calib=16,
        verify_images=32,
        threads=1,
        knn_train=64,
        knn_test=32,
        record_inputs=0,
        dynamic_batch=True,
    )
    return tmp, Prepared(tmp / "m.safetensors", opts, progress=False)


def test_both_forms_trace_to_int8_weights_and_share_the_scales(tiny, tmp_path):
    import onnx
    import torch

    from gatekit.export.accuracy_checks import reference
    from gatekit.export.exporter import _export_onnx
    from gatekit.export.int8 import Int8GatedBlock

    tmp, prep = tiny
    native, spec = prep.graphs.graph("native", "int8")
    qdq, _ = prep.graphs.graph("qdq", "int8")
    assert spec.skipping == [True] * 8 and prep.graphs.graph("qdq", "int8")[1].skipping == [False] * 8
    for a, b in zip(native.blocks, qdq.blocks, strict=True):
        assert isinstance(a, Int8GatedBlock) and a.form == "native" and b.form == "qdq"
        assert float(a.x_scale) == float(b.x_scale) > 0 and float(a.h_scale) == float(b.h_scale) > 0
    x = torch.from_numpy(prep.verify_images)
    with torch.inference_mode():
        ref, a, b = reference(prep, prep.verify_images), native(x).numpy(), qdq(x).numpy()
    from gatekit.runtimes.quantize import cosine

    assert cosine(a, ref).mean() > 0.99 and cosine(b, a).mean() > 0.999  # close to fp32, and to each other
    _export_onnx(prep, tmp_path / "n.onnx", "native")
    _export_onnx(prep, tmp_path / "q.onnx", "qdq")
    n, q = (onnx.load(str(tmp_path / f)) for f in ("n.onnx", "q.onnx"))
    inits = {t.name: t for t in n.graph.initializer}
    ops = [node for node in n.graph.node if node.domain == "gatekit"]
    assert [o.op_type for o in ops] == ["GatedBlockWithGateInt8"] * 2 + [
        "GatedBlockWithGateAndShortcutInt8",
        "GatedBlockWithGateInt8",
    ] * 3
    for o in ops:  # W1, W2 (and Ws) int8 constants, the two scales float scalars, all initializers
        w = [4, 7] + ([10] if o.op_type.endswith("ShortcutInt8") else [])
        assert [inits[o.input[i]].data_type for i in w] == [onnx.TensorProto.INT8] * len(w)
        assert all(
            inits[o.input[i]].dims == [] and inits[o.input[i]].data_type == onnx.TensorProto.FLOAT for i in (-2, -1)
        )
    assert not any(node.domain == "gatekit" for node in q.graph.node)
    types = [node.op_type for node in q.graph.node]
    assert types.count("QuantizeLinear") == 3 * 8 and types.count("Conv") == 1 + 2 * 8 + 3
    assert sum(t.data_type == onnx.TensorProto.INT8 for t in q.graph.initializer) == 2 * 8 + 3
    import onnxruntime as ort

    with torch.inference_mode():
        b8 = qdq(x[:8]).numpy()
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": prep.verify_images[:8]})[0]
    assert cosine(out, b8).min() > 0.9999  # the runtime's Q/DQ is the module's


def test_calibration_records_scales_and_gate_agreement(tiny):
    tmp, prep = tiny
    rec = prep.graphs.int8_record("qdq")
    assert rec["tool"] == "gatekit" and rec["estimator"] == "mse" and rec["calibration"]["images"] == 16
    assert [s["block"] for s in rec["scales"]] == list(range(8))
    for s in rec["scales"]:  # the threshold lies within the values seen
        assert 0 < s["x_scale"] * 255 <= s["x_max"] + 1e-6 and 0 < s["h_scale"] * 255 <= s["h_max"] + 1e-6
    g = rec["gate_agreement"]
    assert g["images"] == 16 and len(g["per_block"]) == 8 and 0.9 < g["decisions"] <= 1.0
    assert 0.0 <= g["images_all_agree"] <= 1.0 and g["per_block"][0] == 1.0  # block 0 reads the float stem's output


def test_quant_exclude_keeps_blocks_in_float(tiny):
    from gatekit.export.exporter import ExportOptions, Prepared
    from gatekit.export.graphs import NativeGatedBlock, StaticBlock
    from gatekit.export.int8 import Int8GatedBlock, int8_op_types

    tmp, _ = tiny
    opts = ExportOptions(
        graph="dynamic",
        precision="int8",
        calib=64,
        quant_calib=8,
        verify_images=32,
        quant_exclude=("last", "block2", "stem"),
    )
    prep = Prepared(tmp / "m.safetensors", opts, progress=False)
    native, _ = prep.graphs.graph("native", "int8")
    assert [type(b) for b in native.blocks] == (
        [Int8GatedBlock] * 2 + [NativeGatedBlock] + [Int8GatedBlock] * 4 + [NativeGatedBlock]
    )
    assert int8_op_types(native) == [
        "GatedBlockWithGateInt8",
        "GatedBlockWithGateAndShortcut",
        "GatedBlockWithGateAndShortcutInt8",
        "GatedBlockWithGate",
    ]
    assert isinstance(prep.graphs.graph("qdq", "int8")[0].blocks[2], StaticBlock)
    rec = prep.graphs.int8_record("native")
    assert rec["float_blocks"] == [2, 7] and [s["block"] for s in rec["scales"]] == [0, 1, 3, 4, 5, 6]
    opts.quant_exclude = ("block9",)
    with pytest.raises(GatekitError, match="--quant-exclude 'block9'"):
        prep.int8_calibration.float_blocks()


def test_int8_dynamic_refusals(tiny, tmp_path, monkeypatch):
    from gatekit import native_ops
    from gatekit.export.exporter import ExportOptions, export, precision_refusal
    from gatekit.runtimes import native_probe

    tmp, prep = tiny
    assert precision_refusal("dynamic", "onnx", "int8") is None
    assert precision_refusal("dynamic", "openvino", "int8") is None
    assert "int8 dynamic graphs run on ONNX and OpenVINO IR" in precision_refusal("dynamic", "tensorrt", "int8")
    with pytest.raises(GatekitError, match="dynamic graphs are exported in fp32 or int8.*not fp16"):
        export(tmp / "m.safetensors", tmp_path, ExportOptions(graph="dynamic", fmt="openvino", precision="fp16"))
    with pytest.raises(GatekitError, match="not as a TensorRT engine; use --format onnx or openvino"):
        export(tmp / "m.safetensors", tmp_path, ExportOptions(graph="dynamic", fmt="tensorrt", precision="int8"))
    for form, precision, message in (
        ("conv", "int8", "--dynamic-form conv is an fp32 form"),
        ("matmul", "int8", "--dynamic-form matmul is an fp32 form"),
        ("qdq", "fp32", "qdq is the int8 dynamic graph's standard-ops form: add --precision int8"),
    ):
        prep.opts.dynamic_form = form
        with pytest.raises(GatekitError, match=message):
            prep.graphs.dynamic_form("onnx", precision)
    prep.opts.dynamic_form = "native"
    missing = native_ops.NativeOpsError("not built", "missing")
    monkeypatch.setattr(native_ops, "library_for", lambda rt: None)
    monkeypatch.setattr(native_ops, "find_library", lambda rt, versions=None: (None, missing))
    with pytest.raises(GatekitError, match="needs gatekit's op library for ort"):
        prep.graphs.dynamic_form("onnx", "int8")
    prep.opts.dynamic_form = "auto"
    assert prep.graphs.dynamic_form("onnx", "int8") == "qdq" and prep.graphs.dynamic_form("openvino", "int8") == "qdq"
    monkeypatch.setattr(native_ops, "library_for", lambda rt: tmp / "libold.so")  # an op library without the int8 ops
    monkeypatch.setattr(native_ops, "find_library", lambda rt, versions=None: (tmp / "libold.so", None))
    monkeypatch.setattr(native_probe, "library_runs", lambda rt, lib, ops: False)
    assert prep.graphs.dynamic_form("onnx", "int8") == "qdq" and prep.graphs.dynamic_form("onnx", "fp32") == "native"
    prep.opts.dynamic_form = "native"
    with pytest.raises(
        GatekitError,
        match=r"has no int8 gated-block ops \(GatedBlockWithGateInt8, "
        r"GatedBlockWithGateAndShortcutInt8\): rebuild it with `gatekit ops build`",
    ):
        prep.graphs.dynamic_form("openvino", "int8")
    prep.opts.dynamic_form = "auto"


def test_an_int8_dynamic_graph_past_the_thresholds_is_refused(tiny, tmp_path):
    """Verified in its runtime like every int8 artifact: past --min-cosine, refused with the dynamic graph's hint
    (blocks, not the stem, kept in float), nothing written."""
    from gatekit.export.exporter import export

    tmp, prep = tiny
    prep.opts.fmt, prep.opts.dynamic_form, prep.opts.min_cosine = "onnx", "qdq", 0.9999999
    try:
        with pytest.raises(
            GatekitError,
            match=r"int8: mean feature cosine to fp32 0\.9.* is below 0\.9999999.*"
            r"not written: keep blocks in float \(--quant-exclude last or blockN\)",
        ):
            export(tmp / "m.safetensors", tmp_path, prep.opts, progress=False, prepared=prep)
    finally:
        prep.opts.min_cosine, prep.opts.dynamic_form = 0.99, "auto"
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]


def test_cli_refuses_an_int8_dynamic_engine_in_one_line(tmp_path):
    from tests.test_cli import assert_one_line_error, run_gatekit

    proc = run_gatekit(
        "export",
        str(CKPT),
        "--graph",
        "dynamic",
        "--format",
        "tensorrt",
        "--precision",
        "int8",
        "--out",
        str(tmp_path / "out"),
    )
    assert_one_line_error(proc, "int8 dynamic graphs run on ONNX and OpenVINO IR")
    assert not (tmp_path / "out").exists()  # refused before any work


def test_a_library_without_int8_ops_runs_the_fallback(tmp_path, monkeypatch):
    """An int8 native artifact on a machine whose op library predates the int8 ops: auto runs the Q/DQ fallback,
    --ops native refuses in one line naming the missing ops."""
    from gatekit import native_ops
    from gatekit.artifacts import Artifact
    from gatekit.runtimes import load_artifact, native_probe

    manifest = {
        "graph": "dynamic",
        "format": "onnx",
        "files": {"onnx": "d.onnx", "fallback_onnx": "d.fallback.onnx"},
        "native_op": {"ops": ["gatekit.GatedBlockWithGateInt8"]},
    }
    (tmp_path / "d.onnx").write_bytes(native_probe.probe_model(("GatedBlockWithGateInt8",)))
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["output"])],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 8, 4, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8, 4, 4])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "d.fallback.onnx"))
    art = Artifact(tmp_path / "d.onnx.json", manifest)
    monkeypatch.setattr(native_ops, "library_for", lambda rt: tmp_path / "libold.so")
    monkeypatch.setattr(native_probe, "library_runs", lambda rt, lib, ops: False)
    with load_artifact(art, threads=1) as s:
        assert s.info.ops == "fallback"
    with pytest.raises(GatekitError, match=r"needs gatekit's int8 ops \(GatedBlockWithGateInt8\).*rebuild it"):
        load_artifact(art, ops="native", threads=1)


def test_the_probe_answers_no_for_what_cannot_run_the_int8_ops(tmp_path):
    import onnx

    from gatekit.runtimes.native_probe import INT8_OPS, library_runs, probe_model

    model = onnx.load_model_from_string(probe_model(INT8_OPS))
    assert [(n.domain, n.op_type) for n in model.graph.node][:3] == [("gatekit", op) for op in INT8_OPS]
    bogus = tmp_path / "libbogus.so"
    bogus.write_bytes(b"not a library")
    for rt in ("ort", "openvino"):
        assert not library_runs(rt, None) and not library_runs(rt, tmp_path / "missing.so")
        assert not library_runs(rt, bogus, INT8_OPS)  # the runtime's load error is a no, not an exception


# ---------------------------------------------------------------------------------------------------------
# Export of the real checkpoint on real images: the standard-ops form (no op library), and the native form
# where the op library runs the int8 ops.


def small(**kw):
    from gatekit.export.exporter import ExportOptions

    base = dict(
        graph="dynamic",
        precision="int8",
        calib=300,
        quant_calib=32,
        knn_train=1000,
        knn_test=400,
        threads=1,
        verify_images=32,
        record_inputs=4,
    )
    return ExportOptions(**(base | kw))


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    from tests.conftest import data_dir

    if data_dir() is None:
        pytest.skip("real CIFAR-10 not found: set GATEKIT_DATA to a directory holding cifar10.npz")
    from gatekit.export.exporter import Prepared

    return Prepared(CKPT, small(data_dir=str(data_dir())), progress=False)


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_standard_ops_int8_dynamic_export_is_verified_against_fp32(real, tmp_path, fmt):
    import onnx

    from gatekit.artifacts import open_artifact
    from gatekit.export.exporter import export
    from gatekit.runtimes import load_artifact

    real.opts.fmt, real.opts.dynamic_form = fmt, "qdq"
    m = export(CKPT, tmp_path, real.opts, progress=False, prepared=real)
    v, q = m["verification"], m["quantization"]
    assert m["precision"] == "int8" and m["dynamic_form"] == "qdq" and m["runtime"]["precision"] == "int8"
    assert "native_op" not in m and not any(k.startswith("fallback") for k in m["files"])
    assert v["cosine_to_fp32"]["mean"] >= 0.99 and v["knn_delta_points"] >= -1.0 - 1e-9
    assert v["reference"].startswith("fp32 gated graph") and v["fp32_torch_module_relative_error"] < 1e-4
    assert v["gate_agreement"]["images"] == 32 and v["gate_agreement"]["decisions"] > 0.99
    assert q["tool"] == "gatekit" and q["format"].startswith("QDQ") and len(q["scales"]) == 8
    assert q["calibration"] == {"dataset": "cifar10", "split": "train", "images": 32, "first": True}
    assert q["gate_agreement"] == v["gate_agreement"] and "quantization" not in m["runtime"]
    assert m["macs"]["ratio_to_dense"] < 1 and m["per_input"]["first"] == 4
    if fmt == "onnx":
        model = onnx.load(str(tmp_path / "dynamic-int8.onnx"))
        assert not any(n.domain == "gatekit" for n in model.graph.node)  # runs without gatekit's op library
        assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in model.graph.node}
        from gatekit.runtimes.tensorrt_build import engine_from_artifact

        with pytest.raises(GatekitError, match="is an int8 dynamic graph, which runs on ONNX Runtime and OpenVINO"):
            engine_from_artifact(tmp_path / "dynamic-int8.onnx.json", tmp_path / "trt", precision="int8")
    else:  # activations through FakeQuantize (x twice, h on both sides of the mask), weights stored int8
        import openvino as ov

        ops = ov.Core().read_model(str(tmp_path / "dynamic-int8.xml")).get_ordered_ops()
        assert [op.get_type_name() for op in ops].count("FakeQuantize") == 3 * 8
        assert sum(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8 for op in ops) == 2 * 8 + 3
    art = open_artifact(tmp_path / f"dynamic-int8.{fmt}.json")
    with load_artifact(art, threads=1, precision="int8") as s:
        assert s.info.precision == "int8" and s.info.ops is None
        assert s.run(real.verify_images[:1]).shape == (1, real.model.feature_dim)


def _int8_library(rt):
    from gatekit import native_ops
    from gatekit.runtimes.native_probe import INT8_OPS, library_runs

    lib = native_ops.library_for(rt)
    return lib if lib is not None and library_runs(rt, lib, INT8_OPS) else None


@pytest.mark.parametrize("fmt,rt", [("onnx", "ort"), ("openvino", "openvino")])
def test_native_int8_dynamic_export_carries_a_verified_fallback(real, tmp_path, fmt, rt):
    import onnx
    import torch

    from gatekit.artifacts import open_artifact
    from gatekit.export.exporter import export
    from gatekit.runtimes import load_artifact

    if _int8_library(rt) is None:
        pytest.skip(f"gatekit's op library for {rt} with the int8 ops is not built here (`gatekit ops build`)")
    real.opts.fmt, real.opts.dynamic_form = fmt, "auto"
    m = export(CKPT, tmp_path, real.opts, progress=False, prepared=real)
    v = m["verification"]
    assert m["dynamic_form"] == "native" and m["runtime"]["ops"] == "native op"
    assert m["native_op"]["ops"] == ["gatekit.GatedBlockWithGateInt8", "gatekit.GatedBlockWithGateAndShortcutInt8"]
    assert m["native_op"]["fallback_form"] == "qdq" and m["quantization"]["format"] == "gatekit int8 ops"
    assert v["cosine_to_fp32"]["mean"] >= 0.99 and v["knn_delta_points"] >= -1.0 - 1e-9
    fb = v["fallback"]
    assert fb["cosine_to_fp32"]["mean"] >= 0.99 and fb["knn_delta_points"] >= -1.0 - 1e-9 and "gate_agreement" in fb
    if fmt == "onnx":
        ops = [n for n in onnx.load(str(tmp_path / "dynamic-int8.onnx")).graph.node if n.domain == "gatekit"]
        assert len(ops) == 8
    # the op computes what its PyTorch module states (integer sums exact; float32 epilogues)
    art = open_artifact(tmp_path / f"dynamic-int8.{fmt}.json")
    with load_artifact(art, ops="native", threads=2) as s, torch.inference_mode():
        got = np.concatenate([s.run(real.verify_images[i : i + 1]) for i in range(16)])
        want = real.graphs.graph("native", "int8")[0](torch.from_numpy(real.verify_images[:16])).numpy()
    close = np.isclose(got, want, rtol=1e-4, atol=1e-4).all(axis=1)
    assert close.mean() >= 0.9, np.abs(got - want).max(axis=1)  # a rare rounding tie may flip one step of one image
    with load_artifact(art, ops="fallback", threads=1) as s:
        assert s.info.ops == "fallback"


# ---------------------------------------------------------------------------------------------------------
# Bench, pick and the LUT.


def test_bench_records_the_check_of_the_path_that_ran():
    from gatekit.bench.run import manifest_summary

    agree = {"images": 32, "decisions": 0.999}
    m = {
        "graph": "dynamic",
        "precision": "int8",
        "verification": {
            "cosine_to_fp32": {"mean": 0.9995},
            "knn20": 0.66,
            "knn20_fp32": 0.665,
            "knn_delta_points": -0.5,
            "gate_agreement": agree,
            "fallback": {
                "cosine_to_fp32": {"mean": 0.999},
                "knn20": 0.664,
                "knn20_fp32": 0.665,
                "knn_delta_points": -0.1,
                "gate_agreement": agree,
            },
        },
    }
    assert manifest_summary(m, "native op")["precision_check"]["knn_delta_points"] == -0.5
    assert manifest_summary(m, "fallback")["precision_check"]["knn_delta_points"] == -0.1
    assert manifest_summary(m)["precision_check"]["gate_agreement"] == agree


def test_pick_weighs_int8_dynamic_graphs_with_the_others():
    from gatekit.bench.run import SCHEMA
    from gatekit.pick.select import candidates, pick

    def rec(graph, precision, p90, knn_delta=None, form=None):
        manifest = {
            "graph": graph,
            "budget": 0.3,
            "checkpoint_sha256": "A",
            "format": "onnx",
            "dynamic_form": form,
            "precision": precision,
            "macs": {"ratio_to_dense": 1.0 if graph == "dense" else 0.3},
        }
        if knn_delta is not None:
            manifest["precision_check"] = {"knn_delta_points": knn_delta, "cosine_to_fp32": {"mean": 0.999}}
        return {
            "schema": SCHEMA,
            "manifest": manifest,
            "runtime": {"name": "ort"},
            "threads": 1,
            "batch": 1,
            "precision": precision,
            "stats": {"p90_ms": p90},
        }

    acc = {"A": {"dense": {"knn20_cosine": 0.669}, "gated": {"knn20_cosine": 0.6615}}}
    records = [
        rec("dense", "fp32", 1.0),
        rec("dense", "int8", 0.45, knn_delta=-0.1),
        rec("dynamic", "fp32", 0.41, form="native"),
        rec("dynamic", "int8", 0.2, knn_delta=-0.4, form="native"),
    ]
    chosen, _ = pick(candidates(records, acc), 0.3)  # only the int8 dynamic graph is fast enough
    assert chosen.record["manifest"]["graph"] == "dynamic" and chosen.record["precision"] == "int8"
    assert chosen.accuracy == pytest.approx(0.6615 - 0.004) and "dynamic (native)" in chosen.name
    chosen, _ = pick(candidates(records, acc), 0.5)  # dense int8 is more accurate and meets it
    assert chosen.record["manifest"]["graph"] == "dense" and chosen.record["precision"] == "int8"


def _int8_lut():
    from gatekit.pick import predict as predictor
    from tests.test_profile import fake_lut

    lut, arch = fake_lut(scale=0.8, overhead=0.3)
    lut["precision"] = "int8"
    native = [
        {
            "index": b.index,
            "planes": b.planes,
            "widths": [0, b.planes],
            "p50_ms": [0.05, 0.05 + 0.005 * b.planes],
            "p90_ms": [0.06, 0.06 + 0.006 * b.planes],
        }
        for b in arch.blocks()
    ]
    lut["native"] = {"blocks": native, "precision": "int8"}
    configs = [[round(b.planes * f) for b in arch.blocks()] for f in (0.0, 0.5, 1.0)]
    view = predictor.native_view(lut)
    measured = [
        {"p50_ms": 1.5 * predictor.table_sum(view, c) + 0.1, "p90_ms": 2 * predictor.table_sum(view, c)}
        for c in configs
    ]
    lut["native"]["calibration"] = predictor.calibrate(view, configs, measured)
    return lut, arch


def test_the_lut_int8_table_predicts_int8_dynamic_graphs_only():
    from gatekit.pick import predict as predictor

    lut, arch = _int8_lut()
    assert predictor.native_precision(lut) == "int8"
    active = np.array([[0] * 8, [b.planes for b in arch.blocks()], [b.planes // 2 for b in arch.blocks()]])
    pred = predictor.predict_dynamic(lut, active, native=True, precision="int8")
    full = 0.05 + 0.01 + sum(0.05 + 0.005 * b.planes for b in arch.blocks())
    half = 0.06 + sum(0.05 + 0.005 * (b.planes // 2) for b in arch.blocks())
    assert pred["per_input_ms"] == pytest.approx([1.5 * (0.06 + 0.4) + 0.1, 1.5 * full + 0.1, 1.5 * half + 0.1])
    assert pred["precision"] == "int8" and pred["per_input_p90_ms"][1] == pytest.approx(2 * full)
    with pytest.raises(GatekitError, match="times the int8 op, the graph is fp32: .*--native --precision fp32"):
        predictor.predict_dynamic(lut, active, native=True, precision="fp32")
    lut["native"].pop("precision")  # a LUT that predates the field: its top-level precision says
    assert predictor.native_precision(lut) == "int8"
    lut["precision"] = "fp32"
    with pytest.raises(GatekitError, match="times the fp32 op, the graph is int8"):
        predictor.native_view(lut, "int8")


def test_synth_writes_int8_native_blocks():
    import onnx

    from gatekit.models.arch import Architecture
    from gatekit.pick import synth

    arch = Architecture(width=0.125)
    net = synth.network(arch, [b.planes // 2 for b in arch.blocks()], native=True, masks=2, int8=True)
    ops = [n for n in net.graph.node if n.domain == "gatekit"]
    assert [n.op_type for n in ops] == ["GatedBlockWithGateInt8"] * 2 + [
        "GatedBlockWithGateAndShortcutInt8",
        "GatedBlockWithGateInt8",
    ] * 3
    inits = {t.name: t for t in net.graph.initializer}
    for n in ops:
        w = [4, 7] + ([10] if n.op_type.endswith("ShortcutInt8") else [])
        assert all(inits[n.input[i]].data_type == onnx.TensorProto.INT8 for i in w)
        assert float(onnx.numpy_helper.to_array(inits[n.input[-1]])) == pytest.approx(synth.INT8_X_SCALE)
    assert not any(
        n.domain == "gatekit" and n.op_type.endswith("Int8")
        for n in synth.network(arch, [4] * 8, native=True).graph.node
    )


def test_profile_refuses_a_native_int8_table_without_the_int8_ops(monkeypatch):
    from gatekit import native_ops
    from gatekit.pick.profile import ProfileOptions, _native_library
    from gatekit.runtimes import native_probe

    with pytest.raises(GatekitError, match="runs fp32 or int8, not fp16"):
        _native_library(ProfileOptions(runtime="openvino", precision="fp16", native=True))
    monkeypatch.setattr(native_ops, "library_for", lambda rt: "/x/libgatekit_ort_ops.so")
    monkeypatch.setattr(native_ops, "find_library", lambda rt, versions=None: ("/x/libgatekit_ort_ops.so", None))
    monkeypatch.setattr(native_probe, "library_runs", lambda rt, lib, ops: False)
    with pytest.raises(GatekitError, match="--native --precision int8 times gatekit's int8 ops.*rebuild"):
        _native_library(ProfileOptions(runtime="ort", precision="int8", native=True))
    assert _native_library(ProfileOptions(runtime="ort", precision="int8", native=None)) is None
    assert _native_library(ProfileOptions(runtime="ort", precision="fp32", native=None)) == "/x/libgatekit_ort_ops.so"
    monkeypatch.setattr(native_probe, "library_runs", lambda rt, lib, ops: True)
    assert _native_library(ProfileOptions(runtime="ort", precision="int8", native=True)) == "/x/libgatekit_ort_ops.so"


def test_profile_times_the_int8_op(cifar_dir):
    from gatekit.models.arch import Architecture
    from gatekit.pick import predict as predictor
    from gatekit.pick.profile import ProfileOptions, profile, real_inputs
    from tests.test_profile import TINY

    if _int8_library("ort") is None:
        pytest.skip("gatekit's op library with the int8 ops is not built here (`gatekit ops build`)")
    arch = Architecture(width=0.125, input_size=32)
    images = real_inputs("cifar10", str(cifar_dir), 32, count=4)
    opts = ProfileOptions(
        runtime="ort",
        threads=1,
        round_to=8,
        precision="int8",
        protocol=TINY,
        check_protocol=TINY,
        check=2,
        native=True,
        native_steps=2,
        calibration=(0.5, 1.0),
        calibration_random=1,
    )
    lut = profile(arch, opts, images)
    table = lut["native"]
    assert table["precision"] == "int8" and lut["precision"] == "int8"
    assert [b["widths"] for b in table["blocks"]][0] == [0, 4, 8]
    assert all(v > 0 for b in table["blocks"] for v in b["p50_ms"])
    pred = predictor.predict_dynamic(
        lut, np.array([[4] * 8, [b.planes for b in arch.blocks()]]), native=True, precision="int8"
    )
    assert 0 < pred["per_input_ms"][0] and pred["per_input_ms"][1] > 0
    json.dumps(lut)  # a LUT is JSON
