"""An artifact never disagrees with its manifest: the manifest records the sha256 of every file it
describes; bench, engine, accuracy, pick and report refuse an artifact whose bytes differ, or a manifest
whose files are another artifact's, in one line naming the file (--trust-edited reads it anyway); and the
artifact and its manifest are written as one unit (a failure half way never leaves a mixed pair)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from gatekit.artifacts import file_sha256, open_artifact, publish
from gatekit.cli import main
from gatekit.errors import GatekitError

INPUT = {
    "name": "input",
    "shape": [1, 3, 4, 4],
    "dtype": "float32",
    "layout": "NCHW",
    "scale": 1 / 255,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.25, 0.25, 0.25],
    "dataset": "cifar10",
    "data_dir": None,
}


def _onnx_model(scale: float = 1.0):
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 3, 4, 4])
    w = numpy_helper.from_array(np.full((1, 3, 4, 4), scale, np.float32), "w")
    graph = helper.make_graph([helper.make_node("Mul", ["input", "w"], ["features"])], "mul", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _manifest(fmt: str, tag: str) -> dict:
    return {
        "graph": "static",
        "format": fmt,
        "files": {},
        "precision": "fp32",
        "budget": 0.3,
        "tag": tag,
        "macs": {"ratio_to_dense": 0.5},
        "checkpoint_sha256": "abc",
        "channels": [],
        "input": INPUT,
        "model_config": {
            "arch": "resnet18",
            "width": 0.125,
            "stem": "cifar",
            "input_size": 4,
            "gate_group": 1,
            "stem_padding": None,
        },
    }


def _export(out: Path, fmt: str, scale: float = 1.0, tag: str = "new", stem: str = "static") -> Path:
    """An artifact written the way `gatekit export` writes one: staged in a temporary directory, then published."""
    import onnx

    model = _onnx_model(scale)
    stage = out / f".stage-{tag}-{fmt}"
    stage.mkdir(parents=True)
    if fmt == "onnx":
        onnx.save(model, stage / "x.onnx")
        staged = {"onnx": stage / "x.onnx"}
    else:
        ov = pytest.importorskip("openvino")
        onnx.save(model, stage / "src.onnx")
        ov.save_model(ov.convert_model(str(stage / "src.onnx")), str(stage / "x.xml"), compress_to_fp16=False)
        staged = {"xml": stage / "x.xml", "bin": stage / "x.bin"}
    path = publish(out, stem, fmt, staged, _manifest(fmt, tag))
    shutil.rmtree(stage)
    return path


def _flip(path: Path, at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if at is None else at
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def _run(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return e.value.code, err


@pytest.fixture
def onnx_artifact(tmp_path) -> Path:
    return _export(tmp_path / "art", "onnx")


@pytest.fixture
def ir_artifact(tmp_path) -> Path:
    return _export(tmp_path / "art", "openvino")


def test_the_manifest_records_the_sha256_of_every_file(onnx_artifact, ir_artifact):
    for path, keys in ((onnx_artifact, {"onnx"}), (ir_artifact, {"xml", "bin"})):
        m = json.loads(path.read_text())
        assert set(m["sha256"]) == keys
        for key, name in m["files"].items():
            assert m["sha256"][key] == file_sha256(path.parent / name)
        art = open_artifact(path)  # the intact artifact opens, nothing to report
        assert art.edited == []
    assert not list((onnx_artifact.parent).glob(".*.tmp")), "no temporary file left beside the artifact"


def _refusals(manifest: Path, file: Path, tmp_path: Path) -> list[list]:
    """bench, accuracy and engine on the artifact (engine: before it asks for TensorRT)."""
    return [
        ["bench", manifest, "--quiet", "--threads", "1"],
        ["bench", file, "--quiet", "--threads", "1"],
        ["accuracy", manifest, "--out", tmp_path / "acc.jsonl"],
        ["engine", manifest, "--out", tmp_path / "engine"],
    ]


@pytest.mark.parametrize("which", ["onnx", "xml", "bin"])
def test_a_flipped_byte_is_refused_in_one_line_naming_the_file(which, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GATEKIT_DATA", str(tmp_path / "no-data"))
    manifest = _export(tmp_path / "art", "onnx" if which == "onnx" else "openvino")
    m = json.loads(manifest.read_text())
    edited = manifest.parent / m["files"][which]
    _flip(edited)
    loaded = manifest.parent / m["files"]["onnx" if which == "onnx" else "xml"]
    for argv in _refusals(manifest, loaded, tmp_path):
        code, err = _run(argv, capsys)
        lines = [x for x in err.splitlines() if x.strip()]
        assert code == 2 and len(lines) == 1, (argv, err)
        assert f"{edited}: its bytes do not match the sha256 in {manifest.name}" in lines[0], lines[0]
        assert "--trust-edited" in lines[0] and "TensorRT" not in lines[0]
    assert not (tmp_path / "acc.jsonl").exists() and not (tmp_path / "engine").exists()
    # --trust-edited opens it; the differences are kept (bench records them)
    with pytest.raises(GatekitError):
        open_artifact(manifest)
    art = open_artifact(manifest, verify=False)
    assert len(art.edited) == 1 and str(edited) in art.edited[0]


def _modes(manifest: Path) -> dict[str, int]:
    """Permission bits of a manifest and of each file it lists."""
    names = {"manifest": manifest.name, **json.loads(manifest.read_text())["files"]}
    return {key: (manifest.parent / name).stat().st_mode & 0o777 for key, name in names.items()}


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_the_manifest_gets_the_mode_of_its_artifact(tmp_path, umask):
    """Every file of the pair, the manifest included, has the mode a new file of the process gets (0666 less the
    umask): another user of a shared model folder who can read the model can read its manifest."""
    old = os.umask(umask)
    try:
        paths = [_export(tmp_path / "art", fmt) for fmt in ("onnx", "openvino")]
        paths.append(_export(tmp_path / "art", "onnx", tag="again"))  # a manifest replaced by a re-export
    finally:
        os.umask(old)
    for path in paths:
        assert set(_modes(path).values()) == {0o666 & ~umask}, _modes(path)


def test_a_manifest_pointing_at_another_artifact_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GATEKIT_DATA", str(tmp_path / "no-data"))
    out = tmp_path / "art"
    static = _export(out, "onnx", stem="static")
    _export(out, "onnx", scale=2.0, stem="dense")
    m = json.loads(static.read_text())
    m["files"]["onnx"] = "dense.onnx"  # an edited manifest: static's name, dense's file
    static.write_text(json.dumps(m))
    for argv in _refusals(static, static, tmp_path)[0:4:2] + _refusals(static, static, tmp_path)[3:]:
        code, err = _run(argv, capsys)
        assert code == 2 and "'files.onnx' points at 'dense.onnx'" in err and str(static) in err, err
    # the same with the hash updated to the other file: still another artifact's file
    m["sha256"]["onnx"] = file_sha256(out / "dense.onnx")
    static.write_text(json.dumps(m))
    with pytest.raises(GatekitError, match="points at 'dense.onnx'"):
        open_artifact(static)
    # a file path outside the directory
    m["files"]["onnx"] = "../elsewhere/static.onnx"
    static.write_text(json.dumps(m))
    with pytest.raises(GatekitError, match="points at"):
        open_artifact(static)


def test_a_manifest_from_before_hashes_still_loads(onnx_artifact):
    m = json.loads(onnx_artifact.read_text())
    del m["sha256"]
    onnx_artifact.write_text(json.dumps(m))
    _flip(onnx_artifact.parent / "static.onnx")  # unverifiable: such manifests are read as before
    assert open_artifact(onnx_artifact).edited == []


def test_bench_trust_edited_records_the_edit_and_report_and_pick_refuse_it(onnx_artifact, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    import numpy as np

    from gatekit.bench.protocol import Protocol
    from gatekit.bench.run import bench_one, write_jsonl

    onnx_file = onnx_artifact.parent / "static.onnx"
    _flip(onnx_file, at=onnx_file.read_bytes().index(b"\x00\x00\x80\x3f"))  # a weight's lowest mantissa byte
    art = open_artifact(onnx_artifact, verify=False)
    protocol = Protocol(warmup_runs=1, warmup_seconds=0.0, min_runs=5, min_seconds=0.0, floor_runs=5)
    x = np.zeros((2, 3, 4, 4), np.float32)
    rec = bench_one(art, "ort", 1, 1, protocol, x, "zeros", describe_machine={"cpu": "test cpu", "cores": 2})
    assert rec["edited"] and "static.onnx" in rec["edited"][0]
    assert rec["manifest"]["sha256"]["onnx"]
    results = tmp_path / "bench.jsonl"
    write_jsonl(results, [rec])
    for argv in (
        ["report", results, "--out", tmp_path / "page.md"],
        ["pick", "--target-ms", "1000", "--results", results],
    ):
        code, err = _run(argv, capsys)
        assert code == 2 and f"{results}:1 was measured on an artifact that differs from its manifest" in err, err
        assert "--trust-edited" in err
    assert not (tmp_path / "page.md").exists()
    code, err = _run(["report", results, "--out", tmp_path / "page.md", "--trust-edited"], capsys)
    assert code == 0 and (tmp_path / "page.md").is_file(), err
    # the switch is per command: the next one checks again
    with pytest.raises(GatekitError, match="do not match"):
        open_artifact(onnx_artifact)


# --- part 2: the artifact and its manifest are one unit ---


def _read_back(manifest: Path) -> str | None:
    """The tag of the pair read back, or None when it is refused (no manifest, or files that do not match)."""
    try:
        art = open_artifact(manifest)
    except GatekitError:
        return None
    return art.manifest["tag"]


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_a_failure_while_publishing_never_leaves_a_mixed_pair(fmt, tmp_path, monkeypatch):
    """os.replace fails at each of its calls in turn (moving a file, then writing the manifest): what is read
    back is the old pair, the new pair, or nothing (refused), never the new files under the old manifest."""
    real_replace = os.replace
    calls = len(("xml", "bin") if fmt == "openvino" else ("onnx",)) + 1  # each file, then the manifest
    outcomes = set()
    for n in range(1, calls + 2):
        out = tmp_path / f"run{n}"
        manifest = _export(out, fmt, scale=1.0, tag="old")
        old_bytes = {p.name: p.read_bytes() for p in out.iterdir()}
        count = {"n": 0}

        def failing(src, dst, _n=n, _count=count):
            _count["n"] += 1
            if _count["n"] == _n:
                raise OSError(28, "No space left on device (simulated)")
            return real_replace(src, dst)

        monkeypatch.setattr(os, "replace", failing)
        try:
            _export(out, fmt, scale=3.0, tag="new")
            failed = False
        except OSError:
            failed = True
        finally:
            monkeypatch.setattr(os, "replace", real_replace)
        got = _read_back(manifest)
        outcomes.add(got)
        if got == "old":  # the old pair, byte for byte
            assert all(out.joinpath(k).read_bytes() == v for k, v in old_bytes.items())
        if got is not None:  # whatever is read back matches its manifest
            m = json.loads(manifest.read_text())
            assert all(file_sha256(out / m["files"][k]) == h for k, h in m["sha256"].items())
        assert failed == (n <= calls), n
        if failed:  # the old manifest went before the first file was replaced: the reader is told to export again
            assert not manifest.exists()
            with pytest.raises(GatekitError, match="no manifest for .*interrupted export"):
                open_artifact(out / manifest.name.replace(".onnx.json", ".onnx").replace(".openvino.json", ".xml"))
        assert got == ("new" if n > calls else None), (n, got)
        assert not list(out.glob(".*.tmp")), "the manifest's temporary file is removed"
    assert outcomes == {None, "new"}


def test_an_old_manifest_beside_new_files_is_refused(tmp_path):
    """What publish used to leave after a crash between moving the files and writing the manifest."""
    out = tmp_path / "art"
    manifest = _export(out, "onnx", scale=1.0, tag="old")
    old = manifest.read_text()
    _export(out, "onnx", scale=3.0, tag="new")
    manifest.write_text(old)
    assert _read_back(manifest) is None
    with pytest.raises(GatekitError, match="static.onnx: its bytes do not match"):
        open_artifact(manifest)


def test_a_real_export_records_hashes_and_a_re_export_replaces_the_pair(tmp_path, capsys):
    """`gatekit export`'s own path (a width 0.125 dense graph to ONNX and OpenVINO), then a flipped byte, then
    the same export again: the new pair opens, nothing is left beside it."""
    import numpy as np
    import torch

    from gatekit.checkpoint import save_model
    from gatekit.export.exporter import ExportOptions, export
    from gatekit.models import GatedResNet, ModelConfig

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.zeros(64, np.uint8), x_test=x, y_test=np.zeros(64, np.uint8))
    torch.manual_seed(0)
    save_model(
        tmp_path / "m.safetensors",
        GatedResNet(ModelConfig(width=0.125)).eval(),
        {"train_config": {"dataset": "npz", "data_dir": str(tmp_path / "d.npz")}},
    )
    out = tmp_path / "out"
    for fmt, keys in (("onnx", {"onnx"}), ("openvino", {"xml", "bin"})):
        opts = ExportOptions(graph="dense", fmt=fmt, verify_images=32, threads=1)
        m = export(tmp_path / "m.safetensors", out, opts, progress=False)
        manifest = out / f"dense.{fmt}.json"
        assert set(m["sha256"]) == keys and json.loads(manifest.read_text())["sha256"] == m["sha256"]
        assert len(set(_modes(manifest).values())) == 1, _modes(manifest)  # the manifest's mode is the files'
        assert open_artifact(manifest).edited == []
        first = m["files"][sorted(keys)[-1]]
        _flip(out / first)
        code, err = _run(["bench", manifest, "--quiet", "--threads", "1"], capsys)
        assert code == 2 and f"{out / first}: its bytes do not match" in err, err
        export(tmp_path / "m.safetensors", out, opts, progress=False)  # exporting again repairs it
        assert open_artifact(manifest).edited == []
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
