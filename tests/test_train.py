"""Training loop: a short real run, exact resume, a 2-process gloo run, and clear errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from gatekit.checkpoint import load_model, load_state
from gatekit.errors import GatekitError
from gatekit.train.config import TrainConfig, build_config, list_recipes
from gatekit.train.trainer import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def tiny_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 256, (96, 32, 32, 3), dtype=np.uint8),
        y_train=rng.integers(0, 10, 96, dtype=np.uint8),
        x_test=rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8),
        y_test=rng.integers(0, 10, 32, dtype=np.uint8),
    )
    return path


def tiny_config(npz, **kw) -> TrainConfig:
    base = dict(
        dataset="npz",
        data_dir=str(npz),
        width=0.125,
        batch_size=16,
        epochs=2,
        warmup_epochs=1,
        proj_hidden=64,
        proj_out=64,
        threads=2,
        seed=3,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_resume_continues_exactly(tiny_npz, tmp_path):
    straight = tmp_path / "straight"
    train(tiny_config(tiny_npz, epochs=2), straight, progress=False)
    split = tmp_path / "split"
    train(tiny_config(tiny_npz, epochs=1), split, progress=False)
    assert load_state(split)["epoch"] == 1
    train(tiny_config(tiny_npz, epochs=2), split, resume=True, progress=False)
    a, b = load_state(straight), load_state(split)
    assert a["epoch"] == b["epoch"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    wa, wb = load_file(straight / "model.safetensors"), load_file(split / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    lines = [json.loads(x) for x in (split / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]


def test_training_moves_the_gated_flops_towards_the_budget(tiny_npz, tmp_path):
    cfg = tiny_config(tiny_npz, epochs=4, budget=0.3, lr=0.3)
    result = train(cfg, tmp_path / "run", progress=False)
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["flops_kept"] < records[0]["flops_kept"]
    assert result.summary["images_per_s"] > 0
    model, meta = load_model(tmp_path / "run")
    assert meta["train_config"]["budget"] == 0.3 and meta["epoch"] == 4


def test_resume_refuses_changed_settings(tiny_npz, tmp_path):
    train(tiny_config(tiny_npz, epochs=1), tmp_path / "r", progress=False)
    with pytest.raises(GatekitError, match="settings differ.*budget"):
        train(tiny_config(tiny_npz, epochs=2, budget=0.5), tmp_path / "r", resume=True, progress=False)


def test_corrupt_training_state_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(GatekitError, match="corrupt training state"):
        load_state(tmp_path)


def test_recipes_load_and_flags_override():
    assert {"cifar10", "cifar100", "stl10", "imagenet100", "cpu-small"} <= set(list_recipes())
    cfg = build_config("cpu-small", {"epochs": 3, "method": None})
    assert cfg.width == 0.25 and cfg.budget == 0.3 and cfg.epochs == 3 and cfg.method == "vicreg-dual"
    assert build_config("cifar100", {}).blur_p == [0.0, 0.2]
    stl = build_config("stl10", {}).model_config()
    assert stl.stem == "imagenet" and stl.input_size == 96
    with pytest.raises(GatekitError, match="recipe 'nope' not found"):
        build_config("nope", {})


def test_two_process_gloo_run(tiny_npz, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29517",
        "-m",
        "gatekit",
        "train",
        "--dataset",
        "npz",
        "--data-dir",
        str(tiny_npz),
        "--width",
        "0.125",
        "--batch-size",
        "16",
        "--epochs",
        "1",
        "--proj-dim",
        "64",
        "--threads",
        "1",
        "--quiet",
        "--out",
        str(out),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert record["images_seen"] == (96 // 32) * 32  # two processes of 16 per step
    model, meta = load_model(out)
    assert meta["epoch"] == 1


def test_local_views_train(tiny_npz, tmp_path):
    cfg = tiny_config(tiny_npz, epochs=1, local_views=2, min_scale=0.3)
    assert cfg.local_crop_size() == 18
    result = train(cfg, tmp_path / "tan", progress=False)
    assert result.summary["loss"] > 0
    assert build_config("cpu-small-tan", {}).local_views == 4
