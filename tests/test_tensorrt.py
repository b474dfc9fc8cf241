"""TensorRT: engines built from ONNX and run where TensorRT and an NVIDIA GPU exist; the rest everywhere."""

import numpy as np
import pytest

from gatekit.errors import GatekitError
from gatekit.runtimes import available_backends, get_backend, load_session
from gatekit.runtimes.tensorrt_backend import cuda_check, device_index
from gatekit.runtimes.tensorrt_build import build_engine, fp16_onnx
from tests.test_runtimes import reference, tiny_onnx, x_of

REASON = (
    "TensorRT cannot be installed from PyPI here (its -libs packages download from a host this network "
    "cannot reach) and no GPU is present"
)


def _tensorrt_ready() -> bool:
    """True when tensorrt and cuda-python import and CUDA sees at least one device."""
    if "tensorrt" not in available_backends():
        return False
    from gatekit.runtimes.tensorrt_backend import load_cudart

    err, count = load_cudart().cudaGetDeviceCount()
    return int(getattr(err, "value", err)) == 0 and count > 0


needs_tensorrt = pytest.mark.skipif(not _tensorrt_ready(), reason=REASON)


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_tensorrt
@pytest.mark.parametrize("precision,tol", [("fp32", 1e-4), ("fp16", 1e-2)])
def test_engine_matches_onnxruntime(tmp_path, precision, tol):
    tiny_onnx(tmp_path / "m.onnx")
    built = build_engine(tmp_path / "m.onnx", tmp_path / f"m-{precision}.engine", precision=precision)
    assert built["precision"] == precision and built["input_shape"] == [1, 3, 8, 8] and built["batch_profile"] is None
    assert built["device_name"] and built["tensorrt_version"]
    x = x_of(0)
    ref = load_session(tmp_path / "m.onnx").run(x)
    with load_session(tmp_path / f"m-{precision}.engine", precision=precision) as s:
        assert s.info.name == "tensorrt" and s.info.precision == precision and s.info.device == built["device_name"]
        assert s.input_shape == (1, 3, 8, 8)
        out = s.run(x)
        assert out.dtype == np.float32 and out.shape == ref.shape
        assert np.max(np.abs(out - ref)) / np.max(np.abs(ref)) <= tol
        assert np.array_equal(s.run(x), out)  # buffers reused, same answer


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_tensorrt
def test_engine_dynamic_batch_profile(tmp_path):
    w, b = tiny_onnx(tmp_path / "m.onnx", batch="batch")
    built = build_engine(tmp_path / "m.onnx", tmp_path / "m.plan", batch=2, max_batch=4)
    assert built["batch_profile"] == [[1, 3, 8, 8], [2, 3, 8, 8], [4, 3, 8, 8]]
    s = load_session(tmp_path / "m.plan", "trt")
    assert s.input_shape == (-1, 3, 8, 8)
    for n in (3, 1, 3, 4):
        x = x_of(n, batch=n)
        ref = reference(x, w, b)
        assert np.max(np.abs(s.run(x) - ref)) / np.max(np.abs(ref)) <= 1e-4
    with pytest.raises(GatekitError, match="outside the engine's profile"):
        s.run(x_of(0, batch=5))
    s.close()
    s.close()  # idempotent


@pytest.mark.skipif("tensorrt" in available_backends(), reason="TensorRT is installed here")
def test_tensorrt_absent_names_the_install(tmp_path):
    with pytest.raises(GatekitError, match=r"gatekit\[tensorrt\]"):
        get_backend("tensorrt")
    tiny_onnx(tmp_path / "m.onnx")
    with pytest.raises(GatekitError, match=r"^TensorRT is not installed: .*gatekit\[tensorrt\].*JetPack"):
        build_engine(tmp_path / "m.onnx", tmp_path / "m.engine")
    (tmp_path / "m.engine").write_bytes(b"not an engine")
    with pytest.raises(GatekitError, match=r"gatekit\[tensorrt\]"):
        load_session(tmp_path / "m.engine")


