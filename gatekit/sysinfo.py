"""A description of the machine a figure was measured on (torch-free: used on edge devices too)."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from gatekit import __version__


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") or line.startswith("Model"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_governor() -> str | None:
    try:
        return Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        return None


def git_sha(repo: str | os.PathLike | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=repo or Path(__file__).resolve().parent.parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions(names=("torch", "numpy", "kornia", "onnx", "onnxruntime", "openvino", "tensorrt")) -> dict:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def gpu_info() -> dict | None:
    """The NVIDIA GPU(s) `nvidia-smi` sees: {"name", "driver", "count", "names"}; None without nvidia-smi."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    rows = [[c.strip() for c in line.split(",")] for line in out.stdout.splitlines() if line.strip()]
    rows = [r for r in rows if len(r) >= 2 and r[0]]
    if out.returncode != 0 or not rows:
        return None
    return {"name": rows[0][0], "driver": rows[0][1], "count": len(rows), "names": [r[0] for r in rows]}


def machine_info() -> dict:
    from gatekit.jetson import jetson_info

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "governor": cpu_governor(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "gatekit": __version__,
        "git_sha": git_sha(),
        "packages": package_versions(),
        "gpu": gpu_info(),
        "jetson": jetson_info(),
    }
