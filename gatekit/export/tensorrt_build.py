"""TensorRT engines from the verified ONNX graph (TensorRT 10 Python API; 8.x also handled).

An engine is specific to the GPU model and the TensorRT version that built it, so it must be built on
the device that runs it: run `gatekit export --format tensorrt` on that device (a Jetson builds its
own engines with JetPack's TensorRT). One engine per static width and precision. No torch here.
"""

from __future__ import annotations

from pathlib import Path

from gatekit.atomic import atomic_path
from gatekit.errors import GatekitError
from gatekit.runtimes.tensorrt_backend import INSTALL_HINT, _check, _cudart


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, precision: str = "fp32", batch: int = 1,
                 max_batch: int | None = None, workspace_mb: int = 1024) -> dict:
    """Parses `onnx_path`, builds an fp32 or fp16 engine and writes it atomically to `engine_path`."""
    try:
        import tensorrt as trt
    except ImportError:
        raise GatekitError(INSTALL_HINT) from None
    if precision not in ("fp32", "fp16"):
        raise GatekitError(f"TensorRT precision must be fp32 or fp16, got {precision}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise GatekitError(f"TensorRT's ONNX parser refused {onnx_path}: {errors[:500]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if precision == "fp16":
        if not builder.platform_has_fast_fp16:
            raise GatekitError("this GPU has no fast fp16: build an fp32 engine")
        config.set_flag(trt.BuilderFlag.FP16)
    inp = network.get_input(0)
    shape = tuple(inp.shape)
    profile_dims = None
    if shape[0] == -1:
        hi = max_batch or batch
        profile = builder.create_optimization_profile()
        profile_dims = ((1, *shape[1:]), (batch, *shape[1:]), (hi, *shape[1:]))
        profile.set_shape(inp.name, *profile_dims)
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise GatekitError(f"TensorRT could not build an engine from {onnx_path} (see the TensorRT log above)")
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    cudart = _cudart()
    props = _check(cudart.cudaGetDeviceProperties(0))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"tensorrt_version": trt.__version__, "precision": precision, "device_name": name.strip("\x00"),
            "input_shape": list(shape), "batch_profile": [list(d) for d in profile_dims] if profile_dims else None}
