"""TensorRT engines: built from ONNX and run where TensorRT and an NVIDIA GPU exist."""

import numpy as np
import pytest

from gatekit.runtimes import available_backends, load_session

REASON = ("TensorRT cannot be installed from PyPI here (its -libs packages download from a host this network "
          "cannot reach) and no GPU is present")

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu,
              pytest.mark.skipif("tensorrt" not in available_backends(), reason=REASON)]


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-4), ("fp16", 1e-2)])
def test_engine_matches_onnxruntime(tmp_path, precision, tol):
    from gatekit.export.tensorrt_build import build_engine
    from tests.test_runtimes import tiny_onnx

    tiny_onnx(tmp_path / "m.onnx")
    info = build_engine(tmp_path / "m.onnx", tmp_path / f"m-{precision}.engine", precision=precision)
    assert info["precision"] == precision
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    ref = load_session(tmp_path / "m.onnx").run(x)
    out = load_session(tmp_path / f"m-{precision}.engine", precision=precision).run(x)
    assert np.max(np.abs(out - ref)) / np.max(np.abs(ref)) <= tol
