"""The deploy side as a user installs it, in fresh virtual environments, on artifacts exported beforehand (with torch,
here). The package is built the way it ships: an sdist (`python -m build --sdist`), then a wheel from it (`pip wheel
--no-deps`) in a venv where openvino is installed, whose build compiles the ONNX Runtime op library and the OpenVINO
extension for that release into gatekit/_ops/ (once per session: pip keeps that wheel in its cache, so installing the
sdist again reuses it).

- `pip install 'gatekit[ort,openvino] @ file:///.../gatekit-<version>.tar.gz'`: no torch, no safetensors, no
  kornia; `gatekit bench`, `profile`, `pick --results`, `pick --lut` planning from a recorded manifest and `report`
  run; `gatekit ops status` lists the package's ORT library and OpenVINO extension and the kernel path this CPU
  runs; native dynamic graphs bench on the native op on both runtimes with an empty op cache.
- The wheel (platform-tagged, with the library, its build.json and the C++ sources) in a venv with no compiler on
  PATH runs a native dynamic graph, and `gatekit ops build` there says in one line why it cannot build.
- A source checkout with no op library anywhere: `gatekit bench` on a native dynamic graph runs the fallback and
  says in one line how to build the op; `gatekit pick` on that record says the same.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(
    os.environ.get("GATEKIT_SKIP_VENV_TESTS") == "1", reason="GATEKIT_SKIP_VENV_TESTS=1: no fresh virtual environment"
)

# the openvino release of this environment: the package's extension is built against it, and the deploy venv runs it
try:
    OPENVINO_PIN = f"openvino=={importlib.metadata.version('openvino')}"
except importlib.metadata.PackageNotFoundError:
    OPENVINO_PIN = "openvino"
FAST = ["--min-runs", "30", "--min-seconds", "0.2", "--warmup-runs", "3"]
NO_INDEX = ("Could not find a version", "No matching distribution", "connection", "Failed to establish")


def _run(cmd, what: str, timeout: int = 900, **kwargs) -> subprocess.CompletedProcess:
    """Runs a packaging command; skips when no package index is reachable, fails with its output's tail otherwise."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kwargs)
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-12:]
        if any(any(s.lower() in line.lower() for s in NO_INDEX) for line in tail):
            pytest.skip(f"no package index reachable for {what}: " + " | ".join(tail[-3:]))
        pytest.fail(f"{what} failed:\n" + "\n".join(tail))
    return proc


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "GATEKIT_OPS_DIR", "CXX")}
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", "2")
    env.update(extra)
    return env


def _new_venv(root: Path) -> Path:
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    return venv


@pytest.fixture(scope="session")
def package_dist(tmp_path_factory) -> dict:
    """The sdist of this checkout and the wheel pip builds from it (the session's one compile of the op library).

    pip keeps that wheel in its cache under the sdist's URL, and a named install of the sdist
    (`gatekit[ort] @ file:///.../gatekit-<version>.tar.gz`) takes it from there instead of compiling again (with
    pip's cache off it compiles again: slower, the same result). The sdist lies in a folder named by its sha256,
    so an sdist with other contents never meets this one's wheel."""
    root = tmp_path_factory.mktemp("dist")
    started = time.perf_counter()
    try:
        import build  # noqa: F401  (the test extra's `build`)
    except ImportError:
        pytest.fail("`python -m build` is missing: install gatekit's test extra (pip install -e .[test])")
    _run([sys.executable, "-m", "build", "--sdist", "--outdir", root / "sdist", REPO], "python -m build --sdist")
    (made,) = (root / "sdist").glob("gatekit-*.tar.gz")
    digest = hashlib.sha256(made.read_bytes()).hexdigest()[:16]
    sdist = root / digest / made.name
    sdist.parent.mkdir()
    made.rename(sdist)
    sdist_seconds = time.perf_counter() - started
    # the builder's venv has openvino, as a device's would that installed it first: the package build finds it in the
    # venv it installs into and compiles the OpenVINO extension against that release, beside the ORT library
    builder = _new_venv(root / "builder")
    _run(
        [builder / "bin/python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", OPENVINO_PIN],
        "pip install openvino",
        env=_clean_env(),
    )
    _run(
        [
            builder / "bin/python",
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--disable-pip-version-check",
            "-w",
            root / "wheel",
            sdist,
        ],
        "pip wheel of the sdist",
        env=_clean_env(),
    )
    (wheel,) = (root / "wheel").glob("gatekit-*.whl")
    print(f"\nsdist in {sdist_seconds:.0f} s, wheel from it in {time.perf_counter() - started - sdist_seconds:.0f} s")
    return {"sdist": sdist, "wheel": wheel}


