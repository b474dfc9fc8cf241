"""A native op library is loaded only when its bytes match its build record: a damaged (truncated, corrupted),
unrecorded or foreign library is refused in one line, `--ops auto` runs the standard-ops fallback and says why,
`gatekit ops status` reports it, and GATEKIT_OPS_ISA accepts only the kernel paths the library holds and this CPU
runs (a CPU without AVX-512 is simulated through the CPU flags native_ops reads).

Each test copies the real libraries built into the op cache ($GATEKIT_OPS_DIR; `gatekit ops build`) into its
own op cache under tmp_path and damages the copy, never the build itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gatekit import native_ops
from gatekit.errors import GatekitError
from tests.conftest import REPO

BUILD_SKIP_REASONS = (
    "cmake not found",
    "too old",
    "no C++ compiler",
    "neither ninja nor make",
    "native sources not found",
)
NO_AVX512 = {"sse2", "avx", "avx2", "fma"}  # an AVX2 CPU's flags: what the simulated CPU reports
CPU_PATHS = native_ops.cpu_paths()  # what this CPU really runs


@pytest.fixture(scope="module")
def built():
    info = native_ops.build(jobs=2)
    if info.get("status") != "ok":
        reason = info.get("reason") or "unknown"
        if any(s in reason for s in BUILD_SKIP_REASONS):
            pytest.skip(f"native ops not built: {reason}")
        pytest.fail(f"native ops build failed: {reason}")
    if info["libraries"]["ort"]["status"] != "built":
        pytest.fail(f"the ORT op library was not built: {info['libraries']['ort'].get('reason')}")
    return info


@pytest.fixture
def ops_copy(built, tmp_path, monkeypatch):
    """A copy of the built op cache folder where library_for looks (tmp_path/ops/<build key>), as the op cache."""
    root = tmp_path / "ops"
    monkeypatch.setenv("GATEKIT_OPS_DIR", str(root))
    monkeypatch.delenv("GATEKIT_OPS_ISA", raising=False)

    def make() -> Path:  # after any change to the simulated CPU, whose best path is part of the key
        d = root / native_ops.build_key()
        shutil.copytree(built["dir"], d)
        return d

    return make


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut a file short, as an interrupted build or copy or a full disk leaves it."""
    with open(path, "r+b") as fh:
        fh.truncate(int(path.stat().st_size * keep))


def mapped(path: Path) -> bool:
    """Whether this process has `path` mapped (loaded)."""
    return str(path.resolve()) in Path("/proc/self/maps").read_text()


@pytest.fixture(scope="module")
def artifact(built, tmp_path_factory):
    """A small dynamic graph exported to ONNX in the native form (its standard-ops fallback beside it)."""
    torch = pytest.importorskip("torch")
    from gatekit.checkpoint import save_model
    from gatekit.export.sweep import export_all
    from gatekit.models import GatedResNet, ModelConfig

    tmp = tmp_path_factory.mktemp("integrity")
    x = np.random.default_rng(1).integers(0, 256, (96, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp / "d.npz", x_train=x, y_train=np.zeros(96, np.uint8), x_test=x, y_test=np.zeros(96, np.uint8))
    torch.manual_seed(3)
    model = GatedResNet(ModelConfig(width=0.25)).eval()
    save_model(tmp / "m.safetensors", model, {"train_config": {"dataset": "npz", "data_dir": str(tmp / "d.npz")}})
    (m,), _ = export_all(
        tmp / "m.safetensors",
        tmp / "out",
        graphs=["dynamic"],
        formats=["onnx"],
        strict=True,
        verify_images=8,
        calib=96,
        threads=1,
        dynamic_batch=True,
        record_inputs=0,
    )
    assert m["dynamic_form"] == "native"
    return tmp


def bench(artifact_dir: Path, tmp_path: Path, *extra: str, **env: str) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / f"r{len(list(tmp_path.glob('r*.jsonl')))}.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "gatekit",
        "bench",
        str(artifact_dir / "out" / "dynamic.onnx"),
        "--threads",
        "1",
        "--inputs",
        "4",
        "--min-runs",
        "5",
        "--min-seconds",
        "0.05",
        "--warmup-runs",
        "1",
        "--data-dir",
        str(artifact_dir / "d.npz"),
        "--json",
        str(out),
        "--quiet",
        *extra,
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO), **env)
    )
    return proc, out


# ---------------------------------------------------------------------------------------------------------
# The record.


