"""OpenVINO: the CPU plugin (and GPU where present), with the precision pinned and read back.

On CPUs with avx512_bf16, OpenVINO silently infers in bf16 unless INFERENCE_PRECISION_HINT is f32, so
fp32 is always requested explicitly and the precision actually used is read back from the compiled model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gatekit.errors import GatekitError
from gatekit.runtimes.base import Backend, RuntimeInfo, Session

HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
READ_BACK = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


class OpenVinoSession(Session):
    def __init__(self, compiled, info: RuntimeInfo):
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self.info = info
        shape = compiled.input(0).get_partial_shape()
        self.input_shape = tuple(d.get_length() if d.is_static else -1 for d in shape)

    def run(self, x: np.ndarray) -> np.ndarray:
        self._request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return np.array(self._request.get_output_tensor(0).data, copy=True)


class OpenVinoBackend(Backend):
    name = "openvino"
    install_hint = "pip install openvino"
    modules = ("openvino",)

    def version(self) -> str:
        import openvino as ov

        return ov.get_version()

    def load(self, path, *, threads=None, precision="fp32", device=None, extensions=()) -> Session:
        import openvino as ov

        if precision not in HINTS:
            raise GatekitError(f"OpenVINO precision must be one of {', '.join(HINTS)}, got {precision}")
        device = (device or "CPU").upper()
        core = ov.Core()
        if device not in core.available_devices:
            raise GatekitError(f"OpenVINO has no {device} device here (available: {', '.join(core.available_devices)})")
        for ext in extensions:
            core.add_extension(str(ext))
        path = Path(path)
        if not path.is_file():
            raise GatekitError(f"no OpenVINO IR at {path}")
        config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": HINTS[precision]}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            compiled = core.compile_model(core.read_model(str(path)), device, config)
        except Exception as e:  # OpenVINO raises RuntimeError with multi-line plugin messages
            lines = [x.strip() for x in str(e).splitlines() if x.strip()]
            useful = [x for x in lines if "support" in x.lower() or "not implemented" in x.lower()] or lines or [type(e).__name__]
            raise GatekitError(f"OpenVINO cannot compile {path.name} on {device}: {useful[0][:300]}") from None
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        used = READ_BACK.get(hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint).lower(), str(hint))
        if used != precision:
            raise GatekitError(f"OpenVINO was asked for {precision} but compiled {path.name} for {used}")
        read_threads = int(compiled.get_property("INFERENCE_NUM_THREADS")) if device == "CPU" else threads
        info = RuntimeInfo("openvino", ov.get_version(), device, f"{device} plugin", read_threads, used)
        return OpenVinoSession(compiled, info)
