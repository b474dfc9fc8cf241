"""TensorRT: runs serialized engines (TensorRT 10+ Python API) with device buffers from cuda-python.

Engines are specific to the GPU model and TensorRT version that built them: build them on the device
that runs them (`gatekit export --format tensorrt` there). Needs an NVIDIA GPU, `tensorrt` and
`cuda-python` (`pip install gatekit[tensorrt]`, or JetPack's TensorRT on a Jetson).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from gatekit.errors import GatekitError
from gatekit.runtimes.base import Backend, RuntimeInfo, Session, as_input, one_line

INSTALL_HINT = (
    "TensorRT is not installed: use a machine with an NVIDIA GPU and `pip install gatekit[tensorrt]` "
    "(or JetPack's TensorRT on Jetson)"
)


def load_cudart():
    """cuda-python's runtime module under its current name, or the pre-12.6 one."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart
    return cudart


def cuda_check(result, what: str = "CUDA call"):
    """cuda-python returns (error, *values): raises GatekitError on an error, else returns the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(getattr(err, "value", err)) != 0:
        raise GatekitError(f"{what} failed: {getattr(err, 'name', err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def device_index(device: str | int | None) -> int:
    """The CUDA device ordinal of None, 0, "0", "cuda", "cuda:1" or "gpu:1"."""
    if device is None or isinstance(device, int):
        return int(device or 0)
    name, _, index = str(device).lower().partition(":")
    if name.isdigit() and not index:
        return int(name)
    if name in ("cuda", "gpu") and (not index or index.isdigit()):
        return int(index or 0)
    raise GatekitError(f"TensorRT device must be cuda or cuda:N, got {device!r}")


def device_name(cudart, index: int) -> str:
    """The GPU's marketing name, e.g. 'NVIDIA H100 80GB HBM3'."""
    props = cuda_check(cudart.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = props.name
    return (name.decode(errors="replace") if isinstance(name, (bytes, bytearray)) else str(name)).strip("\x00 ")


class TensorRTSession(Session):
    """One deserialized engine, one execution context, one stream; device buffers reused across runs."""

    def __init__(self, engine_bytes: bytes, precision: str, device: int):
        import tensorrt as trt

        self._cudart = cudart = load_cudart()
        self._stream = None
        self._buffers: dict[str, tuple[int, int]] = {}  # tensor name -> (device pointer, bytes)
        self._shape: tuple[int, ...] | None = None  # the input shape the context is set up for
        self._out_shape: tuple[int, ...] = ()
        cuda_check(cudart.cudaSetDevice(device), f"cudaSetDevice({device})")
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        try:
            self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        except Exception as e:  # some versions raise instead of returning None
            raise GatekitError(f"TensorRT cannot deserialize the engine: {one_line(e)}") from None
        if self._engine is None:
            raise GatekitError(
                "TensorRT cannot deserialize the engine: it was built for another GPU model "
                f"or TensorRT version (this is TensorRT {trt.__version__}); rebuild it here"
            )
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise GatekitError(
                f"the engine has {len(inputs)} inputs and {len(outputs)} outputs; gatekit runs graphs with one of each"
            )
        self._input, self._output = inputs[0], outputs[0]
        for name in names:
            if self._engine.get_tensor_dtype(name) != trt.DataType.FLOAT:
                raise GatekitError(
                    f"engine tensor {name!r} is {self._engine.get_tensor_dtype(name)}; "
                    "gatekit engines take and return float32"
                )
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise GatekitError("TensorRT could not create an execution context (out of GPU memory?)")
        self.input_shape = tuple(int(d) for d in self._engine.get_tensor_shape(self._input))
        self._stream = cuda_check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.info = RuntimeInfo("tensorrt", trt.__version__, device_name(cudart, device), "TensorRT", None, precision)

    def _device_buffer(self, name: str, nbytes: int) -> int:
        """A device buffer of at least `nbytes` for `name`, grown only when too small."""
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                cuda_check(self._cudart.cudaFree(ptr), "cudaFree")
                self._buffers.pop(name)
            ptr = int(cuda_check(self._cudart.cudaMalloc(nbytes), f"cudaMalloc({nbytes})"))
            self._buffers[name] = (ptr, nbytes)
            if not self._context.set_tensor_address(name, ptr):
                raise GatekitError(f"TensorRT refused the device address of {name!r}")
        return ptr

    def _set_shape(self, shape: tuple[int, ...]) -> None:
        """Sets the input shape (dynamic batch) and sizes the buffers; a no-op when it has not changed."""
        if shape == self._shape:
            return
        if not self._context.set_input_shape(self._input, shape):
            lo, _, hi = self._engine.get_tensor_profile_shape(self._input, 0)
            raise GatekitError(f"input shape {shape} is outside the engine's profile {tuple(lo)}..{tuple(hi)}")
        self._out_shape = tuple(int(d) for d in self._context.get_tensor_shape(self._output))
        self._device_buffer(self._input, int(np.prod(shape)) * 4)
        self._device_buffer(self._output, int(np.prod(self._out_shape)) * 4)
        self._shape = shape

    def run(self, x: np.ndarray) -> np.ndarray:
        if self._stream is None:
            raise GatekitError("the TensorRT session is closed")
        cudart = self._cudart
        x = as_input(x, self.input_shape)
        self._set_shape(x.shape)
        out = np.empty(self._out_shape, dtype=np.float32)
        d_in, d_out = self._buffers[self._input][0], self._buffers[self._output][0]
        cuda_check(
            cudart.cudaMemcpyAsync(
                d_in, x.ctypes.data, x.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream
            ),
            "cudaMemcpyAsync (host to device)",
        )
        if not self._context.execute_async_v3(int(self._stream)):
            raise GatekitError("TensorRT execution failed (see the TensorRT log above)")
        cuda_check(
            cudart.cudaMemcpyAsync(
                out.ctypes.data, d_out, out.nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream
            ),
            "cudaMemcpyAsync (device to host)",
        )
        cuda_check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return out

    def close(self) -> None:
        """Frees the device buffers and the stream, then the context and the engine. Idempotent."""
        for ptr, _ in self._buffers.values():
            cuda_check(self._cudart.cudaFree(ptr), "cudaFree")
        self._buffers.clear()
        if self._stream is not None:
            cuda_check(self._cudart.cudaStreamDestroy(self._stream), "cudaStreamDestroy")
            self._stream = None
        self._context = self._engine = self._runtime = None
        self._shape = None

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()


class TensorRTBackend(Backend):
    name = "tensorrt"
    install_hint = INSTALL_HINT
    modules = ("tensorrt",)

    def available(self) -> bool:
        """True when both `tensorrt` and cuda-python (under either module name) import."""
        try:
            import tensorrt  # noqa: F401

            load_cudart()
        except ImportError:
            return False
        return True

    def load(
        self,
        path: str | os.PathLike,
        *,
        threads: int | None = None,
        precision: str = "fp32",
        device: str | None = None,
        extensions: tuple[str, ...] = (),
    ) -> Session:
        """Deserializes an engine. `precision` is the one it was built with (from its manifest); `threads`
        does not apply to a GPU and is ignored; `extensions` are plugin libraries loaded first."""
        if not self.available():
            raise GatekitError(INSTALL_HINT)
        import ctypes

        index = device_index(device)
        path = Path(path)
        if not path.is_file():
            raise GatekitError(f"no TensorRT engine at {path}")
        for lib in extensions:  # plugin libraries register their creators when loaded
            try:
                ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            except OSError as e:
                raise GatekitError(f"cannot load the TensorRT plugin library {lib}: {one_line(e)}") from None
        return TensorRTSession(path.read_bytes(), precision, index)
