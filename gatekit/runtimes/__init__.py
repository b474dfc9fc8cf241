"""Runtimes: one small interface over ONNX Runtime, OpenVINO and TensorRT. Imports with numpy alone.

    from gatekit.runtimes import load_session
    with load_session("artifacts/static.onnx", threads=1) as s:   # the format table (gatekit.artifacts)
        y = s.run(x)                                               # says which runtime loads a file
        print(s.info.to_dict())

Each backend imports its runtime only when asked, so a device carries just the one it uses. The torch
reference runtime of `gatekit bench` lives on the training side (`gatekit.export.reference`): it is
found by name, through the `gatekit.reference_runtimes` entry point, only when "torch" is asked for.
"""

from __future__ import annotations

import os
from pathlib import Path

from gatekit.artifacts import (
    FALLBACK,
    FORMATS,
    MANIFEST_SUFFIX,
    NATIVE,
    RUNTIMES,
    Artifact,
    format_of_path,
    runtime_name,
)
from gatekit.errors import GatekitError
from gatekit.runtimes.base import Backend, RuntimeInfo, Session
from gatekit.runtimes.onnxruntime_backend import OrtBackend
from gatekit.runtimes.openvino_backend import OpenVinoBackend
from gatekit.runtimes.tensorrt_backend import TensorRTBackend

BACKENDS: dict[str, Backend] = {b.name: b for b in (OrtBackend(), OpenVinoBackend(), TensorRTBackend())}
REFERENCE_GROUP = "gatekit.reference_runtimes"  # entry points: name -> Backend class (training side)


def _reference_backend(name: str) -> Backend:
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group=REFERENCE_GROUP) if ep.name == name]
    if not found:
        raise GatekitError(
            f"the {name} reference runtime is not installed here (it comes with `pip install gatekit[train]`)"
        )
    try:
        return found[0].load()()
    except ImportError as e:
        raise GatekitError(
            f"the {name} reference runtime needs the training side: {e} (`pip install gatekit[train]`)"
        ) from None


def get_backend(name: str) -> Backend:
    """The backend called `name` (or an alias); GatekitError if unknown or not installed here."""
    key = runtime_name(name)
    backend = BACKENDS.get(key) or _reference_backend(key)
    if not backend.available():
        hint = backend.install_hint
        raise GatekitError(hint if "not installed" in hint else f"{key} is not installed: {hint}")
    return backend


def available_backends() -> list[str]:
    """The deploy runtimes installed here, in the order of BACKENDS."""
    return [name for name, b in BACKENDS.items() if b.available()]


def available_formats(formats=tuple(FORMATS)) -> list[str]:
    """The artifact formats among `formats` whose runtime is installed here."""
    have = set(available_backends())
    return [f for f in formats if FORMATS[f].runtime in have]


def runtime_for(path: str | os.PathLike) -> str:
    """The runtime an artifact's suffix implies (a manifest .json: the torch reference)."""
    if Path(path).suffix.lower() == MANIFEST_SUFFIX:
        return "torch"
    fmt = format_of_path(path)
    if fmt is None:
        known = ", ".join(s for f in FORMATS.values() for s in f.suffixes)
        raise GatekitError(
            f"cannot tell the runtime of {Path(path).name} from its suffix ({known}): name it with --runtime"
        )
    return fmt.runtime


def load_session(path: str | os.PathLike, runtime: str | None = None, **kwargs) -> Session:
    """Loads an artifact on `runtime`, by default the one its suffix implies. kwargs go to Backend.load
    (threads, precision, device, extensions)."""
    backend = get_backend(runtime or runtime_for(path))
    if not Path(path).is_file():
        raise GatekitError(f"no such file: {path}")
    return backend.load(path, **kwargs)


OPS_CHOICES = ("auto", "native", "fallback")


def load_artifact(art: Artifact, runtime: str | None = None, *, ops: str = "auto", **kwargs) -> Session:
    """Loads an exported artifact (its manifest says what it needs) on `runtime` (default: its own).

    A graph with native custom ops (`gatekit.GatedBlockWithGate[AndShortcut]`, `gatekit.GatedBlock`, their `...Int8`
    forms) runs on the op library built for the installed runtime (`gatekit ops build`), once its bytes match its
    build record; where there is none, it was refused (damaged, unrecorded, built for another runtime version) or,
    for the int8 ops, it has none of them, `ops="auto"` runs its standard-ops fallback (a refusal also says so in one
    warning line) and `ops="native"` refuses in one line. The session's `info.ops` says which path ran,
    `info.ops_isa` which kernel path the library ran and `info.ops_reason` why a fallback ran. A GATEKIT_OPS_ISA the
    library cannot run is refused in one line."""
    from gatekit import native_ops

    if ops not in OPS_CHOICES:
        raise GatekitError(f"ops must be one of {', '.join(OPS_CHOICES)}, got {ops!r}")
    rt = runtime_name(runtime or art.runtime)
    path = art.path_for(rt)
    if rt == "torch" or not art.native_op:
        return load_session(path, rt, **kwargs)
    refused = None
    if ops != "fallback":
        lib, refused = native_ops.find_library(rt)
        int8 = [op.split(".", 1)[-1] for op in art.native_op.get("ops") or [] if str(op).endswith("Int8")]
        if lib is not None and int8:  # a library built from older sources runs the fp32 ops only
            from gatekit.runtimes.native_probe import library_runs

            if not library_runs(rt, lib, int8):
                if ops == "native":
                    raise GatekitError(
                        f"{path.name} needs gatekit's int8 ops ({', '.join(int8)}), and the op library "
                        f"for {rt} here ({lib}) has none: rebuild it with `gatekit ops build`"
                    )
                refused = native_ops.NativeOpsError(
                    f"{lib} has none of the int8 ops {', '.join(int8)}: rebuild it with `gatekit ops build`",
                    "no int8 ops",
                )
                lib = None
        if lib is not None:  # the backend checks GATEKIT_OPS_ISA against the library before loading it
            session = load_session(path, rt, extensions=(str(lib),), **kwargs)
            session.info.ops, session.info.ops_library = NATIVE, str(lib)
            session.info.ops_isa = native_ops.loaded_isa(lib)
            return session
        if ops == "native":
            if refused.state != "missing":
                raise GatekitError(f"{path.name} needs gatekit's native op library for {rt}: {refused}")
            raise GatekitError(
                f"{path.name} needs gatekit's native op library for {rt} "
                f"{native_ops.runtime_versions().get(RUNTIMES[rt].package)}, and none is built here: "
                "run `gatekit ops build` (`gatekit ops status` says why one is missing)"
            )
        native_ops.warn_refused(refused)
    fallback = art.fallback_file
    if fallback is None or not fallback.is_file():
        raise GatekitError(f"{path.name} has no standard-ops fallback beside it (expected in its manifest's files)")
    session = load_session(fallback, rt, **kwargs)
    session.info.ops = FALLBACK
    session.info.ops_reason = str(refused) if refused is not None else None
    return session


__all__ = [
    "OPS_CHOICES",
    "load_artifact",
    "BACKENDS",
    "RUNTIMES",
    "Backend",
    "RuntimeInfo",
    "Session",
    "available_backends",
    "available_formats",
    "get_backend",
    "load_session",
    "runtime_for",
]
