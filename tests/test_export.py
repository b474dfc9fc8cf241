"""Export round trips through ONNX Runtime and OpenVINO on small models with forced gates."""

import numpy as np
import onnx
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from gatekit.checkpoint import save_model
from gatekit.errors import GatekitError
from gatekit.export import exporter
from gatekit.export.exporter import ExportOptions, Prepared, export
from gatekit.export.graphs import build_graph
from gatekit.models import GatedResNet, ModelConfig
from gatekit.models.channels import select_channels


def _randomize_bns(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(n, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=g))


def force_gates(model, mode):
    """always-on, always-off, or data-dependent (random weights with a bias that splits the channels)."""
    for block in model.blocks:
        gate = block.gate
        if mode == "data":
            continue
        gate.bn.weight.data.zero_()
        gate.bn.bias.data.fill_(1.0)  # hidden = 1 for every input
        gate.fc2.weight.data.fill_(1.0 if mode == "on" else -1.0)


@pytest.fixture
def tiny_ckpt(tmp_path):
    def make(mode, group=1, calibration_covers_test=True):
        """calibration_covers_test: the test images are the training images, so a channel that is on
        for a verification image was on during calibration (hybrid is then exact by construction)."""
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        npz = tmp_path / f"tiny-{calibration_covers_test}.npz"
        if not npz.exists():
            x = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
            y = rng.integers(0, 4, 64, dtype=np.uint8)
            x_test = x if calibration_covers_test else rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
            np.savez(npz, x_train=x, y_train=y, x_test=x_test, y_test=y)
        model = GatedResNet(ModelConfig(width=0.25, gate_group=group)).eval()
        _randomize_bns(model)
        force_gates(model, mode)
        path = tmp_path / f"{mode}-g{group}-{calibration_covers_test}.safetensors"
        save_model(
            path,
            model,
            {"train_config": {"dataset": "npz", "data_dir": str(npz), "method": "vicreg-dual", "budget": 0.3}},
        )
        return path, model

    return make


def opts(graph, fmt, **kw):
    base = dict(
        graph=graph, fmt=fmt, calib=64, verify_images=32, knn_check=False, round_to=1, threads=1, dynamic_min_size=0
    )
    base.update(kw)
    return ExportOptions(**base)


@pytest.mark.parametrize("mode", ["on", "off", "data"])
@pytest.mark.parametrize("graph", ["dense", "static", "hybrid", "dynamic"])
def test_onnx_round_trip(tiny_ckpt, tmp_path, mode, graph):
    ckpt, model = tiny_ckpt(mode)
    m = export(ckpt, tmp_path / "out", opts(graph, "onnx"), progress=False)
    onnx_file = tmp_path / "out" / m["files"]["onnx"]
    assert onnx_file.is_file() and (tmp_path / "out" / f"{graph}.onnx.json").is_file()
    onnx.checker.check_model(onnx.load(str(onnx_file)), full_check=True)
    assert max(m["verification"]["relative_error"].values()) <= 1e-4
    full = [b.planes for b in model.blocks]
    if graph in ("static", "hybrid"):
        expected = {"on": full, "off": [1] * len(full)}.get(mode)
        if expected:
            assert m["widths"] == expected
        assert m["macs"]["mean"] == pytest.approx(m["macs"]["flop_counter_macs"], rel=0.01)
    if graph == "dynamic" and mode == "off":
        assert m["macs"]["mean"] < 0.1 * m["macs"]["dense"]
    if graph == "dense":
        assert m["macs"]["mean"] == m["macs"]["flop_counter_macs"] == m["macs"]["dense"]


@pytest.mark.parametrize("graph", ["dense", "static", "hybrid", "dynamic"])
def test_openvino_ir_loads_and_matches(tiny_ckpt, tmp_path, graph):
    ckpt, _ = tiny_ckpt("data")
    m = export(ckpt, tmp_path / "ov", opts(graph, "openvino"), progress=False)
    assert (tmp_path / "ov" / m["files"]["xml"]).is_file() and (tmp_path / "ov" / m["files"]["bin"]).is_file()
    assert m["runtime"]["precision"] == "fp32"
    assert max(m["verification"]["relative_error"].values()) <= 1e-4


