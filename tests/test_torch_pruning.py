"""The Torch-Pruning baseline: which channels it removes, the exported graph against the pruned PyTorch network,
and a fine-tune that keeps the removed channels removed."""

import copy
import json

import numpy as np
import pytest
import torch

pytest.importorskip("torch_pruning")

from gatekit.checkpoint import load_model, save_model  # noqa: E402
from gatekit.cli import main  # noqa: E402
from gatekit.models import GatedResNet, ModelConfig  # noqa: E402
from gatekit.train.torch_pruning import kept_width, prune  # noqa: E402
from tests.conftest import REPO  # noqa: E402

VICREG = REPO / "benchmarks" / "train_cifar10" / "checkpoints" / "vicreg.safetensors"


def physically_pruned(model, channels):
    """The dense path with the removed channels cut out of conv1, BN1 and conv2 (built here, not by gatekit)."""
    net = copy.deepcopy(model).eval()
    for b, ch in zip(net.blocks, channels):
        idx = torch.tensor(ch)
        conv1 = torch.nn.Conv2d(b.conv1.in_channels, len(ch), 3, b.stride, 1, bias=False)
        conv1.weight.data = b.conv1.weight.data[idx].clone()
        bn = torch.nn.BatchNorm2d(len(ch)).eval()
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(bn, name).data = getattr(b.bn1.dense, name).data[idx].clone()
        conv2 = torch.nn.Conv2d(len(ch), b.planes, 3, 1, 1, bias=False)
        conv2.weight.data = b.conv2.weight.data[:, idx].clone()
        b.conv1, b.bn1.dense, b.conv2 = conv1, bn, conv2
    return net


def test_kept_widths_round_up_like_gatekit():
    assert kept_width(128, 0.5, 16) == 64
    assert kept_width(128, 0.4, 16) == 80  # 76.8 rounds up
    assert kept_width(16, 0.9, 16) == 16  # never below one rounding step
    assert kept_width(64, 0.0, 16) == 64


def test_prunes_the_lowest_group_magnitude_channels_of_a_trained_encoder():
    model, _ = load_model(VICREG)
    out, record = prune(model, 0.5)
    assert record["tool"] == "torch-pruning" and record["widths"] == [16, 16, 16, 16, 32, 32, 64, 64]
    for b, ch in zip(model.blocks, record["channels"]):  # Torch-Pruning's group L2 importance, computed here
        imp = b.conv1.weight.pow(2).sum((1, 2, 3)) + b.bn1.dense.weight.pow(2) + b.conv2.weight.pow(2).sum((0, 2, 3))
        assert sorted(torch.argsort(imp, descending=True)[: len(ch)].tolist()) == ch
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        want = physically_pruned(model, record["channels"])(x, "dense").features
        got = out(x, "dense").features
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_pruned_checkpoint_exports_only_its_channels_and_matches_the_pruned_network(tmp_path, cifar_dir, capsys):
    import onnxruntime as ort

    ckpt = tmp_path / "tp.safetensors"
    with pytest.raises(SystemExit) as e:
        main(["prune", str(VICREG), "--ratio", "0.65", "--out", str(ckpt), "--json", str(tmp_path / "p.json")])
    assert e.value.code == 0
    record = json.loads((tmp_path / "p.json").read_text())
    with pytest.raises(SystemExit) as e:
        main(
            [
                "export",
                str(ckpt),
                "--graph",
                "dense",
                "--format",
                "onnx",
                "--data-dir",
                str(cifar_dir),
                "--out",
                str(tmp_path / "art"),
            ]
        )
    assert e.value.code == 0, capsys.readouterr().err
    manifest = json.loads((tmp_path / "art" / "dense.onnx.json").read_text())
    assert manifest["widths"] == record["widths"] and manifest["pruned"]["ratio"] == 0.65
    assert manifest["macs"]["ratio_to_dense"] < 0.65
    model, _ = load_model(VICREG)
    x = np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = physically_pruned(model, record["channels"])(torch.from_numpy(x), "dense").features.numpy()
    sess = ort.InferenceSession(str(tmp_path / "art" / "dense.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # a pruned encoder has no trained gates: only its dense graph exports
    with pytest.raises(SystemExit) as e:
        main(["export", str(ckpt), "--graph", "static", "--format", "onnx", "--out", str(tmp_path / "art2")])
    assert e.value.code == 2 and "pruned dense encoder" in capsys.readouterr().err


def test_fine_tune_keeps_removed_channels_at_zero_and_records_itself(tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "tiny.npz"
    x = rng.integers(0, 256, (256, 32, 32, 3), dtype=np.uint8)
    np.savez(
        npz,
        x_train=x,
        y_train=rng.integers(0, 4, 256, dtype=np.uint8),
        x_test=x[:64],
        y_test=rng.integers(0, 4, 64, dtype=np.uint8),
    )
    torch.manual_seed(0)
    model = GatedResNet(ModelConfig(width=0.25)).eval()
    src = tmp_path / "dense.safetensors"
    save_model(
        src, model, {"train_config": {"dataset": "npz", "data_dir": str(npz), "method": "vicreg"}, "method": "vicreg"}
    )
    pruned = tmp_path / "pruned.safetensors"
    with pytest.raises(SystemExit) as e:
        main(["prune", str(src), "--ratio", "0.5", "--out", str(pruned)])
    assert e.value.code == 0
    with pytest.raises(SystemExit) as e:
        main(
            [
                "train",
                "--init",
                str(pruned),
                "--dataset",
                "npz",
                "--data-dir",
                str(npz),
                "--method",
                "vicreg",
                "--epochs",
                "1",
                "--batch-size",
                "64",
                "--proj-dim",
                "64",
                "--threads",
                "1",
                "--device",
                "cpu",
                "--quiet",
                "--out",
                str(tmp_path / "ft"),
            ]
        )
    assert e.value.code == 0
    before, _ = load_model(pruned)
    after, meta = load_model(tmp_path / "ft")
    record = meta["pruned"]
    assert record["fine_tune"]["epochs"] == 1 and record["widths"] == [16, 16, 16, 16, 32, 32, 64, 64]
    moved = 0.0
    for b0, b1, ch in zip(before.blocks, after.blocks, record["channels"]):
        removed = torch.ones(b1.planes, dtype=torch.bool)
        removed[ch] = False
        assert b1.conv1.weight[removed].abs().max().item() == 0 if removed.any() else True
        assert b1.conv2.weight[:, removed].abs().max().item() == 0 if removed.any() else True
        moved = max(moved, (b1.conv1.weight - b0.conv1.weight).abs().max().item())
    assert moved > 0  # the kept channels did train
