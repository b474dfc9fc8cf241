"""The artifact contract: what a format is, which runtime loads it, how its manifest is named and read.

One table (FORMATS) drives export (one writer per format), loading (runtimes), benchmarking, pick,
report and the CLI; adding a format is one record here plus one writer in `gatekit.export.exporter`.
One name per runtime (RUNTIMES; aliases such as "onnxruntime" are read, never written).

    from gatekit.artifacts import open_artifact, load_inputs
    art = open_artifact("artifacts/td0.3/static.onnx")       # or its manifest static.onnx.json
    x, name = load_inputs(art.manifest, 256)                  # real test images, normalised as exported

torch-free: imports numpy, and the data loader only when inputs are asked for.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gatekit.data.arrays import normalize_images, recorded_dir
from gatekit.errors import GatekitError

MANIFEST_SUFFIX = ".json"
FALLBACK_PREFIX, FALLBACK_INFIX = "fallback_", ".fallback"  # a native-op graph's standard-ops twin
NATIVE, FALLBACK = "native op", "fallback"  # which path of such a graph ran (RuntimeInfo.ops)


@dataclass(frozen=True)
class Runtime:
    """A runtime gatekit measures on: its one name, the names it is also known by, its display name."""

    name: str
    display: str
    package: str  # the Python distribution that brings it
    aliases: tuple[str, ...] = ()
    deploy: bool = True  # False: the torch reference (training side)


RUNTIMES: dict[str, Runtime] = {
    r.name: r
    for r in (
        Runtime("ort", "ORT", "onnxruntime", ("onnxruntime", "onnx runtime")),
        Runtime("openvino", "OpenVINO", "openvino", ("ov",)),
        Runtime("tensorrt", "TensorRT", "tensorrt", ("trt",)),
        Runtime("torch", "torch", "torch", ("pytorch",), deploy=False),
    )
}


@dataclass(frozen=True)
class Format:
    """An artifact format: the files it writes (key -> suffix; the first is what a runtime loads), the
    runtime that loads it, the precisions it can hold, and the native library its gated ops need."""

    name: str
    display: str
    files: tuple[tuple[str, str], ...]  # (manifest "files" key, suffix); the first one is loaded
    runtime: str
    precisions: tuple[str, ...]
    native_library: str | None = None  # the library that runs gatekit's custom ops in this runtime
    extra_suffixes: tuple[str, ...] = ()  # other suffixes that open as this format

    @property
    def suffix(self) -> str:
        return self.files[0][1]

    @property
    def suffixes(self) -> tuple[str, ...]:
        return (self.suffix, *self.extra_suffixes)

    def file_names(self, stem: str, fallback: bool = False) -> dict[str, str]:
        """The manifest's `files` entry for an artifact called `stem`. A graph with native custom ops also
        carries a standard-ops fallback of the same graph (`fallback_<key>`: `{stem}.fallback<suffix>`),
        which runs where the op library cannot be loaded."""
        names = {key: stem + suffix for key, suffix in self.files}
        if fallback:
            names |= {FALLBACK_PREFIX + key: stem + FALLBACK_INFIX + suffix for key, suffix in self.files}
        return names


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "onnx",
            "ONNX",
            (("onnx", ".onnx"),),
            "ort",
            ("fp32", "int8"),
            native_library="ONNX Runtime custom-op library",
        ),
        Format(
            "openvino",
            "OpenVINO IR",
            (("xml", ".xml"), ("bin", ".bin")),
            "openvino",
            ("fp32", "fp16", "bf16", "int8"),
            native_library="OpenVINO extension",
        ),
        Format(
            "tensorrt",
            "TensorRT engine",
            (("engine", ".engine"),),
            "tensorrt",
            ("fp32", "fp16", "int8"),
            extra_suffixes=(".plan",),
        ),
    )
}


def runtime_name(name: str) -> str:
    """The one name of a runtime given any of its names ("onnxruntime" -> "ort"); GatekitError if unknown."""
    key = str(name).strip().lower()
    for r in RUNTIMES.values():
        if key == r.name or key in r.aliases:
            return r.name
    raise GatekitError(f"unknown runtime {name!r}: choose one of {', '.join(RUNTIMES)}")


def runtime_display(name: str) -> str:
    try:
        return RUNTIMES[runtime_name(name)].display
    except GatekitError:
        return str(name)


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise GatekitError(f"unknown format {name!r}: choose one of {', '.join(FORMATS)}")
    return FORMATS[name]


def format_of_runtime(runtime: str) -> Format:
    """The format a runtime loads (ort -> onnx)."""
    rt = runtime_name(runtime)
    for f in FORMATS.values():
        if f.runtime == rt:
            return f
    raise GatekitError(f"{rt} loads no exported format (it runs {', '.join(f.runtime for f in FORMATS.values())})")


def format_of_path(path: str | os.PathLike) -> Format | None:
    """The format an artifact file's suffix names, or None."""
    suffix = Path(path).suffix.lower()
    return next((f for f in FORMATS.values() if suffix in f.suffixes), None)