def test_dynamic_graph_matches_gated_path_at_batch_1_and_8(tiny_ckpt, tmp_path):
    ckpt, model = tiny_ckpt("data")
    m = export(ckpt, tmp_path / "dyn", opts("dynamic", "onnx", dynamic_batch=True), progress=False)
    assert set(m["verification"]["relative_error"]) == {"batch1", "batch8"}
    assert m["macs"]["p90"] >= m["macs"]["p50"]
    per_input = m["per_input"]
    assert per_input["first"] == len(per_input["macs"]) == 64
    # the first test image's MACs from its own masks: stem + gates + each block at its active width
    from gatekit.models import cost_model

    x = np.load(str(ckpt.parent / "tiny-True.npz"))["x_test"][:1].astype(np.float32).transpose(0, 3, 1, 2) / 255
    mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2470, 0.2435, 0.2616])
    x = torch.from_numpy(((x - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32))
    with torch.inference_mode():
        active = [int(mk.sum()) for mk in model(x, "gated").masks]
    assert per_input["macs"][0] == cost_model(model.cfg).gated_macs(active)


def test_dynamic_graph_can_skip_only_in_large_blocks(tiny_ckpt, tmp_path):
    """Blocks with small outputs run whole convs and zero the inactive channels: still exact, and the
    manifest's MACs count those blocks whole."""
    ckpt, model = tiny_ckpt("data")
    every = export(
        ckpt, tmp_path / "all", opts("dynamic", "onnx", dynamic_form="conv", dynamic_min_size=0), progress=False
    )
    m = export(
        ckpt, tmp_path / "large", opts("dynamic", "onnx", dynamic_form="conv", dynamic_min_size=17), progress=False
    )
    assert max(m["verification"]["relative_error"].values()) <= 1e-4
    # CIFAR stem, padding 2: outputs 34, 34, 17, 17, 9, 9, 5, 5 pixels a side
    assert m["dynamic_skipping"] == {"min_size": 17, "blocks": [True] * 4 + [False] * 4}
    assert every["dynamic_skipping"]["blocks"] == [True] * 8
    active = np.array(m["per_input"]["active_widths"])
    full = [b.planes for b in model.blocks]
    from gatekit.models import cost_model

    executed = [cost_model(model.cfg).gated_macs(list(a[:4]) + full[4:]) for a in active[:5]]
    assert m["per_input"]["macs"][:5] == executed
    assert m["macs"]["mean"] > every["macs"]["mean"]
    net, spec = build_graph(model, "dynamic", dynamic_min_size=17)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(net(x), model(x, "gated").features, atol=1e-5)


def test_data_dependent_gates_really_skip_channels_in_the_dynamic_graph(tiny_ckpt):
    _, model = tiny_ckpt("data")
    net, _ = build_graph(model, "dynamic")
    x = torch.randn(1, 3, 32, 32)
    masks = model(x, "gated").masks
    assert any(0 < float(mk.sum()) < mk.numel() for mk in masks)
    with torch.inference_mode():
        assert torch.allclose(net(x), model(x, "gated").features, atol=1e-5)
        assert not torch.allclose(net(x), model(x, "dense").features, atol=1e-3)


def test_a_corrupted_weight_is_refused_and_nothing_is_written(tiny_ckpt, tmp_path, monkeypatch):
    ckpt, _ = tiny_ckpt("data")
    real_export = exporter._export_onnx

    def corrupting_export(prep, path, fmt):
        real_export(prep, path, fmt)
        model = onnx.load(str(path))
        init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
        arr = onnx.numpy_helper.to_array(init).copy()
        arr.flat[0] += 10.0
        init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
        onnx.save(model, str(path))

    monkeypatch.setattr(exporter, "_export_onnx", corrupting_export)
    out = tmp_path / "bad"
    with pytest.raises(GatekitError, match=r"verification failed .* relative error"):
        export(ckpt, out, opts("dense", "onnx"), progress=False)
    assert not list(out.glob("*.onnx")) and not list(out.glob("*.json"))


def test_hybrid_refuses_when_held_out_images_use_removed_channels(tiny_ckpt, tmp_path):
    ckpt, _ = tiny_ckpt("data", calibration_covers_test=False)
    with pytest.raises(GatekitError, match=r"held-out images turn on channels .* raise --calib"):
        export(ckpt, tmp_path / "h", opts("hybrid", "onnx", calib=8), progress=False)


def test_gate_group_16_gives_multiples_of_16_without_rounding(tiny_ckpt, tmp_path):
    ckpt, _ = tiny_ckpt("data", group=16)
    m = export(ckpt, tmp_path / "g16", opts("static", "onnx", round_to=1), progress=False)
    assert all(w % 16 == 0 for w in m["widths"])


def test_select_channels_rounds_up_by_usage():
    usage = torch.tensor([10, 0, 3, 0, 7, 1, 0, 0] * 2, dtype=torch.float32)
    kept = select_channels(usage, 10, min_usage=0.0, round_to=8)
    assert len(kept) == 8  # 6 used channels rounded up to 8
    assert set(torch.nonzero(usage).flatten().tolist()) <= set(kept.tolist())
    assert select_channels(usage, 10, min_usage=0.5, round_to=1).tolist() == [0, 4, 8, 12]
    assert len(select_channels(torch.zeros(16), 10, round_to=1)) == 1


def test_static_flops_match_an_independent_count(tiny_ckpt):
    _, model = tiny_ckpt("data")
    channels = [torch.arange(0, b.planes, 2) for b in model.blocks]
    net, spec = build_graph(model, "static", channels)
    with FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, 32, 32))
    from gatekit.models import cost_model

    assert counter.get_total_flops() // 2 == cost_model(model.cfg).static_macs(spec.widths)


def test_unknown_graph_and_format_are_clear_errors(tiny_ckpt, tmp_path):
    ckpt, _ = tiny_ckpt("on")
    with pytest.raises(GatekitError, match="unknown graph 'sparse'"):
        Prepared(ckpt, opts("sparse", "onnx"), progress=False)
    with pytest.raises(GatekitError, match="unknown format 'tflite'"):
        export(ckpt, tmp_path / "x", opts("dense", "tflite"), progress=False)


def test_export_cli_errors_are_one_line(tiny_ckpt, tmp_path):
    import os
    import subprocess
    import sys

    ckpt, _ = tiny_ckpt("on")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo)
    for args, pattern in [
        ([str(ckpt), "--graph", "sparse", "--out", str(tmp_path / "o")], "unknown graph 'sparse'"),
        ([str(ckpt), "--format", "tflite", "--out", str(tmp_path / "o")], "unknown format 'tflite'"),
        ([str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "o")], "no checkpoint at"),
    ]:
        proc = subprocess.run(
            [sys.executable, "-m", "gatekit", "export", *args], capture_output=True, text=True, env=env
        )
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and pattern in proc.stderr, proc.stderr
