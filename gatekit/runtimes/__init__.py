"""Runtimes: one small interface over ONNX Runtime, OpenVINO and TensorRT. Imports with numpy alone.

    from gatekit.runtimes import load_session
    with load_session("artifacts/static.onnx", threads=1) as s:   # .onnx -> ort, .xml -> openvino,
        y = s.run(x)                                               # .engine/.plan -> tensorrt
        print(s.info.to_dict())

Each backend imports its runtime only when asked, so a device carries just the one it uses. The torch
reference runtime of `gatekit bench` ("torch", an export manifest .json) is reachable by name too; it
needs torch and is not one of the deploy runtimes.
"""

from __future__ import annotations

import os
from pathlib import Path

from gatekit.errors import GatekitError
from gatekit.runtimes.base import Backend, RuntimeInfo, Session
from gatekit.runtimes.onnxruntime_backend import OrtBackend
from gatekit.runtimes.openvino_backend import OpenVinoBackend
from gatekit.runtimes.tensorrt_backend import TensorRTBackend
from gatekit.runtimes.torch_backend import TorchBackend

BACKENDS: dict[str, Backend] = {"ort": OrtBackend(), "openvino": OpenVinoBackend(), "tensorrt": TensorRTBackend()}
REFERENCE: dict[str, Backend] = {"torch": TorchBackend()}  # bench's reference; training side, not deploy
ALIASES = {"onnxruntime": "ort", "ov": "openvino", "trt": "tensorrt"}
SUFFIXES = {".onnx": "ort", ".xml": "openvino", ".engine": "tensorrt", ".plan": "tensorrt", ".json": "torch"}


def get_backend(name: str) -> Backend:
    """The backend called `name` (or an alias); GatekitError if unknown or not installed here."""
    key = ALIASES.get(name.lower(), name.lower())
    backend = BACKENDS.get(key) or REFERENCE.get(key)
    if backend is None:
        raise GatekitError(f"unknown runtime {name!r}: choose one of {', '.join(BACKENDS)} (or torch, the reference)")
    if not backend.available():
        hint = backend.install_hint
        raise GatekitError(hint if "not installed" in hint else f"{key} is not installed: {hint}")
    return backend


def available_backends() -> list[str]:
    """The deploy runtimes installed here, in the order of BACKENDS."""
    return [name for name, b in BACKENDS.items() if b.available()]


FORMAT_RUNTIME = {"onnx": "ort", "openvino": "openvino", "tensorrt": "tensorrt"}  # artifact format -> its runtime


def available_formats(formats=tuple(FORMAT_RUNTIME)) -> list[str]:
    """The artifact formats among `formats` whose runtime is installed here."""
    have = set(available_backends())
    return [f for f in formats if FORMAT_RUNTIME[f] in have]


def runtime_for(path: str | os.PathLike) -> str:
    """The runtime an artifact's suffix implies."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise GatekitError(f"cannot tell the runtime of {Path(path).name} from its suffix "
                           f"({', '.join(SUFFIXES)}): name it with --runtime")
    return SUFFIXES[suffix]


def load_session(path: str | os.PathLike, runtime: str | None = None, **kwargs) -> Session:
    """Loads an artifact on `runtime`, by default the one its suffix implies. kwargs go to Backend.load
    (threads, precision, device, extensions)."""
    backend = get_backend(runtime or runtime_for(path))
    if not Path(path).is_file():
        raise GatekitError(f"no such file: {path}")
    return backend.load(path, **kwargs)


__all__ = ["ALIASES", "BACKENDS", "FORMAT_RUNTIME", "available_formats", "Backend", "RuntimeInfo", "SUFFIXES", "Session", "available_backends",
           "get_backend", "load_session", "runtime_for"]
