"""The deploy side in a fresh virtual environment with gatekit's base install plus [ort,openvino]: no torch,
no safetensors, no kornia. On artifacts exported beforehand (with torch, here), it runs `gatekit bench`,
`gatekit profile`, `gatekit pick --results`, `gatekit pick --lut` planning from a recorded manifest, and
`gatekit report`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(os.environ.get("GATEKIT_SKIP_VENV_TESTS") == "1",
                                reason="GATEKIT_SKIP_VENV_TESTS=1: no fresh virtual environment")


@pytest.fixture(scope="module")
def deploy_venv(tmp_path_factory) -> Path:
    """A fresh venv: `pip install REPO[ort,openvino]` (not editable). Installs from PyPI or pip's cache."""
    venv = tmp_path_factory.mktemp("deploy") / "venv"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    proc = subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           f"{REPO}[ort,openvino]"], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        if any("Could not find a version" in line or "No matching distribution" in line or "connection" in line.lower()
               for line in tail):
            pytest.skip("no package index reachable for the fresh venv: " + " | ".join(tail))
        pytest.fail("pip install of the deploy side failed:\n" + "\n".join(tail))
    print(f"\nfresh deploy venv installed in {time.perf_counter() - started:.0f} s")
    return venv


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """static (onnx and openvino) and dense (onnx) graphs of a small real-structure checkpoint, with their manifests."""
    import torch

    from gatekit.checkpoint import save_model
    from gatekit.export.sweep import export_all
    from gatekit.models import GatedResNet, ModelConfig

    tmp = tmp_path_factory.mktemp("artifacts")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp / "d.npz", x_train=x, y_train=np.arange(64, dtype=np.uint8) % 10, x_test=x,
             y_test=np.arange(64, dtype=np.uint8) % 10)
    torch.manual_seed(0)
    model = GatedResNet(ModelConfig(width=0.125)).eval()
    save_model(tmp / "m.safetensors", model, {"train_config": {"dataset": "npz", "data_dir": str(tmp / "d.npz"),
                                                               "method": "vicreg-dual", "budget": 0.3}})
    export_all(tmp / "m.safetensors", tmp / "out", graphs=["dense", "static"], formats=["onnx", "openvino"], strict=True,
               verify_images=32, calib=64, knn_train=64, threads=1)
    return tmp


def _gatekit(venv: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(venv / "bin/gatekit"), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600)


def test_deploy_commands_run_without_torch(deploy_venv, exported, tmp_path):
    started = time.perf_counter()
    py = deploy_venv / "bin/python"
    probe = subprocess.run([str(py), "-c", "import importlib.util as u; print([m for m in ('torch', 'safetensors', 'kornia') "
                            "if u.find_spec(m)])"], capture_output=True, text=True, cwd=tmp_path)
    assert probe.returncode == 0 and probe.stdout.strip() == "[]", probe.stdout + probe.stderr
    out = exported / "out"
    data = exported / "d.npz"
    fast = ["--min-runs", "30", "--min-seconds", "0.2", "--warmup-runs", "3"]

    p = _gatekit(deploy_venv, "bench", out / "dense.onnx", out / "static.onnx", out / "static.xml", "--threads", "1",
                 "--inputs", "8", *fast, "--data-dir", data, "--json", tmp_path / "b.jsonl", "--quiet", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-1500:]
    records = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert {(r["manifest"]["graph"], r["runtime"]["name"]) for r in records} == {("dense", "ort"), ("static", "ort"),
                                                                                 ("static", "openvino")}
    assert "torch" not in records[0]["machine"]["packages"]

    sha = records[0]["manifest"]["checkpoint_sha256"]
    (tmp_path / "eval.json").write_text(json.dumps({"checkpoint_sha256": sha, "paths": {
        "dense": {"knn20_cosine": 0.50}, "gated": {"knn20_cosine": 0.45}}}))
    p = _gatekit(deploy_venv, "pick", "--target-ms", "1000", "--results", tmp_path / "b.jsonl", "--accuracy",
                 tmp_path / "eval.json", "--runtime", "ort", "--json", tmp_path / "pick.json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-1500:]
    assert json.loads((tmp_path / "pick.json").read_text())["chosen"]["graph"] == "dense"  # the most accurate

    p = _gatekit(deploy_venv, "profile", "--runtime", "ort", "--width", "0.125", "--input", "32", "--threads", "1",
                 "--check", "2", "--min-runs", "20", "--min-seconds", "0.05", "--dataset", "npz", "--data-dir", data,
                 "--out", tmp_path / "lut.json", "--quiet", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-1500:]
    lut = json.loads((tmp_path / "lut.json").read_text())
    assert lut["runtime"]["name"] == "ort"

    p = _gatekit(deploy_venv, "pick", "--target-ms", "1000", "--lut", tmp_path / "lut.json", "--usage",
                 out / "static.onnx.json", "--json", tmp_path / "plan.json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-1500:]
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["format"] == "onnx" and len(plan["chosen"]["widths"]) == 8 and "gatekit export" in p.stdout

    p = _gatekit(deploy_venv, "report", tmp_path / "b.jsonl", "--out", tmp_path / "page.md", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-1500:]
    assert "| static |" in (tmp_path / "page.md").read_text()
    print(f"deploy commands in the fresh venv: {time.perf_counter() - started:.0f} s")
