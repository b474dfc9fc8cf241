"""ONNX Runtime: the CPU execution provider, and the CUDA and TensorRT providers where installed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gatekit import native_ops
from gatekit.errors import GatekitError
from gatekit.runtimes.base import Backend, Runner, RuntimeInfo, Session, as_input, one_line

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
# The CPU and CUDA providers run the graph in the precision it was exported in; the TensorRT provider can
# lower an fp32 graph to fp16 (trt_fp16_enable).
# int8: a quantized (QDQ) graph, which every provider runs as it was quantized.
DEVICE_PRECISIONS = {"cpu": ("fp32", "int8"), "cuda": ("fp32", "int8"), "tensorrt": ("fp32", "fp16", "int8")}


class OrtSession(Session):
    """An `onnxruntime.InferenceSession` with one input and one output."""

    def __init__(self, sess, info: RuntimeInfo):
        self.session = sess  # the underlying InferenceSession
        self.info = info
        inp = sess.get_inputs()[0]
        self._input = inp.name
        self._output = [sess.get_outputs()[0].name]
        self.input_shape = tuple(d if isinstance(d, int) else -1 for d in inp.shape)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(self._output, {self._input: as_input(x, self.input_shape)})[0]

    def runner(self, x: np.ndarray):
        """An IOBinding with `x` bound as the input and a preallocated output: each call is one
        run_with_iobinding, no per-call feeds dict, name lookups or output arrays."""
        import onnxruntime as ort

        x = as_input(x, self.input_shape)
        binding = self.session.io_binding()
        binding.bind_cpu_input(self._input, x)
        shape = [
            x.shape[0] if not isinstance(d, int) and i == 0 else d
            for i, d in enumerate(self.session.get_outputs()[0].shape)
        ]
        if all(isinstance(d, int) for d in shape):
            out = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32)
            binding.bind_ortvalue_output(self._output[0], out)
        else:  # an output dimension the graph does not fix: ORT allocates it
            binding.bind_output(self._output[0])
        run = self.session.run_with_iobinding

        def call():
            run(binding)  # `binding` holds x's buffer and the output's

        return Runner(call, lambda: np.array(binding.copy_outputs_to_cpu()[0], dtype=np.float32))


class OrtBackend(Backend):
    name = "ort"
    install_hint = (
        "ONNX Runtime is not installed: `pip install onnxruntime` "
        "(or `pip install onnxruntime-gpu` for the CUDA and TensorRT providers)"
    )
    modules = ("onnxruntime",)

    def load(
        self,
        path: str | os.PathLike,
        *,
        threads: int | None = None,
        precision: str = "fp32",
        device: str | None = None,
        extensions: tuple[str, ...] = (),
    ) -> Session:
        """Loads an .onnx file on `device` ("cpu", "cuda" or "tensorrt"), fully optimized, sequential."""
        import onnxruntime as ort

        device = (device or "cpu").lower()
        if device not in PROVIDERS:
            raise GatekitError(f"unknown ONNX Runtime device {device!r}: choose one of {', '.join(PROVIDERS)}")
        if precision not in DEVICE_PRECISIONS[device]:
            raise GatekitError(
                f"ONNX Runtime's {PROVIDERS[device]} runs {' or '.join(DEVICE_PRECISIONS[device])}, not {precision}"
            )
        provider = PROVIDERS[device]
        have = ort.get_available_providers()
        if provider not in have:
            raise GatekitError(
                f"this ONNX Runtime has no {provider} (it has {', '.join(have)}): "
                "`pip install onnxruntime-gpu` on a machine with an NVIDIA GPU"
            )
        path = Path(path)
        if not path.is_file():
            raise GatekitError(f"no ONNX model at {path}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.log_severity_level = 3  # errors only
        for lib in extensions:  # custom-op libraries: gatekit's, checked against their build record first
            native_ops.check_for_load("ort", lib)
            try:
                opts.register_custom_ops_library(str(lib))
            except Exception as e:
                raise GatekitError(f"ONNX Runtime cannot load the custom-op library {lib}: {one_line(e)}") from None
        providers: list = [provider]
        if device == "tensorrt":
            providers = [
                (provider, {"trt_fp16_enable": precision == "fp16", "trt_int8_enable": precision == "int8"}),
                "CUDAExecutionProvider",
            ]
        try:
            sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as e:  # ORT raises its own exception types for unreadable or unsupported models
            raise GatekitError(f"ONNX Runtime cannot load {path}: {one_line(e)}") from None
        if len(sess.get_inputs()) != 1 or len(sess.get_outputs()) != 1:
            raise GatekitError(
                f"{path.name} has {len(sess.get_inputs())} inputs and {len(sess.get_outputs())} "
                "outputs; gatekit runs graphs with one of each"
            )
        info = RuntimeInfo("ort", ort.__version__, device, sess.get_providers()[0], threads or None, precision)
        return OrtSession(sess, info)
