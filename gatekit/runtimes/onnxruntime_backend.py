"""ONNX Runtime: the CPU execution provider, and the CUDA and TensorRT providers where installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gatekit.errors import GatekitError
from gatekit.runtimes.base import Backend, RuntimeInfo, Session

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


class OrtSession(Session):
    def __init__(self, sess, info: RuntimeInfo):
        self._sess = sess
        self.info = info
        inp = sess.get_inputs()[0]
        self._input = inp.name
        self._output = sess.get_outputs()[0].name
        self.input_shape = tuple(d if isinstance(d, int) else -1 for d in inp.shape)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self._sess.run([self._output], {self._input: np.ascontiguousarray(x, dtype=np.float32)})[0]


class OrtBackend(Backend):
    name = "ort"
    install_hint = "pip install onnxruntime (or onnxruntime-gpu for the CUDA and TensorRT providers)"
    modules = ("onnxruntime",)

    def load(self, path, *, threads=None, precision="fp32", device=None, extensions=()) -> Session:
        import onnxruntime as ort

        device = device or "cpu"
        if device not in PROVIDERS:
            raise GatekitError(f"unknown ORT device {device!r}: choose one of {', '.join(PROVIDERS)}")
        provider = PROVIDERS[device]
        if provider not in ort.get_available_providers():
            raise GatekitError(f"ONNX Runtime here has no {provider}: pip install onnxruntime-gpu on a machine with an NVIDIA GPU")
        if device == "cpu" and precision != "fp32":
            raise GatekitError(f"ONNX Runtime's CPU provider runs the graph as exported (fp32), not {precision}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        providers: list = [provider]
        if device == "tensorrt":
            providers = [(provider, {"trt_fp16_enable": precision == "fp16"}), "CUDAExecutionProvider"]
        path = Path(path)
        if not path.is_file():
            raise GatekitError(f"no ONNX model at {path}")
        try:
            sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as e:  # ORT raises its own exception types for unreadable models
            raise GatekitError(f"ONNX Runtime cannot load {path}: {str(e).splitlines()[0][:300]}") from None
        info = RuntimeInfo("onnxruntime", ort.__version__, device, sess.get_providers()[0], threads, precision)
        return OrtSession(sess, info)