def test_fp16_onnx_keeps_float32_io_and_matches(tmp_path):
    """The TensorRT 11 fp16 route: the graph itself in fp16, its interface in fp32."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    w, b = tiny_onnx(tmp_path / "m.onnx", batch="batch")
    fp16_onnx(tmp_path / "m.onnx", tmp_path / "h.onnx")
    model = onnx.load(str(tmp_path / "h.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert [i.type.tensor_type.elem_type for i in (*model.graph.input, *model.graph.output)] == [
        onnx.TensorProto.FLOAT
    ] * 2
    assert {t.data_type for t in model.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert model.graph.input[0].name == "input" and model.graph.output[0].name == "features"
    x = x_of(7, batch=2)
    y = ReferenceEvaluator(model).run(None, {"input": x})[0]
    ref = reference(x, w, b)
    assert y.dtype == np.float32 and 0 < np.max(np.abs(y - ref)) / np.max(np.abs(ref)) <= 1e-2


def test_cuda_helpers():
    assert [device_index(d) for d in (None, 0, "1", "cuda", "cuda:2", "GPU:3")] == [0, 0, 1, 0, 2, 3]
    with pytest.raises(GatekitError, match="cuda or cuda:N"):
        device_index("cpu")

    class Err:  # stands in for cuda-python's cudaError_t
        def __init__(self, value, name):
            self.value, self.name = value, name

    assert cuda_check((Err(0, "cudaSuccess"),)) is None
    assert cuda_check((Err(0, "cudaSuccess"), 1234)) == 1234
    with pytest.raises(GatekitError, match="cudaMalloc failed: cudaErrorMemoryAllocation"):
        cuda_check((Err(2, "cudaErrorMemoryAllocation"), 0), "cudaMalloc")


@pytest.fixture
def onnx_artifact(tmp_path):
    """A real exported and verified ONNX artifact of a tiny gated ResNet (the path `gatekit export` takes)."""
    import torch

    from gatekit.checkpoint import save_model
    from gatekit.export.exporter import ExportOptions, export
    from gatekit.models import GatedResNet, ModelConfig
    from tests.test_export import force_gates

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    npz = tmp_path / "tiny.npz"
    x = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    np.savez(npz, x_train=x, y_train=np.zeros(64, np.uint8), x_test=x, y_test=np.zeros(64, np.uint8))
    model = GatedResNet(ModelConfig(width=0.125)).eval()
    force_gates(model, "data")
    ckpt = tmp_path / "tiny.safetensors"
    save_model(
        ckpt, model, {"train_config": {"dataset": "npz", "data_dir": str(npz), "method": "vicreg-dual", "budget": 0.3}}
    )
    export(
        ckpt,
        tmp_path / "art",
        ExportOptions(graph="static", fmt="onnx", calib=64, verify_images=32, knn_check=False, threads=1),
        progress=False,
    )
    return tmp_path / "art" / "static.onnx.json"


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_from_artifact_on_the_device(onnx_artifact, tmp_path, precision):
    from gatekit.runtimes.tensorrt_build import engine_from_artifact

    m = engine_from_artifact(onnx_artifact, tmp_path / "trt", precision=precision)
    assert m["format"] == "tensorrt" and (tmp_path / "trt" / m["files"]["engine"]).is_file()
    assert (tmp_path / "trt" / f"{m['files']['engine'][:-7]}.tensorrt.json").is_file()
    assert max(m["verification"]["relative_error"].values()) <= (1e-4 if precision == "fp32" else 2e-2)


@pytest.mark.skipif("tensorrt" in available_backends(), reason="TensorRT is installed here")
def test_engine_command_without_tensorrt_is_one_line(onnx_artifact, tmp_path, capsys):
    from gatekit.cli import main

    with pytest.raises(SystemExit) as e:
        main(["engine", str(onnx_artifact), "--out", str(tmp_path / "trt")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "TensorRT is not installed" in err and "\n" not in err
    assert not (tmp_path / "trt").exists()
