"""OpenVINO: the CPU plugin (and GPU where present), with the inference precision pinned and read back.

On CPUs with avx512_bf16 (Sapphire Rapids Xeons, Zen 4 EPYCs), OpenVINO silently infers in bf16 unless
INFERENCE_PRECISION_HINT is f32. So fp32 is always requested explicitly, and the precision the
compiled model actually uses is read back and reported (an fp32 request that comes back otherwise fails).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gatekit import native_ops
from gatekit.errors import GatekitError
from gatekit.runtimes.base import Backend, Runner, RuntimeInfo, Session, as_input, one_line

# gatekit precision -> INFERENCE_PRECISION_HINT. int8 comes from a quantized IR (FakeQuantize); the layers it
# leaves in float are pinned to f32, so that an int8 figure is int8 and not int8 mixed with bf16.
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
READ_BACK = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}  # ov.Type name -> gatekit precision


def compile_config(precision: str = "fp32", threads: int | None = None, device: str = "CPU") -> dict:
    """The compile_model properties gatekit measures with: one stream, latency hint, the inference precision
    pinned, and (on CPU) `threads` threads."""
    config: dict = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": HINTS[precision]}
    if threads and device.startswith("CPU"):
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


class OpenVinoSession(Session):
    """A compiled model with one infer request, reused for every run."""

    def __init__(self, compiled, info: RuntimeInfo):
        self.compiled = compiled  # the underlying openvino.CompiledModel
        self._request = compiled.create_infer_request()
        self._bound = None  # the ov.Tensor a runner last set as the request's input
        self.info = info
        shape = compiled.input(0).get_partial_shape()
        self.input_shape = tuple(d.get_length() if d.is_static else -1 for d in shape)

    def runner(self, x: np.ndarray):
        """`x` wrapped once as an ov.Tensor sharing its memory; a call sets it as the input unless it is the one
        set last (setting a tensor costs the plugin tens of microseconds even when it is the same one), then infers: no
        dict, no conversion, no output copy, as benchmark_app's synchronous loop does."""
        import openvino as ov

        tensor = ov.Tensor(as_input(x, self.input_shape), shared_memory=True)
        request = self._request

        def call():
            if self._bound is not tensor:
                request.set_input_tensor(0, tensor)
                self._bound = tensor
            request.infer()

        return Runner(call, lambda: np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True))

    def run(self, x: np.ndarray) -> np.ndarray:
        # The request blocks until done, so the input can be shared; the output is copied out once.
        self._bound = None  # infer(dict) binds its own input
        self._request.infer({0: as_input(x, self.input_shape)}, share_inputs=True, share_outputs=True)
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32, copy=True)


def _precision_of(hint) -> str:
    """The gatekit name of an INFERENCE_PRECISION_HINT value read back from a compiled model."""
    name = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint).lower()
    return READ_BACK.get(name, name)


class OpenVinoBackend(Backend):
    name = "openvino"
    install_hint = "OpenVINO is not installed: `pip install openvino`"
    modules = ("openvino",)

    def version(self) -> str:
        import openvino as ov

        return ov.get_version()

    def load(
        self,
        path: str | os.PathLike,
        *,
        threads: int | None = None,
        precision: str = "fp32",
        device: str | None = None,
        extensions: tuple[str, ...] = (),
    ) -> Session:
        """Reads an IR (.xml + .bin) and compiles it for latency: one stream, pinned precision."""
        import openvino as ov

        if precision not in HINTS:
            raise GatekitError(f"OpenVINO precision must be one of {', '.join(HINTS)}, got {precision}")
        device = (device or "CPU").upper()
        core = ov.Core()
        devices = core.available_devices
        if device not in devices and not any(d.startswith(device + ".") for d in devices):
            raise GatekitError(f"OpenVINO has no {device} device here (available: {', '.join(devices)})")
        for ext in extensions:  # gatekit's op extension, checked against its build record first
            if not Path(ext).is_file():
                raise GatekitError(f"no OpenVINO extension library at {ext}")
            native_ops.check_for_load("openvino", ext)
            try:
                core.add_extension(str(ext))
            except Exception as e:
                raise GatekitError(f"OpenVINO cannot load the extension {ext}: {one_line(e)}") from None
        path = Path(path)
        if not path.is_file():
            raise GatekitError(f"no OpenVINO IR at {path}")
        config = compile_config(precision, threads, device)
        on_cpu = device.startswith("CPU")
        try:
            model = core.read_model(str(path))
        except Exception as e:
            raise GatekitError(f"OpenVINO cannot read {path}: {one_line(e)}") from None
        if extensions and path.suffix == ".onnx":  # an IR from gatekit export carries this already
            from gatekit.runtimes.openvino_layout import with_blocked_feeders

            model = with_blocked_feeders(core, model)
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise GatekitError(
                f"{path.name} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                "gatekit runs graphs with one of each"
            )
        try:
            compiled = core.compile_model(model, device, config)
        except Exception as e:  # plugin errors are multi-line; the line naming what is unsupported helps most
            lines = [x.strip() for x in str(e).splitlines() if x.strip()]
            useful = [x for x in lines if "support" in x.lower() or "not implemented" in x.lower()] or lines
            raise GatekitError(
                f"OpenVINO cannot compile {path.name} on {device}: {(useful or [type(e).__name__])[0][:300]}"
            ) from None
        used = _precision_of(compiled.get_property("INFERENCE_PRECISION_HINT"))
        want = "fp32" if precision == "int8" else precision
        if used != want:
            raise GatekitError(f"OpenVINO was asked for {want} but compiled {path.name} for {used} on {device}")
        if precision == "int8":
            used = "int8"
        read_threads = int(compiled.get_property("INFERENCE_NUM_THREADS")) if on_cpu else None
        info = RuntimeInfo(
            "openvino", ov.get_version(), device, f"{device} plugin", read_threads or threads or None, used
        )
        return OpenVinoSession(compiled, info)
