"""The native dynamic graph end to end: export (native form and its standard-ops fallback, both verified
against the PyTorch gated path at batch 1 and 8), loading with and without the op library, the bench
record saying which path ran, and the torch reference rebuilding the same module."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO


def _libraries():
    from gatekit import native_ops

    return {rt: native_ops.library_for(rt) for rt in ("ort", "openvino")}


pytestmark = pytest.mark.skipif(
    not all(_libraries().values()),
    reason="gatekit's native op libraries are not built here (`gatekit ops build`; make venv builds them)",
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import torch

    from gatekit.checkpoint import save_model
    from gatekit.export.sweep import export_all
    from gatekit.models import GatedResNet, ModelConfig

    tmp = tmp_path_factory.mktemp("native")
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (96, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp / "d.npz", x_train=x, y_train=np.zeros(96, np.uint8), x_test=x, y_test=np.zeros(96, np.uint8))
    torch.manual_seed(3)
    model = GatedResNet(ModelConfig(width=0.25)).eval()  # random gates: on for some inputs, off for others
    save_model(tmp / "m.safetensors", model, {"train_config": {"dataset": "npz", "data_dir": str(tmp / "d.npz")}})
    manifests, _ = export_all(
        tmp / "m.safetensors",
        tmp / "out",
        graphs=["dynamic"],
        formats=["onnx", "openvino"],
        strict=True,
        verify_images=32,
        calib=96,
        threads=1,
        dynamic_batch=True,
        record_inputs=8,
    )
    return tmp, {m["format"]: m for m in manifests}


def test_export_writes_the_native_form_with_a_verified_fallback(exported):
    tmp, manifests = exported
    for fmt, m in manifests.items():
        assert m["dynamic_form"] == "native" and m["runtime"]["ops"] == "native op"
        assert m["native_op"]["op"] == "gatekit.GatedBlockWithGate" and m["native_op"]["gate"] == "op"
        assert m["native_op"]["ops"] == ["gatekit.GatedBlockWithGate", "gatekit.GatedBlockWithGateAndShortcut"]
        assert m["native_op"]["shortcut"] == "op"
        assert m["native_op"]["fallback_form"] == {"onnx": "conv", "openvino": "matmul"}[fmt]
        assert set(m["verification"]["relative_error"]) == {"batch1", "batch8"}
        assert max(m["verification"]["relative_error"].values()) < 1e-4
        assert max(m["verification"]["fallback_relative_error"].values()) < 1e-4
        assert all((tmp / "out" / f).is_file() for f in m["files"].values())
        assert any(k.startswith("fallback_") for k in m["files"])
        active = np.array(m["per_input"]["active_widths"])  # the masks really differ between inputs
        assert (active.std(axis=0) > 0).sum() >= 4 and (active.mean(axis=0) < np.array(m["widths"])).sum() >= 4
    import onnx

    model = onnx.load(str(tmp / "out" / "dynamic.onnx"))
    ops = [n for n in model.graph.node if n.domain == "gatekit"]
    # the three stage-changing blocks carry their projection shortcut inside the node
    assert [n.op_type for n in ops] == ["GatedBlockWithGate"] * 2 + [
        "GatedBlockWithGateAndShortcut",
        "GatedBlockWithGate",
    ] * 3
    inits = {t.name for t in model.graph.initializer}
    # gate, conv and shortcut weights: constants packed at load (GatedBlockWithGate's last input is its residual)
    assert all(i in inits for n in ops for i in n.input[1 : 8 if n.op_type == "GatedBlockWithGate" else 10])
    # the gates and shortcuts are inside the nodes: no matrix product outside them, and the stem the only Conv
    assert not any(n.op_type in ("MatMul", "Gemm", "GreaterOrEqual") for n in model.graph.node)
    assert [n.op_type for n in model.graph.node].count("Conv") == 1
    fallback = onnx.load(str(tmp / "out" / "dynamic.fallback.onnx"))
    assert not any(n.domain == "gatekit" for n in fallback.graph.node)


def test_native_and_fallback_paths_agree_with_per_sample_masks(exported):
    from gatekit.artifacts import load_inputs, open_artifact
    from gatekit.runtimes import load_artifact

    tmp, manifests = exported
    for fmt in manifests:
        art = open_artifact(tmp / "out" / f"dynamic.{fmt}.json")
        x, _ = load_inputs(art.manifest, 8, str(tmp / "d.npz"))
        with load_artifact(art, ops="native", threads=1) as native, load_artifact(art, ops="fallback", threads=1) as fb:
            assert native.info.ops == "native op" and fb.info.ops == "fallback"
            batch = native.run(x)
            single = np.concatenate([native.run(x[i : i + 1]) for i in range(8)])
            np.testing.assert_allclose(batch, single, rtol=1e-5, atol=1e-5)  # no union over the batch
            np.testing.assert_allclose(batch, fb.run(x), rtol=1e-4, atol=1e-4)


def test_a_nan_pixel_gives_nan_features_as_through_the_fallback(exported):
    """One NaN pixel (and, in another sample, one +inf pixel) in a real-sized input: every one of the 128 features
    of that sample is NaN on the native op, as on the standard-ops fallback (ONNX Runtime), alone and in a batch
    with clean samples, which stay finite and equal."""
    from gatekit.artifacts import load_inputs, open_artifact
    from gatekit.runtimes import load_artifact

    tmp, _ = exported
    art = open_artifact(tmp / "out" / "dynamic.onnx.json")
    x, _ = load_inputs(art.manifest, 4, str(tmp / "d.npz"))
    x[0, 1, 10, 20] = np.nan
    x[2, 0, 31, 0] = np.inf
    with load_artifact(art, ops="native", threads=1) as native, load_artifact(art, ops="fallback", threads=1) as fb:
        assert native.info.ops == "native op" and fb.info.ops == "fallback"
        y, want = native.run(x), fb.run(x)
        assert y.shape == (4, 128)
        np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
        assert np.isnan(y[[0, 2]]).all() and np.isfinite(y[[1, 3]]).all()
        np.testing.assert_allclose(y[[1, 3]], want[[1, 3]], rtol=1e-4, atol=1e-4)
        for i in range(4):
            np.testing.assert_array_equal(np.isnan(native.run(x[i : i + 1])), np.isnan(fb.run(x[i : i + 1])))


def test_the_aarch64_library_runs_the_network_exactly_under_emulation(
    exported, aarch64_build, aarch64_onnxruntime, qemu_aarch64, tmp_path
):
    """The ORT op library cross-built for aarch64 (native/cmake/aarch64-linux-gnu.cmake, the portable NEON path) runs
    the exported native network on onnxruntime's own aarch64 build, under qemu-user, through the C API
    (native/ort/gatekit_ort_run.cpp, 2 intra-op threads): batch 8, batch 1, and a batch with a NaN pixel give the
    features that the x86 library gives on x86 ONNX Runtime, NaN where they have NaN."""
    from gatekit.artifacts import load_inputs, open_artifact
    from gatekit.runtimes import load_artifact

    tmp, _ = exported
    art = open_artifact(tmp / "out" / "dynamic.onnx.json")
    x, _ = load_inputs(art.manifest, 8, str(tmp / "d.npz"))
    corrupt = x[:4].copy()
    corrupt[1, 2, 5, 7] = np.nan
    batches = {"batch8": x, "batch1": x[:1], "nan": corrupt}
    args = []
    for name, batch in batches.items():
        (tmp_path / f"{name}.in").write_bytes(np.ascontiguousarray(batch, np.float32).tobytes())
        args += [str(tmp_path / f"{name}.in"), ",".join(map(str, batch.shape)), str(tmp_path / f"{name}.out")]
    run = qemu_aarch64(
        aarch64_build / "gatekit_ort_run",
        str(aarch64_onnxruntime),
        str(aarch64_build / "libgatekit_ort_ops.so"),
        str(tmp / "out" / "dynamic.onnx"),
        "2",
        *args,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    lines = run.stdout.strip().splitlines()
    info = json.loads(lines[-1])  # the op library's build info, as it reports itself under emulation
    assert info["library"] == "gatekit_ort_ops" and info["arch"] == "aarch64" and info["isa_selected"] == "portable"
    shapes = [json.loads(line)["output"] for line in lines[:-1]]
    assert shapes == [[len(b), 128] for b in batches.values()]
    with load_artifact(art, ops="native", threads=2) as reference:
        assert reference.info.ops == "native op"
        for (name, batch), shape in zip(batches.items(), shapes):
            y = np.fromfile(tmp_path / f"{name}.out", np.float32).reshape(shape)
            want = reference.run(batch)
            np.testing.assert_array_equal(np.isnan(y), np.isnan(want), err_msg=name)
            ok = np.isfinite(want)
            err = float(np.abs(y[ok] - want[ok]).max() / np.abs(want[ok]).max())
            assert err <= 1e-5, f"{name}: relative error {err:.3g}"
    assert np.isnan(y[1]).all() and np.isfinite(y[[0, 2, 3]]).all()  # the NaN batch, last


def test_without_the_library_the_fallback_runs_and_is_recorded(exported, tmp_path):
    tmp, _ = exported
    env = dict(os.environ, PYTHONPATH=str(REPO), GATEKIT_OPS_DIR=str(tmp_path / "no-ops"))
    cmd = [
        sys.executable,
        "-m",
        "gatekit",
        "bench",
        str(tmp / "out" / "dynamic.onnx"),
        "--threads",
        "1",
        "--inputs",
        "4",
        "--min-runs",
        "10",
        "--min-seconds",
        "0.1",
        "--warmup-runs",
        "2",
        "--data-dir",
        str(tmp / "d.npz"),
        "--json",
        str(tmp_path / "r.jsonl"),
        "--quiet",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-1500:]
    (rec,) = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert rec["runtime"]["ops"] == "fallback" and rec["runtime"]["ops_library"] is None
    proc = subprocess.run(cmd[:-3] + ["--ops", "native"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("gatekit: error:") and "gatekit ops build" in proc.stderr


def test_bench_records_the_native_path(exported, tmp_path):
    tmp, _ = exported
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gatekit",
            "bench",
            str(tmp / "out" / "dynamic.xml"),
            "--threads",
            "1",
            "--inputs",
            "4",
            "--min-runs",
            "10",
            "--min-seconds",
            "0.1",
            "--warmup-runs",
            "2",
            "--data-dir",
            str(tmp / "d.npz"),
            "--json",
            str(tmp_path / "r.jsonl"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-1500:]
    (rec,) = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert rec["runtime"]["ops"] == "native op" and rec["runtime"]["ops_library"].endswith("libgatekit_ov_ops.so")
    assert rec["manifest"]["native_op"]["op"] == "gatekit.GatedBlockWithGate" and rec["per_input"]
    assert "gatekit.GatedBlockWithGateAndShortcut" in rec["manifest"]["native_op"]["ops"]


def test_torch_reference_rebuilds_the_native_module(exported):
    from gatekit.artifacts import load_inputs, open_artifact
    from gatekit.runtimes import load_artifact

    tmp, _ = exported
    art = open_artifact(tmp / "out" / "dynamic.onnx.json")
    x, _ = load_inputs(art.manifest, 4, str(tmp / "d.npz"))
    with load_artifact(art, "torch") as ref, load_artifact(art, threads=1) as ort:
        np.testing.assert_allclose(ref.run(x), ort.run(x), rtol=1e-4, atol=1e-4)


def test_gate_in_standard_ops_is_kept_as_an_option(exported, tmp_path):
    """--native-gate graph: the earlier form (the gate in standard ops feeding gatekit.GatedBlock its mask),
    verified like the default and equal to it on the same inputs."""
    import onnx

    from gatekit.artifacts import load_inputs, open_artifact
    from gatekit.export.sweep import export_all
    from gatekit.runtimes import load_artifact

    tmp, _ = exported
    (m,), _ = export_all(
        tmp / "m.safetensors",
        tmp_path,
        graphs=["dynamic"],
        formats=["onnx"],
        strict=True,
        verify_images=32,
        calib=96,
        threads=1,
        dynamic_batch=True,
        record_inputs=0,
        native_gate="graph",
    )
    assert m["native_op"]["op"] == "gatekit.GatedBlock" and m["native_op"]["gate"] == "graph"
    assert max(m["verification"]["relative_error"].values()) < 1e-4
    ops = [n.op_type for n in onnx.load(str(tmp_path / "dynamic.onnx")).graph.node]
    assert ops.count("GatedBlock") == 8 and "GatedBlockWithGate" not in ops and "GreaterOrEqual" in ops
    x, _ = load_inputs(m, 8, str(tmp / "d.npz"))
    with (
        load_artifact(open_artifact(tmp_path / "dynamic.onnx.json"), threads=1) as split,
        load_artifact(open_artifact(tmp / "out" / "dynamic.onnx.json"), threads=1) as fused,
    ):
        np.testing.assert_allclose(split.run(x), fused.run(x), rtol=1e-5, atol=1e-5)


def test_shortcut_as_a_conv_node_is_kept_as_an_option(exported, tmp_path):
    """--native-shortcut graph: the earlier form (each projection shortcut a Conv node feeding the op its residual),
    verified like the default and equal to it on the same inputs, on both runtimes."""
    import onnx

    from gatekit.artifacts import load_inputs, open_artifact
    from gatekit.export.sweep import export_all
    from gatekit.runtimes import load_artifact

    tmp, _ = exported
    manifests, _ = export_all(
        tmp / "m.safetensors",
        tmp_path,
        graphs=["dynamic"],
        formats=["onnx", "openvino"],
        strict=True,
        verify_images=32,
        calib=96,
        threads=1,
        dynamic_batch=True,
        record_inputs=0,
        native_shortcut="graph",
    )
    for m in manifests:
        assert m["native_op"]["ops"] == ["gatekit.GatedBlockWithGate"] and m["native_op"]["shortcut"] == "graph"
        assert max(m["verification"]["relative_error"].values()) < 1e-4
    ops = [n.op_type for n in onnx.load(str(tmp_path / "dynamic.onnx")).graph.node]
    assert ops.count("GatedBlockWithGate") == 8 and ops.count("Conv") == 4
    x, _ = load_inputs(manifests[0], 8, str(tmp / "d.npz"))
    for fmt in ("onnx", "openvino"):
        with (
            load_artifact(open_artifact(tmp_path / f"dynamic.{fmt}.json"), threads=2) as conv,
            load_artifact(open_artifact(tmp / "out" / f"dynamic.{fmt}.json"), threads=2) as fused,
        ):
            np.testing.assert_allclose(conv.run(x), fused.run(x), rtol=1e-5, atol=1e-5)


def test_openvino_convolutions_feeding_the_op_keep_jit_reorders(exported):
    """The stem feeds the op, which the CPU plugin runs on NCHW: the IR asks for oneDNN's direct convolution
    (channel-blocked output, a jit reorder to NCHW) rather than the channels-last one, whose output took the
    plugin's generic reorder (slower than the stem itself at 32 px); an ONNX file loaded with the extension
    (the LUT's networks) gets the same request."""
    import openvino as ov

    from gatekit import native_ops
    from gatekit.artifacts import load_inputs
    from gatekit.runtimes.openvino_layout import with_blocked_feeders

    tmp, manifests = exported
    m = manifests["openvino"]
    record = m["runtime"]["primitives_priority"]
    assert record["nodes"] == ["/stem/Conv/WithoutBiases"] and record["value"].startswith("cpu:jit_")
    assert "primitives_priority" not in m["native_op"]["fallback_runtime"]  # the fallback has no op to feed
    core = ov.Core()
    core.add_extension(str(native_ops.library_for("openvino")))
    x, _ = load_inputs(m, 1, str(tmp / "d.npz"))

    def executed(model) -> list[tuple[str, str]]:
        compiled = core.compile_model(
            model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1, "PERF_COUNT": True}
        )
        request = compiled.create_infer_request()
        request.infer([x])
        return [(p.node_type, p.exec_type) for p in request.profiling_info if p.real_time.total_seconds() > 0]

    onnx_model = core.read_model(str(tmp / "out" / "dynamic.onnx"))
    assert any(e.startswith("brgconv") for t, e in executed(onnx_model) if t == "Convolution")  # the plugin's own pick
    for model in (core.read_model(str(tmp / "out" / "dynamic.xml")), with_blocked_feeders(core, onnx_model)):
        ran = executed(model)
        convs = [e for t, e in ran if t == "Convolution"]
        assert convs and all(e.startswith("jit_") for e in convs), ran
        assert all("jit" in e for t, e in ran if t == "Reorder"), ran