def manifest_name(stem: str, fmt: str) -> str:
    """`{stem}.{format}.json`: the manifest of artifact `stem` in format `fmt` (static.onnx.json)."""
    return f"{stem}.{get_format(fmt).name}{MANIFEST_SUFFIX}"


def manifest_path_of(path: str | os.PathLike) -> Path:
    """The manifest of an artifact file or, for a manifest, itself."""
    path = Path(path)
    if path.suffix == MANIFEST_SUFFIX:
        return path
    fmt = format_of_path(path)
    if fmt is None:
        known = ", ".join(s for f in FORMATS.values() for s in f.suffixes)
        raise GatekitError(f"not an artifact: {path} (expected {known} or a manifest {MANIFEST_SUFFIX})")
    return path.with_name(manifest_name(path.stem, fmt.name))


@dataclass
class Artifact:
    """An exported artifact: its manifest (and where it lies); the files sit beside it."""

    manifest_path: Path
    manifest: dict
    edited: list[str] = field(default_factory=list)  # opened with --trust-edited: how its files differ

    @property
    def format(self) -> Format:
        return get_format(self.manifest["format"])

    @property
    def runtime(self) -> str:
        return self.format.runtime

    @property
    def file(self) -> Path:
        """What the format's runtime loads (the .onnx, the .xml, the .engine)."""
        files = self.manifest["files"]
        key = self.format.files[0][0]
        return self.manifest_path.parent / (files[key] if key in files else next(iter(files.values())))

    @property
    def stem(self) -> str:
        return self.file.stem

    @property
    def native_op(self) -> dict | None:
        """What the graph's native custom ops need (None: standard ops only)."""
        return self.manifest.get("native_op")

    @property
    def fallback_file(self) -> Path | None:
        """The standard-ops twin of a native-op graph (what runs without the op library), or None."""
        key = FALLBACK_PREFIX + self.format.files[0][0]
        name = self.manifest["files"].get(key)
        return self.manifest_path.parent / name if name else None

    def path_for(self, runtime: str) -> Path:
        """What `runtime` loads: the torch reference runs the manifest, the others the artifact file."""
        rt = runtime_name(runtime)
        if rt == "torch":
            return self.manifest_path
        if self.runtime != rt:
            raise GatekitError(f"{self.file.name} is a {self.format.name} artifact; {rt} cannot run it")
        return self.file


def read_manifest(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GatekitError(f"corrupt manifest {path}: {e}") from None
    except OSError as e:
        raise GatekitError(f"cannot read manifest {path}: {e.strerror}") from None
    if not isinstance(manifest, dict) or "graph" not in manifest or "files" not in manifest:
        raise GatekitError(f"{path} is not a gatekit export manifest")
    if manifest.get("format") not in FORMATS:
        raise GatekitError(f"{path}: unknown format {manifest.get('format')!r}")
    check_manifest(manifest, path)
    return manifest


INPUT_KEYS = ("dataset", "shape", "mean", "std", "scale")  # what load_inputs reads


def check_manifest(manifest: dict, path: str | os.PathLike) -> None:
    """The fields every reader of a manifest indexes, with the types they are read as; one line naming the
    file and the field otherwise."""
    files = manifest["files"]
    if (
        not isinstance(files, dict)
        or not files
        or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in files.items())
    ):
        raise GatekitError(f"{path}: 'files' must map names to file names, got {str(files)[:60]!r}")
    if not isinstance(manifest["graph"], str):
        raise GatekitError(f"{path}: 'graph' must be a name, got {manifest['graph']!r}")
    for key in ("input", "macs", "model_config", "verification", "agreement"):
        if key in manifest and manifest[key] is not None and not isinstance(manifest[key], dict):
            raise GatekitError(f"{path}: {key!r} must be a table, got {type(manifest[key]).__name__}")
    spec = manifest.get("input")
    if spec is not None:
        missing = [k for k in INPUT_KEYS if k not in spec]
        if missing:
            raise GatekitError(f"{path}: 'input' lacks {', '.join(missing)}")
        if (
            not isinstance(spec["shape"], list)
            or len(spec["shape"]) != 4
            or not all(isinstance(d, int) for d in spec["shape"])
        ):
            raise GatekitError(f"{path}: 'input.shape' must be four integers (NCHW), got {spec['shape']!r}")


_VERIFY_FILES = True  # `--trust-edited`: read artifacts whose bytes differ from their manifest's sha256
_HASHES: dict[tuple, str] = {}  # (path, inode, size, mtime, ctime) -> sha256: a file opened twice is read once


def set_file_verification(enabled: bool) -> None:
    """Whether `open_artifact` checks the files against the manifest's sha256 (the CLI's --trust-edited)."""
    global _VERIFY_FILES
    _VERIFY_FILES = bool(enabled)