def test_build_records_hash_size_runtime_and_isa_paths(built):
    d = Path(built["dir"])
    assert not list(d.glob(".*.tmp"))  # the library copies were renamed into place, none left half-written
    for rt, lib in built["libraries"].items():
        if lib["status"] != "built":
            continue
        path = Path(lib["path"])
        assert path.parent == d
        assert lib["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert lib["size"] == path.stat().st_size
        assert lib["isa_compiled"] == lib["build_info"]["isa_compiled"] and "portable" in lib["isa_compiled"]
        versions = native_ops.runtime_versions()
        key = {"ort": "onnxruntime", "openvino": "openvino"}[rt]
        assert lib[f"{key}_version"] == versions[key]
        assert native_ops.check_library(rt, path)["sha256"] == lib["sha256"]
    on_disk = json.loads((d / "build.json").read_text())
    assert on_disk["libraries"]["ort"]["sha256"] == built["libraries"]["ort"]["sha256"]


def test_the_manifest_names_the_library_that_verified_it(built, artifact):
    m = json.loads((artifact / "out" / "dynamic.onnx.json").read_text())
    assert m["native_op"]["library"]["sha256"] == built["libraries"]["ort"]["sha256"]
    assert m["runtime"]["ops_isa"] == (os.environ.get("GATEKIT_OPS_ISA") or native_ops.cpu_isa())


def test_a_damaged_library_is_not_up_to_date(built, ops_copy):
    """`gatekit ops build`, the command every refusal names, rebuilds a damaged library instead of keeping it."""
    d = ops_copy()
    versions = native_ops.runtime_versions()
    info = json.loads((d / "build.json").read_text())
    assert native_ops._is_current(info, versions, info["source_hash"], d)
    truncate(d / native_ops.LIB_NAMES["ort"])
    assert not native_ops._is_current(info, versions, info["source_hash"], d)


# ---------------------------------------------------------------------------------------------------------
# Damaged, unrecorded, foreign.


def test_truncated_library_is_refused_in_one_line(ops_copy):
    d = ops_copy()
    lib = d / native_ops.LIB_NAMES["ort"]
    assert native_ops.library_for("ort") == lib
    truncate(lib)
    with pytest.raises(native_ops.NativeOpsError) as e:
        native_ops.check_library("ort", lib)
    msg = str(e.value)
    assert e.value.state == "damaged" and "\n" not in msg
    assert str(lib) in msg and "damaged" in msg and "`gatekit ops build`" in msg
    path, refused = native_ops.find_library("ort")
    assert path is None and refused.state == "damaged"
    assert native_ops.library_for("ort") is None


def test_corrupted_bytes_of_the_same_size_are_refused(ops_copy):
    """The hash, not only the size: one flipped byte after a check that passed (the per-process hash cache
    sees the file change)."""
    d = ops_copy()
    lib = d / native_ops.LIB_NAMES["ort"]
    native_ops.check_library("ort", lib)
    data = bytearray(lib.read_bytes())
    data[len(data) // 2] ^= 0xFF
    lib.write_bytes(bytes(data))
    with pytest.raises(native_ops.NativeOpsError, match="damaged: sha256") as e:
        native_ops.check_library("ort", lib)
    assert e.value.state == "damaged"


def test_a_library_without_its_record_is_refused(ops_copy):
    d = ops_copy()
    lib = d / native_ops.LIB_NAMES["ort"]
    info = json.loads((d / "build.json").read_text())
    del info["libraries"]["ort"]["sha256"]
    (d / "build.json").write_text(json.dumps(info))
    with pytest.raises(native_ops.NativeOpsError, match="records no sha256") as e:
        native_ops.check_library("ort", lib)
    assert e.value.state == "unrecorded" and "`gatekit ops build`" in str(e.value)
    (d / "build.json").unlink()
    with pytest.raises(native_ops.NativeOpsError, match="no readable build.json") as e:
        native_ops.check_library("ort", lib)
    assert e.value.state == "unrecorded" and str(lib) in str(e.value)
    assert native_ops.status()["libraries"]["ort"]["state"] == "unrecorded"


def test_an_extension_for_another_openvino_release_is_refused_with_the_rebuild_command(built, ops_copy):
    if built["libraries"]["openvino"]["status"] != "built":
        pytest.skip("OpenVINO extension not built")
    d = ops_copy()
    lib = d / native_ops.LIB_NAMES["openvino"]
    with pytest.raises(native_ops.NativeOpsError) as e:
        native_ops.check_library("openvino", lib, dict(native_ops.runtime_versions(), openvino="2025.1.0"))
    assert e.value.state == "foreign" and str(lib) in str(e.value) and "`gatekit ops build`" in str(e.value)


def test_ops_status_reports_the_damaged_library(ops_copy):
    d = ops_copy()
    lib = d / native_ops.LIB_NAMES["ort"]
    assert native_ops.status()["libraries"]["ort"]["state"] == "ready"
    truncate(lib)
    entry = native_ops.status()["libraries"]["ort"]
    assert entry["state"] == "damaged" and not entry["usable"]
    proc = subprocess.run(
        [sys.executable, "-m", "gatekit", "ops", "status"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("onnxruntime")]
    assert "damaged" in line and str(lib) in line and "ready" not in line and "`gatekit ops build`" in line


def test_loading_refuses_a_library_outside_any_record(built, tmp_path):
    """The backends check every op library before loading it, whoever hands it to them."""
    from gatekit.runtimes import get_backend

    pytest.importorskip("onnxruntime")
    lib = tmp_path / native_ops.LIB_NAMES["ort"]
    shutil.copy2(built["libraries"]["ort"]["path"], lib)  # the right bytes, but no build.json vouches for them
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    with pytest.raises(GatekitError, match="no readable build.json"):
        get_backend("ort").load(model, extensions=(str(lib),))
    assert not mapped(lib)


# ---------------------------------------------------------------------------------------------------------
# Loading a native-op graph: never a signal.


def test_bench_with_a_truncated_library(artifact, ops_copy, tmp_path):
    d = ops_copy()
    lib = d / native_ops.LIB_NAMES["ort"]
    truncate(lib)
    env = {"GATEKIT_OPS_DIR": str(tmp_path / "ops")}
    proc, _ = bench(artifact, tmp_path, "--ops", "native", **env)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-1500:])  # an exit status, not a signal
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("gatekit: error:") and str(lib) in line and "damaged" in line
    assert "`gatekit ops build`" in line

    proc, out = bench(artifact, tmp_path, "--ops", "auto", **env)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-1500:])
    warnings = [ln for ln in proc.stderr.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and str(lib) in warnings[0] and "fallback" in warnings[0]
    (rec,) = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert rec["runtime"]["ops"] == "fallback" and rec["runtime"]["ops_library"] is None
    assert "damaged" in rec["runtime"]["ops_reason"] and str(lib) in rec["runtime"]["ops_reason"]


def test_bench_records_the_kernel_path_that_ran(artifact, ops_copy, tmp_path):
    ops_copy()
    env = {"GATEKIT_OPS_DIR": str(tmp_path / "ops")}
    proc, out = bench(artifact, tmp_path, "--ops", "native", **env)
    assert proc.returncode == 0, proc.stderr[-1500:]
    (rec,) = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert rec["runtime"]["ops"] == "native op" and rec["runtime"]["ops_isa"] == native_ops.cpu_isa()
    assert rec["runtime"]["ops_reason"] is None
    if "portable" != native_ops.cpu_isa():  # a forced path reaches the kernel and the record
        proc, out = bench(artifact, tmp_path, "--ops", "native", GATEKIT_OPS_ISA="portable", **env)
        assert proc.returncode == 0, proc.stderr[-1500:]
        (rec,) = [json.loads(ln) for ln in out.read_text().splitlines()]
        assert rec["runtime"]["ops_isa"] == "portable"


def test_bench_refuses_an_unknown_kernel_path(artifact, ops_copy, tmp_path):
    ops_copy()
    for ops in ("native", "auto"):
        proc, out = bench(
            artifact, tmp_path, "--ops", ops, GATEKIT_OPS_DIR=str(tmp_path / "ops"), GATEKIT_OPS_ISA="bogus"
        )
        assert proc.returncode == 2, (ops, proc.returncode, proc.stderr[-1500:])
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("gatekit: error:") and "GATEKIT_OPS_ISA='bogus'" in line
        assert ", ".join(native_ops.cpu_paths()) in line and not out.exists()


# ---------------------------------------------------------------------------------------------------------
# GATEKIT_OPS_ISA.


def test_isa_bogus_is_refused_in_one_line(ops_copy, monkeypatch):
    d = ops_copy()
    lib = d / native_ops.LIB_NAMES["ort"]
    monkeypatch.setenv("GATEKIT_OPS_ISA", "bogus")
    with pytest.raises(native_ops.NativeOpsError) as e:
        native_ops.check_for_load("ort", lib)
    msg = str(e.value)
    assert e.value.state == "isa" and "\n" not in msg
    assert msg.startswith("GATEKIT_OPS_ISA='bogus' is refused (no such kernel path)")
    assert f"one of {', '.join(native_ops.cpu_paths() + native_ops.int8_cpu_paths())} (" in msg
    entry = native_ops.status()["libraries"]["ort"]
    assert not entry["usable"] and entry["state"] == "isa"
    assert "GATEKIT_OPS_ISA='bogus' is refused" in native_ops._summary_status(native_ops.status())
    monkeypatch.setenv("GATEKIT_OPS_ISA", " avx2")  # the kernel compares exactly: so does the check
    with pytest.raises(native_ops.NativeOpsError, match="GATEKIT_OPS_ISA=' avx2' is refused"):
        native_ops.check_for_load("ort", lib)


def test_isa_avx512_is_refused_on_a_cpu_without_it(built, ops_copy, monkeypatch):
    if "avx512" not in built["libraries"]["ort"]["isa_compiled"]:
        pytest.skip("this compiler built no AVX-512 path")
    monkeypatch.setattr(native_ops, "_cpu_flags", lambda: set(NO_AVX512))
    assert native_ops.cpu_paths() == ["avx2", "portable"] and native_ops.cpu_isa() == "avx2"
    d = ops_copy()
    lib = d / native_ops.LIB_NAMES["ort"]
    monkeypatch.setenv("GATEKIT_OPS_ISA", "avx512")
    with pytest.raises(native_ops.NativeOpsError) as e:
        native_ops.check_for_load("ort", lib)
    msg = str(e.value)
    assert "\n" not in msg and "GATEKIT_OPS_ISA='avx512' is refused (this CPU cannot run avx512)" in msg
    assert "one of avx2, portable " in msg
    monkeypatch.setenv("GATEKIT_OPS_ISA", "avx2")
    assert native_ops.check_for_load("ort", lib)["isa"] == "avx2"
    monkeypatch.delenv("GATEKIT_OPS_ISA")
    assert native_ops.check_for_load("ort", lib)["isa"] == "avx2"  # the best path this CPU runs


def test_isa_the_library_lacks_is_refused(ops_copy, monkeypatch):
    d = ops_copy()
    lib = d / native_ops.LIB_NAMES["ort"]
    record = dict(native_ops.check_library("ort", lib), isa_compiled=["portable"])  # a build without AVX paths
    record["build_info"] = dict(record.get("build_info") or {}, int8_isa_compiled=["portable"])
    monkeypatch.setenv("GATEKIT_OPS_ISA", "avx2")
    with pytest.raises(
        native_ops.NativeOpsError,
        match=r"\(libgatekit_ort_ops.\w+ was built without avx2\): "
        r"set it to one of portable ",
    ):
        native_ops.check_isa(lib, record)


def test_load_artifact_refuses_avx512_on_a_cpu_without_it_before_loading(built, artifact, ops_copy, monkeypatch):
    from gatekit.artifacts import open_artifact
    from gatekit.runtimes import load_artifact

    if "avx512" not in built["libraries"]["ort"]["isa_compiled"] or "avx2" not in CPU_PATHS:
        pytest.skip("needs a library with an AVX-512 path and a CPU that runs AVX2")
    monkeypatch.setattr(native_ops, "_cpu_flags", lambda: set(NO_AVX512))
    d = ops_copy()
    lib = d / native_ops.LIB_NAMES["ort"]
    art = open_artifact(artifact / "out" / "dynamic.onnx.json")
    monkeypatch.setenv("GATEKIT_OPS_ISA", "avx512")
    for ops in ("native", "auto"):
        with pytest.raises(GatekitError, match=r"GATEKIT_OPS_ISA='avx512' is refused .*one of avx2, portable "):
            load_artifact(art, ops=ops, threads=1)
    assert not mapped(lib)  # refused before the library was loaded
    monkeypatch.setenv("GATEKIT_OPS_ISA", "avx2")
    with load_artifact(art, ops="native", threads=1) as s:
        assert mapped(lib) and s.info.ops == "native op" and s.info.ops_library == str(lib)
        assert s.info.ops_isa == "avx2"  # the library's own word on the path it runs
