"""The command line: one-line errors with a non-zero exit, --help with examples, a real tiny run."""

import json
import os
import resource
import subprocess
import sys

import pytest
from click.testing import CliRunner

from gatekit.cli import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_gatekit(*args, env_extra=None, timeout=300):
    env = dict(os.environ, PYTHONPATH=REPO, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "gatekit", *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO
    )


def assert_one_line_error(proc, pattern):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [x for x in proc.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1, proc.stderr
    assert pattern in lines[0], lines[0]


@pytest.mark.parametrize("command", [[], ["train"], ["eval"], ["export"], ["bench"], ["pick"]])
def test_every_command_has_help_with_an_example(command):
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output


def test_missing_dataset_is_a_one_line_error(tmp_path):
    proc = run_gatekit(
        "train",
        "--dataset",
        "cifar10",
        "--data-dir",
        str(tmp_path),
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
        env_extra={"GATEKIT_OFFLINE": "1"},
    )
    assert_one_line_error(proc, "cifar10")
    assert str(tmp_path) in proc.stderr


def test_unknown_architecture_is_a_one_line_error(tmp_path):
    proc = run_gatekit("train", "--arch", "resnet50", "--out", str(tmp_path / "run"))
    assert_one_line_error(proc, "unknown architecture 'resnet50'")


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    proc = run_gatekit("eval", str(tmp_path))
    assert_one_line_error(proc, "corrupt checkpoint")


def test_missing_checkpoint_is_a_one_line_error(tmp_path):
    proc = run_gatekit("eval", str(tmp_path / "nothing"))
    assert_one_line_error(proc, "no checkpoint at")


def test_unknown_recipe_is_a_one_line_error(tmp_path):
    proc = run_gatekit("train", "--recipe", "imagenet-1k", "--out", str(tmp_path / "run"))
    assert_one_line_error(proc, "recipe 'imagenet-1k' not found")


def test_cli_starts_without_torch():
    code = "import sys; sys.modules['torch'] = None; from gatekit.cli import main; main(['--help'])"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO)
    )
    assert proc.returncode == 0, proc.stderr
    assert "train" in proc.stdout


@pytest.mark.benchmark
def test_tiny_real_run_trains_and_evaluates_in_under_a_minute(cifar_dir, tmp_path):
    """Training takes under a minute of two cores: at most 120 s of CPU time on two torch threads. CPU time, not
    wall time: a busy host's other work stretches the wall time (85 s at load average 8 on 2 cores) and hardly
    the CPU time the run itself uses (45-56 s there)."""
    out = tmp_path / "tiny"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = run_gatekit(
        "train",
        "--dataset",
        "cifar10",
        "--data-dir",
        str(cifar_dir),
        "--arch",
        "resnet18",
        "--width",
        "0.125",
        "--budget",
        "0.3",
        "--epochs",
        "1",
        "--limit",
        "2000",
        "--out",
        str(out),
        "--json",
        str(out / "summary.json"),
        "--quiet",
        env_extra={"OMP_NUM_THREADS": "2"},
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["threads"] == 2 and cpu_s < 120, (summary["threads"], cpu_s)
    assert {"flops_kept", "loss", "images_per_s"} <= set(summary)
    assert (out / "model.safetensors").is_file() and (out / "checkpoint.pt").is_file()
    proc = run_gatekit(
        "eval",
        str(out),
        "--knn",
        "--data-dir",
        str(cifar_dir),
        "--limit-train",
        "5000",
        "--json",
        str(tmp_path / "eval.json"),
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "eval.json").read_text())
    for path in ("dense", "gated"):
        assert 0.1 < result["paths"][path]["knn20_cosine"] <= 1.0
    assert 0 < result["paths"]["gated"]["flops"]["flops_kept"] < 1
    assert (out / "channel_usage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
