"""Training leaves nothing behind: temporary files of atomic writes are removed when a run starts,
metrics.jsonl holds each epoch once and agrees with checkpoint.pt after --resume, and a new run never
goes into a directory holding another unless --resume or --overwrite; a run SIGKILLed at a random point
and resumed ends with the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from gatekit.atomic import stale_temps
from gatekit.checkpoint import load_state
from gatekit.errors import GatekitError
from gatekit.train.config import TrainConfig
from gatekit.train.trainer import train

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def tiny_npz(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 256, (256, 32, 32, 3), dtype=np.uint8),
        y_train=rng.integers(0, 10, 256, dtype=np.uint8),
        x_test=rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8),
        y_test=rng.integers(0, 10, 64, dtype=np.uint8),
    )
    return path


def _cfg(npz: Path, **kw) -> TrainConfig:
    base = dict(
        dataset="npz",
        data_dir=str(npz),
        width=0.125,
        batch_size=32,
        epochs=2,
        warmup_epochs=1,
        proj_hidden=64,
        proj_out=64,
        threads=1,
        seed=3,
    )
    return TrainConfig(**(base | kw))


def _epochs(run: Path) -> list[int]:
    return [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def _same_weights(a: Path, b: Path) -> None:
    sa, sb = load_state(a), load_state(b)
    assert sa["epoch"] == sb["epoch"]
    assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_removes_temps_and_trims_metrics_to_the_checkpoint(tiny_npz, tmp_path):
    run = tmp_path / "run"
    train(_cfg(tiny_npz, epochs=1), run, progress=False)
    one = (run / "metrics.jsonl").read_text()
    # what a kill leaves: a half-written checkpoint, a metrics line of an epoch never checkpointed, a cut line;
    # and an epoch logged twice (a resume before this fix)
    (run / ".checkpoint.pt.a1b2c3d4.tmp").write_bytes(b"\0" * 4096)
    (run / ".model.safetensors.zz_9yx8w.tmp").write_bytes(b"partial")
    (run / "metrics.jsonl").write_text(one + one + one.replace('"epoch": 1', '"epoch": 2') + '{"loss": 1.0, "ep')
    (run / "notes.tmp").write_text("not ours")  # a user's file of the same suffix stays
    train(_cfg(tiny_npz, epochs=2), run, resume=True, progress=False)
    assert stale_temps(run) == []
    assert (run / "notes.tmp").is_file()
    assert _epochs(run) == [1, 2]
    state = load_state(run)
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1]) == json.loads(state["metrics"])
    # a resume with nothing left to train keeps the log as the checkpoint has it
    train(_cfg(tiny_npz, epochs=2), run, resume=True, progress=False)
    assert _epochs(run) == [1, 2]


def test_a_missing_metrics_line_comes_back_from_the_checkpoint(tiny_npz, tmp_path):
    run = tmp_path / "run"
    train(_cfg(tiny_npz, epochs=1), run, progress=False)
    (run / "metrics.jsonl").unlink()  # killed after checkpoint.pt, before the line was appended (or removed)
    train(_cfg(tiny_npz, epochs=2), run, resume=True, progress=False)
    assert _epochs(run) == [1, 2]


def test_a_new_run_into_an_old_directory_is_refused_unless_overwrite(tiny_npz, tmp_path):
    run = tmp_path / "run"
    train(_cfg(tiny_npz, epochs=1), run, progress=False)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(GatekitError, match="already holds a run .*--resume.*--overwrite"):
        train(_cfg(tiny_npz, epochs=1, seed=4), run, progress=False)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    for name in ("metrics.jsonl", "checkpoint.pt", "model.safetensors"):  # any one of them is a run
        other = tmp_path / f"only-{name}"
        other.mkdir()
        (other / name).write_text("x")
        with pytest.raises(GatekitError, match=name):
            train(_cfg(tiny_npz, epochs=1), other, progress=False)
    train(_cfg(tiny_npz, epochs=1, seed=4), run, overwrite=True, progress=False)
    assert _epochs(run) == [1]  # a new log, not appended to the old one
    assert load_state(run)["epoch"] == 1 and json.loads(load_state(run)["config"])["seed"] == 4


def _train_argv(npz: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gatekit",
        "train",
        "--dataset",
        "npz",
        "--data-dir",
        str(npz),
        "--width",
        "0.125",
        "--batch-size",
        "32",
        "--epochs",
        "3",
        "--warmup-epochs",
        "1",
        "--proj-dim",
        "64",
        "--threads",
        "1",
        "--seed",
        "3",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        str(out),
        *extra,
    ]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))


def test_sigkill_at_a_random_point_then_resume_matches_an_uninterrupted_run(tiny_npz, tmp_path):
    """Two kills at random points of a 3-epoch run (seeded by time; the seed is in the failure message)."""
    seed = int(os.environ.get("GATEKIT_KILL_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    straight = tmp_path / "straight"
    t0 = time.perf_counter()
    subprocess.run(_train_argv(tiny_npz, straight), check=True, capture_output=True, env=_env(), cwd=REPO)
    total = time.perf_counter() - t0
    for k in range(2):
        run = tmp_path / f"killed{k}"
        at = rng.uniform(0.2, 1.0) * total
        proc = subprocess.Popen(
            _train_argv(tiny_npz, run), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), cwd=REPO
        )
        try:
            proc.wait(timeout=at)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        where = f"seed {seed}, kill {k} at {at:.2f} s of {total:.2f} s"
        again = ["--resume"] if (run / "checkpoint.pt").is_file() else ["--overwrite"]  # killed before epoch 1 ended
        done = subprocess.run(_train_argv(tiny_npz, run, *again), capture_output=True, text=True, env=_env(), cwd=REPO)
        assert done.returncode == 0, (where, again, done.stderr[-2000:])
        assert stale_temps(run) == [], where
        assert _epochs(run) == [1, 2, 3], where
        assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1]) == json.loads(
            load_state(run)["metrics"]
        )
        _same_weights(straight, run)
