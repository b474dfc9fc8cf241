"""TensorRT: runs serialized engines (TensorRT 10 Python API) with device buffers from cuda-python.

Engines are specific to the GPU model and TensorRT version that built them: build them on the device
that runs them (`gatekit export --format tensorrt` there). Needs an NVIDIA GPU, `tensorrt` and
`cuda-python` (`pip install gatekit[tensorrt]`, or JetPack's TensorRT on a Jetson).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gatekit.errors import GatekitError
from gatekit.runtimes.base import Backend, RuntimeInfo, Session

INSTALL_HINT = ("TensorRT is not installed: use a machine with an NVIDIA GPU and `pip install gatekit[tensorrt]` "
                "(or JetPack's TensorRT on Jetson)")


def _cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart  # older cuda-python
    return cudart


def _check(result):
    """cuda-python returns (err, *values); raise on an error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    code = int(err) if not hasattr(err, "value") else int(err.value)
    if code != 0:
        raise GatekitError(f"CUDA error {getattr(err, 'name', code)}")
    return values[0] if len(values) == 1 else values


class TensorRTSession(Session):
    def __init__(self, engine_bytes: bytes, precision: str):
        import tensorrt as trt

        self._trt = trt
        self._cudart = _cudart()
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            raise GatekitError("TensorRT could not deserialize the engine (built for another GPU or TensorRT version?)")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._input = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self._output = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.input_shape = tuple(self._engine.get_tensor_shape(self._input))
        self._stream = _check(self._cudart.cudaStreamCreate())
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (pointer, bytes)
        props = _check(self._cudart.cudaGetDeviceProperties(0))
        device = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        self.info = RuntimeInfo("tensorrt", trt.__version__, device.strip("\x00"), "TensorRT", None, precision)

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self._cudart.cudaFree(ptr))
            ptr = _check(self._cudart.cudaMalloc(nbytes))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, x: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._context.set_input_shape(self._input, x.shape)
        out_shape = tuple(self._context.get_tensor_shape(self._output))
        out = np.empty(out_shape, dtype=np.float32)
        d_in, d_out = self._buffer(self._input, x.nbytes), self._buffer(self._output, out.nbytes)
        _check(cudart.cudaMemcpyAsync(d_in, x.ctypes.data, x.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream))
        self._context.set_tensor_address(self._input, d_in)
        self._context.set_tensor_address(self._output, d_out)
        if not self._context.execute_async_v3(self._stream):
            raise GatekitError("TensorRT execution failed")
        _check(cudart.cudaMemcpyAsync(out.ctypes.data, d_out, out.nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream))
        _check(cudart.cudaStreamSynchronize(self._stream))
        return out

    def close(self) -> None:
        for ptr, _ in self._buffers.values():
            self._cudart.cudaFree(ptr)
        self._buffers.clear()
        if self._stream is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None


class TensorRTBackend(Backend):
    name = "tensorrt"
    install_hint = INSTALL_HINT
    modules = ("tensorrt",)

    def available(self) -> bool:
        try:
            import tensorrt  # noqa: F401

            _cudart()  # cuda-python under either of its module names
        except ImportError:
            return False
        return True

    def load(self, path, *, threads=None, precision="fp32", device=None, extensions=()) -> Session:
        if not self.available():
            raise GatekitError(INSTALL_HINT)
        path = Path(path)
        if not path.is_file():
            raise GatekitError(f"no TensorRT engine at {path}")
        return TensorRTSession(path.read_bytes(), precision)