@pytest.fixture(scope="module")
def deploy_venv(tmp_path_factory, package_dist) -> Path:
    """A fresh venv with gatekit[ort,openvino] installed from the sdist (PyPI or pip's cache for the rest)."""
    root = tmp_path_factory.mktemp("deploy")
    started = time.perf_counter()
    venv = _new_venv(root)
    # named, so that pip looks in its cache first and takes the wheel package_dist built from this very sdist
    spec = f"gatekit[ort,openvino] @ {package_dist['sdist'].as_uri()}"
    _run(
        [venv / "bin/python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", spec, OPENVINO_PIN],
        "pip install of the sdist",
        env=_clean_env(),
    )
    print(f"\nfresh deploy venv installed from the sdist in {time.perf_counter() - started:.0f} s")
    return venv


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """static (onnx and openvino) and dense (onnx) graphs of a small real-structure checkpoint, with their manifests;
    and its dynamic graph in the native form for ONNX Runtime (out/dynamic.onnx, with its fallback) and OpenVINO
    (out/dynamic.xml) where this checkout's op libraries are built (the export verifies the native form with them)."""
    import torch

    from gatekit import native_ops
    from gatekit.checkpoint import save_model
    from gatekit.export.sweep import export_all
    from gatekit.models import GatedResNet, ModelConfig

    tmp = tmp_path_factory.mktemp("artifacts")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    np.savez(
        tmp / "d.npz",
        x_train=x,
        y_train=np.arange(64, dtype=np.uint8) % 10,
        x_test=x,
        y_test=np.arange(64, dtype=np.uint8) % 10,
    )
    torch.manual_seed(0)
    model = GatedResNet(ModelConfig(width=0.125)).eval()
    save_model(
        tmp / "m.safetensors",
        model,
        {"train_config": {"dataset": "npz", "data_dir": str(tmp / "d.npz"), "method": "vicreg-dual", "budget": 0.3}},
    )
    export_all(
        tmp / "m.safetensors",
        tmp / "out",
        graphs=["dense", "static"],
        formats=["onnx", "openvino"],
        strict=True,
        verify_images=32,
        calib=64,
        knn_train=64,
        threads=1,
    )
    formats = [rt_format for rt, rt_format in (("ort", "onnx"), ("openvino", "openvino")) if native_ops.library_for(rt)]
    if "onnx" in formats:
        made, _ = export_all(
            tmp / "m.safetensors",
            tmp / "out",
            graphs=["dynamic"],
            formats=formats,
            strict=True,
            dynamic_form="native",
            verify_images=32,
            calib=64,
            knn_train=64,
            threads=1,
        )
        assert all(m["dynamic_form"] == "native" for m in made) and (tmp / "out" / "dynamic.onnx").is_file()
    return tmp


def _native_dynamic(exported: Path, name: str = "dynamic.onnx") -> Path:
    path = exported / "out" / name
    if not path.is_file():
        pytest.skip(
            f"no native dynamic {name}: this checkout's op library for it is not built (`gatekit ops build`), "
            "and the export verifies the native form with it"
        )
    return path


