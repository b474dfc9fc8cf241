"""Runtime backends on tiny ONNX graphs built with onnx.helper (no torch needed)."""

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from gatekit.errors import GatekitError
from gatekit.runtimes import available_backends, get_backend, load_session

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_onnx(path, batch=1):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("GlobalAveragePool", ["r"], ["g"]), helper.make_node("Flatten", ["g"], ["features"])],
        "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [batch, 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return w, b


def reference(x, w, b):
    n = x.shape[0]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, 4, 8, 8), np.float64)
    for i in range(3):
        for j in range(3):
            out += np.einsum("nchw,oc->nohw", xp[:, :, i:i + 8, j:j + 8], w[:, :, i, j])
    out = np.maximum(out + b[None, :, None, None], 0)
    return out.mean(axis=(2, 3))


def test_onnxruntime_matches_numpy_and_reports_threads(tmp_path):
    w, b = tiny_onnx(tmp_path / "m.onnx")
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with load_session(tmp_path / "m.onnx", threads=1) as s:
        assert np.allclose(s.run(x), reference(x, w, b), atol=1e-5)
        assert s.info.name == "onnxruntime" and s.info.threads == 1 and s.info.provider == "CPUExecutionProvider"
        assert s.input_shape == (1, 3, 8, 8)


def test_onnxruntime_dynamic_batch(tmp_path):
    w, b = tiny_onnx(tmp_path / "m.onnx", batch="batch")
    x = np.random.default_rng(2).standard_normal((3, 3, 8, 8)).astype(np.float32)
    s = load_session(tmp_path / "m.onnx")
    assert s.input_shape[0] == -1
    assert np.allclose(s.run(x), reference(x, w, b), atol=1e-5)


def test_openvino_runs_in_fp32_and_matches(tmp_path):
    import openvino as ov

    w, b = tiny_onnx(tmp_path / "m.onnx")
    ov.save_model(ov.convert_model(str(tmp_path / "m.onnx")), str(tmp_path / "m.xml"), compress_to_fp16=False)
    x = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    s = load_session(tmp_path / "m.xml", threads=1)
    assert s.info.precision == "fp32" and s.info.threads == 1
    assert np.allclose(s.run(x), reference(x, w, b), atol=1e-5)


def test_openvino_default_hint_would_not_be_fp32_here_so_we_pin_it(tmp_path):
    import openvino as ov

    tiny_onnx(tmp_path / "m.onnx")
    core = ov.Core()
    compiled = core.compile_model(ov.convert_model(str(tmp_path / "m.onnx")), "CPU", {"PERFORMANCE_HINT": "LATENCY"})
    default = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    s = load_session(_save_ir(tmp_path), "openvino")
    assert s.info.precision == "fp32"
    assert default in ("f32", "bf16", "f16")  # bf16 on CPUs with avx512_bf16 (this one)


def _save_ir(tmp_path):
    import openvino as ov

    ov.save_model(ov.convert_model(str(tmp_path / "m.onnx")), str(tmp_path / "m2.xml"), compress_to_fp16=False)
    return tmp_path / "m2.xml"


def test_unknown_runtime_and_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(GatekitError, match="unknown runtime 'tflite': choose one of torch, ort, openvino, tensorrt"):
        get_backend("tflite")
    with pytest.raises(GatekitError, match="no ONNX model at"):
        load_session(tmp_path / "missing.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(GatekitError, match="cannot load"):
        load_session(tmp_path / "garbage.onnx")
    with pytest.raises(GatekitError, match="cannot tell the runtime"):
        load_session(tmp_path / "model.bin")


def test_tensorrt_absent_names_the_install(tmp_path):
    if "tensorrt" in available_backends():
        pytest.skip("TensorRT is installed here")
    with pytest.raises(GatekitError, match=r"gatekit\[tensorrt\]"):
        get_backend("tensorrt")


def test_runtimes_import_and_run_without_torch(tmp_path):
    tiny_onnx(tmp_path / "m.onnx")
    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np\nfrom gatekit.runtimes import load_session\n"
            f"s = load_session({str(tmp_path / 'm.onnx')!r}, threads=1)\n"
            "print(s.run(np.zeros((1, 3, 8, 8), np.float32)).shape)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr
    assert "(1, 4)" in proc.stdout
