"""Runtimes: one small interface over ONNX Runtime, OpenVINO and TensorRT. Imports without torch."""

from __future__ import annotations

from pathlib import Path

from gatekit.errors import GatekitError
from gatekit.runtimes.base import Backend, RuntimeInfo, Session
from gatekit.runtimes.onnxruntime_backend import OrtBackend
from gatekit.runtimes.openvino_backend import OpenVinoBackend
from gatekit.runtimes.tensorrt_backend import TensorRTBackend
from gatekit.runtimes.torch_backend import TorchBackend

BACKENDS: dict[str, Backend] = {"torch": TorchBackend(), "ort": OrtBackend(), "openvino": OpenVinoBackend(),
                                "tensorrt": TensorRTBackend()}
ALIASES = {"onnxruntime": "ort", "ov": "openvino", "trt": "tensorrt"}
SUFFIXES = {".onnx": "ort", ".xml": "openvino", ".engine": "tensorrt", ".plan": "tensorrt", ".json": "torch"}


def get_backend(name: str) -> Backend:
    key = ALIASES.get(name, name)
    if key not in BACKENDS:
        raise GatekitError(f"unknown runtime {name!r}: choose one of {', '.join(BACKENDS)}")
    backend = BACKENDS[key]
    if not backend.available():
        hint = backend.install_hint
        raise GatekitError(hint if hint.startswith(("TensorRT", "ONNX", "OpenVINO")) else f"{key} is not installed: {hint}")
    return backend


def available_backends() -> list[str]:
    return [name for name, b in BACKENDS.items() if b.available()]


def load_session(path: str | Path, runtime: str | None = None, **kwargs) -> Session:
    """Loads an artifact; the runtime defaults to the one its suffix implies."""
    path = Path(path)
    if runtime is None:
        if path.suffix not in SUFFIXES:
            raise GatekitError(f"cannot tell the runtime of {path.name}: pass --runtime")
        runtime = SUFFIXES[path.suffix]
    return get_backend(runtime).load(path, **kwargs)


__all__ = ["BACKENDS", "Backend", "RuntimeInfo", "Session", "available_backends", "get_backend", "load_session"]