def _gatekit(venv: Path, *args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`gatekit ARGS` of a venv, with an empty op cache of its own (GATEKIT_OPS_DIR): what it loads is the package's."""
    ops = cwd / "empty-op-cache"
    ops.mkdir(exist_ok=True)
    run_env = _clean_env(GATEKIT_OPS_DIR=str(ops), **(env or {}))
    return subprocess.run(
        [str(venv / "bin/gatekit"), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=run_env, timeout=600
    )


def _bench_record(venv: Path, artifact: Path, data: Path, cwd: Path, *extra, env: dict | None = None) -> dict:
    p = _gatekit(
        venv,
        "bench",
        artifact,
        "--threads",
        "1",
        "--inputs",
        "8",
        *FAST,
        "--data-dir",
        data,
        "--json",
        cwd / "native.jsonl",
        "--quiet",
        *extra,
        cwd=cwd,
        env=env,
    )
    assert p.returncode == 0, p.stderr[-1500:]
    (rec,) = [json.loads(line) for line in (cwd / "native.jsonl").read_text().splitlines()]
    return rec


def test_deploy_commands_run_without_torch(deploy_venv, exported, tmp_path):
    started = time.perf_counter()
    py = deploy_venv / "bin/python"
    probe = subprocess.run(
        [
            str(py),
            "-c",
            "import importlib.util as u; print([m for m in ('torch', 'safetensors', 'kornia') if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert probe.returncode == 0 and probe.stdout.strip() == "[]", probe.stdout + probe.stderr
    out = exported / "out"
    data = exported / "d.npz"

    p = _gatekit(
        deploy_venv,
        "bench",
        out / "dense.onnx",
        out / "static.onnx",
        out / "static.xml",
        "--threads",
        "1",
        "--inputs",
        "8",
        *FAST,
        "--data-dir",
        data,
        "--json",
        tmp_path / "b.jsonl",
        "--quiet",
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-1500:]
    records = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert {(r["manifest"]["graph"], r["runtime"]["name"]) for r in records} == {
        ("dense", "ort"),
        ("static", "ort"),
        ("static", "openvino"),
    }
    assert "torch" not in records[0]["machine"]["packages"]

    sha = records[0]["manifest"]["checkpoint_sha256"]
    (tmp_path / "eval.json").write_text(
        json.dumps(
            {"checkpoint_sha256": sha, "paths": {"dense": {"knn20_cosine": 0.50}, "gated": {"knn20_cosine": 0.45}}}
        )
    )
    p = _gatekit(
        deploy_venv,
        "pick",
        "--target-ms",
        "1000",
        "--results",
        tmp_path / "b.jsonl",
        "--accuracy",
        tmp_path / "eval.json",
        "--runtime",
        "ort",
        "--json",
        tmp_path / "pick.json",
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-1500:]
    assert json.loads((tmp_path / "pick.json").read_text())["chosen"]["graph"] == "dense"  # the most accurate

    p = _gatekit(
        deploy_venv,
        "profile",
        "--runtime",
        "ort",
        "--width",
        "0.125",
        "--input",
        "32",
        "--threads",
        "1",
        "--check",
        "2",
        "--min-runs",
        "20",
        "--min-seconds",
        "0.05",
        "--no-native",  # the native op's table is checked in test_profile.py and test_int8_dynamic.py
        "--dataset",
        "npz",
        "--data-dir",
        data,
        "--out",
        tmp_path / "lut.json",
        "--quiet",
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-1500:]
    lut = json.loads((tmp_path / "lut.json").read_text())
    assert lut["runtime"]["name"] == "ort"

    p = _gatekit(
        deploy_venv,
        "pick",
        "--target-ms",
        "1000",
        "--lut",
        tmp_path / "lut.json",
        "--usage",
        out / "static.onnx.json",
        "--json",
        tmp_path / "plan.json",
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-1500:]
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["format"] == "onnx" and len(plan["chosen"]["widths"]) == 8 and "gatekit export" in p.stdout

    p = _gatekit(deploy_venv, "report", tmp_path / "b.jsonl", "--out", tmp_path / "page.md", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-1500:]
    assert "| static |" in (tmp_path / "page.md").read_text()
    print(f"deploy commands in the fresh venv: {time.perf_counter() - started:.0f} s")


def _site_packages(venv: Path) -> Path:
    (sp,) = venv.glob("lib/python3*/site-packages")
    return sp.resolve()


def test_sdist_install_carries_both_op_libraries(deploy_venv, exported, tmp_path):
    """gatekit[ort,openvino] installed from the sdist (built where openvino was installed): the package holds the ORT
    op library and the OpenVINO extension for that release with their record, `ops status` lists both with the
    kernel path this CPU runs, and native dynamic graphs run on them on both runtimes (empty op cache)."""
    pkg = _site_packages(deploy_venv) / "gatekit" / "_ops"
    lib = pkg / "libgatekit_ort_ops.so"
    record = json.loads((pkg / "build.json").read_text())
    entry = record["libraries"]["ort"]
    assert entry["status"] == "built" and entry["path"] == lib.name
    assert entry["sha256"] == hashlib.sha256(lib.read_bytes()).hexdigest() and entry["size"] == lib.stat().st_size
    assert "portable" in entry["isa_compiled"] and entry["ort_api_version"] == 17
    if platform.machine().lower() in ("x86_64", "amd64"):  # every x86-64 path, picked at run time
        assert set(entry["isa_compiled"]) == {"portable", "avx2", "avx512"}
    ov_lib = pkg / "libgatekit_ov_ops.so"
    ov_entry = record["libraries"]["openvino"]
    assert ov_entry["status"] == "built" and ov_entry["path"] == ov_lib.name, ov_entry
    assert ov_entry["sha256"] == hashlib.sha256(ov_lib.read_bytes()).hexdigest()
    assert ov_entry["openvino_version"] == OPENVINO_PIN.partition("==")[2] == record["runtimes"]["openvino"]
    assert (pkg.parent / "_native" / "CMakeLists.txt").is_file() and (pkg.parent / "_native" / "kernel").is_dir()

    p = _gatekit(deploy_venv, "ops", "status", "--json", tmp_path / "st.json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-1500:]
    st = json.loads((tmp_path / "st.json").read_text())
    assert st["package"]["libraries"]["ort"]["usable"] and Path(st["package"]["libraries"]["ort"]["path"]) == lib
    assert st["package"]["libraries"]["openvino"]["usable"], st["package"]["libraries"]["openvino"]
    assert st["in_use"] == {
        "ort": {"path": str(lib), "from": "package"},
        "openvino": {"path": str(ov_lib), "from": "package"},
    }
    assert st["source_dir"] == str(pkg.parent / "_native")  # `gatekit ops build` has sources to build from
    isa = st["kernel"]["isa_selected"]
    assert isa in entry["isa_compiled"] and isa == st["cpu_isa"]  # the best path this CPU runs
    assert f"onnxruntime: ready: {lib}" in p.stdout and f"kernel path in use: {isa};" in p.stdout
    assert "in use: onnxruntime: libgatekit_ort_ops.so from the package" in p.stdout
    assert f"openvino: ready: {ov_lib}" in p.stdout, p.stdout

    rec = _bench_record(deploy_venv, _native_dynamic(exported), exported / "d.npz", tmp_path)
    assert rec["runtime"]["ops"] == "native op" and Path(rec["runtime"]["ops_library"]) == lib
    assert rec["manifest"]["dynamic_form"] == "native"
    (tmp_path / "ov").mkdir()
    rec = _bench_record(deploy_venv, _native_dynamic(exported, "dynamic.xml"), exported / "d.npz", tmp_path / "ov")
    assert rec["runtime"]["name"] == "openvino" and rec["runtime"]["ops"] == "native op", rec["runtime"]
    assert Path(rec["runtime"]["ops_library"]) == ov_lib


def test_wheel_runs_the_native_op_without_a_compiler(package_dist, exported, tmp_path):
    """The wheel is platform-tagged and holds the library, its record and the sources; installed in a fresh venv
    with no compiler on PATH it runs a native dynamic graph, and `gatekit ops build` says in one line why not."""
    wheel = package_dist["wheel"]
    assert wheel.name.startswith("gatekit-") and not wheel.name.endswith("-any.whl"), wheel.name
    assert wheel.name.split("-")[-1].startswith(("linux_", "manylinux", "macosx_")), wheel.name
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        record = json.loads(z.read("gatekit/_ops/build.json"))
        lib_bytes = z.read("gatekit/_ops/libgatekit_ort_ops.so")
    assert {
        "gatekit/_native/CMakeLists.txt",
        "gatekit/_native/ort/gatekit_ort_ops.cpp",
        "gatekit/native_ops.py",
        "gatekit/recipes/cifar10.toml",
    } <= names
    assert record["libraries"]["ort"]["sha256"] == hashlib.sha256(lib_bytes).hexdigest()
    assert not any("__pycache__" in n for n in names)

    started = time.perf_counter()
    venv = _new_venv(tmp_path)
    _run(
        [venv / "bin/python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"{wheel}[ort]"],
        "pip install of the wheel",
        env=_clean_env(),
    )
    print(f"\nwheel venv installed in {time.perf_counter() - started:.0f} s")
    bare = tmp_path / "bin-without-compiler"  # PATH: the venv, and cmake and ninja but no C++ compiler
    bare.mkdir()
    for tool in ("cmake", "ninja"):
        if shutil.which(tool):
            (bare / tool).symlink_to(shutil.which(tool))
    path = f"{venv / 'bin'}{os.pathsep}{bare}"
    assert not any(shutil.which(cc, path=path) for cc in ("cc", "c++", "g++", "gcc", "clang++"))
    env = {"PATH": path}

    rec = _bench_record(venv, _native_dynamic(exported), exported / "d.npz", tmp_path, "--ops", "native", env=env)
    lib = _site_packages(venv) / "gatekit" / "_ops" / "libgatekit_ort_ops.so"
    assert rec["runtime"]["ops"] == "native op" and Path(rec["runtime"]["ops_library"]) == lib

    p = _gatekit(venv, "ops", "build", cwd=tmp_path, env=env)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1 and p.stdout == "", p.stdout + p.stderr
    why = "no C++ compiler found" if shutil.which("cmake") else "cmake not found"
    assert lines[0].startswith("gatekit: error: cannot build the native ops: ") and why in lines[0], lines


def test_fallback_says_how_to_build_the_op(exported, tmp_path):
    """A checkout with no op library anywhere (no package library, an empty op cache): `gatekit bench --ops auto` runs
    the fallback and says in one line that the native op is missing and how to build it; `gatekit pick` on that
    record says so too."""
    artifact = _native_dynamic(exported)
    env = {k: v for k, v in os.environ.items() if k != "GATEKIT_OPS_DIR"}
    env.update(GATEKIT_OPS_DIR=str(tmp_path / "empty-op-cache"), PYTHONPATH=str(REPO))
    gk = [sys.executable, "-m", "gatekit.cli"]
    p = subprocess.run(
        [
            *gk,
            "bench",
            str(artifact),
            "--threads",
            "1",
            "--inputs",
            "8",
            *FAST,
            "--data-dir",
            str(exported / "d.npz"),
            "--json",
            str(tmp_path / "b.jsonl"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-1500:]
    notes = [line for line in p.stderr.splitlines() if "native op" in line]
    assert notes == [
        f"gatekit: {artifact.name} ran its standard-ops fallback: gatekit's native op for onnxruntime "
        "is missing here (`gatekit ops status` says why); build it with `gatekit ops build`, then bench "
        "again"
    ]
    (rec,) = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert rec["runtime"]["ops"] == "fallback"

    p = subprocess.run(
        [*gk, "pick", "--target-ms", "1000", "--results", str(tmp_path / "b.jsonl")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert p.returncode in (0, 1), p.stderr[-1500:]
    notes = [line for line in p.stderr.splitlines() if "gatekit ops build" in line]
    assert len(notes) == 1 and "ran on the standard-ops fallback, not the native op" in notes[0], p.stderr