def file_sha256(path: str | os.PathLike) -> str:
    import hashlib

    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def file_problems(art: Artifact) -> list[str]:
    """How an artifact's files differ from its manifest, one line each (empty: they match). The files must be
    the ones the manifest's name implies (`{stem}.{format}.json` describes `{stem}.onnx`, never another
    artifact's file), and their bytes must match the sha256 it records. Manifests written before the sha256
    was recorded are checked by name only."""
    path, manifest = art.manifest_path, art.manifest
    f = get_format(manifest["format"])
    files = manifest["files"]
    suffix = f".{f.name}{MANIFEST_SUFFIX}"
    if path.name.endswith(suffix) and len(path.name) > len(suffix):
        expected = f.file_names(path.name[: -len(suffix)], fallback=any(k.startswith(FALLBACK_PREFIX) for k in files))
        for key, name in files.items():
            if expected.get(key) != name:
                return [
                    f"{path}: 'files.{key}' points at {name!r}, "
                    f"not at this manifest's {expected.get(key, 'artifact')!r}"
                ]
    recorded = manifest.get("sha256")
    if recorded is None:
        return []
    if not isinstance(recorded, dict):
        raise GatekitError(f"{path}: 'sha256' must be a table, got {type(recorded).__name__}")
    problems = []
    for key, name in files.items():
        file = path.parent / name
        if not file.is_file():
            raise GatekitError(f"{file}: missing (listed in {path.name} as 'files.{key}')")
        if not isinstance(recorded.get(key), str):
            problems.append(f"{path}: 'sha256' has no hash for {key!r} ({file.name} is unverified)")
        elif file_sha256(file) != recorded[key]:
            problems.append(f"{file}: its bytes do not match the sha256 in {path.name} (changed after export)")
    return problems


def open_artifact(path: str | os.PathLike, verify: bool | None = None) -> Artifact:
    """An artifact file (.onnx, .xml, .engine) or its manifest (.json). Its files are checked against the
    manifest (`file_problems`) and the first difference refused in one line, unless `verify` is False
    (default: on; off after set_file_verification(False), the CLI's --trust-edited), when the differences
    are kept in `Artifact.edited` (bench records them)."""
    path = Path(path)
    manifest_path = manifest_path_of(path)
    if not manifest_path.is_file():
        interrupted = "; an interrupted export leaves none: export again" if path.is_file() else ""
        raise GatekitError(
            f"no manifest for {path}: expected {manifest_path} (written by `gatekit export`{interrupted})"
        )
    art = Artifact(manifest_path, read_manifest(manifest_path))
    art.edited = file_problems(art)
    if art.edited and (_VERIFY_FILES if verify is None else verify):
        raise GatekitError(
            f"{art.edited[0]}: refused; export it again, or pass --trust-edited if you edited it on purpose"
        )
    return art


def find_manifests(directory: str | os.PathLike) -> list[Path]:
    """The export manifests in a directory, sorted."""
    names = {manifest_name("x", f)[1:] for f in FORMATS}  # ".onnx.json", ...
    return sorted(p for p in Path(directory).glob(f"*{MANIFEST_SUFFIX}") if any(p.name.endswith(n) for n in names))


def load_inputs(manifest: dict, count: int, data_dir: str | None = None) -> tuple[np.ndarray, str]:
    """The first `count` real test images of the artifact's dataset, normalised as its manifest says."""
    from gatekit.data import load_dataset

    spec = manifest.get("input")
    if not isinstance(spec, dict):
        raise GatekitError(
            "the export manifest has no 'input' (dataset, shape, normalisation): its test images are unknown"
        )
    data_dir = data_dir or recorded_dir(spec.get("data_dir"))  # where the exporter read it; else $GATEKIT_DATA
    # images of another size are resized as the exporter resized them (e.g. CIFAR-10 upscaled to 96 px)
    data = load_dataset(spec["dataset"], "test", data_dir, limit=count, image_size=spec["shape"][-1])
    return normalize_images(data.images, spec["mean"], spec["std"], spec["scale"]), data.name


def publish(out_dir: str | os.PathLike, stem: str, fmt: str, staged: dict[str, Path], manifest: dict) -> Path:
    """Moves an artifact's staged files (manifest "files" key -> a path in a temporary directory on the
    same file system) into `out_dir` under the format's names and writes its manifest, with the sha256 of
    each file; returns the manifest's path. The one place an artifact and its manifest are written.

    A pair is never left mixed: the old manifest is removed before the first file is replaced, and the new
    one is written (atomically) after the last. A failure in between leaves the files without a manifest,
    which `open_artifact` refuses ("no manifest ... export again"); and a manifest beside files other than
    the ones it hashed is refused by `file_problems` whatever happens to the directory later."""
    from gatekit.atomic import write_json

    f = get_format(fmt)
    names = f.file_names(stem, fallback=any(k.startswith(FALLBACK_PREFIX) for k in staged))
    if set(staged) != set(names):
        raise GatekitError(f"a {f.name} artifact has files {sorted(names)}, got {sorted(staged)}")
    out = Path(out_dir)
    manifest["files"] = names
    manifest["sha256"] = {key: file_sha256(staged[key]) for key in names}
    path = out / manifest_name(stem, f.name)
    if path.exists():
        path.unlink()  # from here until the new manifest is written, the stem has no manifest: never a mix
    for key in sorted(names, key=lambda k: (k == f.files[0][0], k)):  # the loaded file last: an .xml never
        os.replace(staged[key], out / names[key])  # points at a missing .bin
    write_json(path, manifest)
    return path
