"""Runtime backends on tiny ONNX graphs built with onnx.helper (no torch needed)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from gatekit.errors import GatekitError
from gatekit.runtimes import BACKENDS, available_backends, get_backend, load_session

REPO = Path(__file__).resolve().parent.parent


def tiny_onnx(path, batch=1, hw=8):
    """Conv 3->4 (3x3, pad 1) + Relu + GlobalAveragePool + Flatten with fixed random weights; returns (w, b)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["g"]),
            helper.make_node("Flatten", ["g"], ["features"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, hw, hw])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [batch, 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return w, b


def reference(x, w, b):
    """The tiny graph in float64 numpy."""
    n, _, h, wd = x.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, 4, h, wd), np.float64)
    for i in range(3):
        for j in range(3):
            out += np.einsum("nchw,oc->nohw", xp[:, :, i : i + h, j : j + wd], w[:, :, i, j])
    return np.maximum(out + b[None, :, None, None], 0).mean(axis=(2, 3))


def save_ir(onnx_path, xml_path):
    import openvino as ov

    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    return xml_path


def x_of(seed, batch=1):
    return np.random.default_rng(seed).standard_normal((batch, 3, 8, 8)).astype(np.float32)


def test_onnxruntime_matches_numpy_and_applies_threads(tmp_path):
    w, b = tiny_onnx(tmp_path / "m.onnx")
    x = x_of(1)
    with load_session(tmp_path / "m.onnx", threads=1) as s:
        y = s.run(x)
        assert y.dtype == np.float32 and y.shape == (1, 4)
        assert np.allclose(y, reference(x, w, b), atol=1e-5, rtol=0)
        opts = s.session.get_session_options()
        assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
        assert s.info.to_dict() == {
            "name": "ort",
            "version": get_backend("ort").version(),
            "device": "cpu",
            "provider": "CPUExecutionProvider",
            "threads": 1,
            "precision": "fp32",
            "ops": None,
            "ops_library": None,
            "ops_isa": None,
            "ops_reason": None,
        }
        assert s.input_shape == (1, 3, 8, 8)
        with pytest.raises(GatekitError, match="does not fit the model's 1x3x8x8"):
            s.run(x_of(1, batch=2))


def test_onnxruntime_dynamic_batch(tmp_path):
    w, b = tiny_onnx(tmp_path / "m.onnx", batch="batch")
    x = x_of(2, batch=3)
    s = load_session(tmp_path / "m.onnx", "onnxruntime")
    assert s.input_shape == (-1, 3, 8, 8) and s.info.threads is None
    assert np.allclose(s.run(x), reference(x, w, b), atol=1e-5, rtol=0)
    assert np.allclose(s.run(x[:1]), reference(x[:1], w, b), atol=1e-5, rtol=0)


def test_onnxruntime_refuses_what_it_cannot_run(tmp_path):
    tiny_onnx(tmp_path / "m.onnx")
    with pytest.raises(GatekitError, match="CPUExecutionProvider runs fp32 or int8, not fp16"):
        load_session(tmp_path / "m.onnx", precision="fp16")
    with pytest.raises(GatekitError, match="unknown ONNX Runtime device 'npu'"):
        load_session(tmp_path / "m.onnx", device="npu")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(GatekitError, match="no CUDAExecutionProvider .*pip install onnxruntime-gpu"):
            load_session(tmp_path / "m.onnx", device="cuda")


def test_openvino_runs_in_fp32_with_threads_and_matches(tmp_path):
    w, b = tiny_onnx(tmp_path / "m.onnx")
    xml = save_ir(tmp_path / "m.onnx", tmp_path / "m.xml")
    x = x_of(3)
    with load_session(xml, threads=1) as s:
        assert s.info.name == "openvino" and s.info.device == "CPU" and s.info.precision == "fp32"
        assert int(s.compiled.get_property("INFERENCE_NUM_THREADS")) == 1 and s.info.threads == 1
        assert s.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
        y = s.run(x)
        assert y.dtype == np.float32 and np.allclose(y, reference(x, w, b), atol=1e-5, rtol=0)
        y2 = s.run(x_of(4))  # the returned array is a copy, not the request's output buffer
        assert not np.allclose(y, y2) and np.allclose(y, reference(x, w, b), atol=1e-5, rtol=0)


def test_openvino_default_precision_here_is_not_fp32_so_it_is_pinned(tmp_path):
    """The measured pitfall: with only the LATENCY hint, OpenVINO picks bf16 on CPUs with avx512_bf16."""
    import openvino as ov

    tiny_onnx(tmp_path / "m.onnx")
    compiled = ov.Core().compile_model(
        ov.convert_model(str(tmp_path / "m.onnx")), "CPU", {"PERFORMANCE_HINT": "LATENCY"}
    )
    default = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if "avx512_bf16" in flags or " amx_bf16" in flags:
        assert default == "bf16"
    s = load_session(save_ir(tmp_path / "m.onnx", tmp_path / "m.xml"), "ov")
    assert s.info.precision == "fp32"


def test_openvino_dynamic_batch_and_clear_errors(tmp_path):
    w, b = tiny_onnx(tmp_path / "m.onnx", batch="batch")
    xml = save_ir(tmp_path / "m.onnx", tmp_path / "m.xml")
    s = load_session(xml, threads=1)
    assert s.input_shape == (-1, 3, 8, 8)
    x = x_of(5, batch=3)
    assert np.allclose(s.run(x), reference(x, w, b), atol=1e-5, rtol=0)
    with pytest.raises(GatekitError, match="OpenVINO has no GPU device here"):
        load_session(xml, device="gpu")
    with pytest.raises(GatekitError, match="OpenVINO precision must be one of fp32, bf16, fp16, int8, got int4"):
        load_session(xml, precision="int4")
    with pytest.raises(GatekitError, match="no OpenVINO extension library"):
        load_session(xml, extensions=(str(tmp_path / "missing.so"),))
    (tmp_path / "bad.xml").write_text("<net>not an IR")
    with pytest.raises(GatekitError, match="OpenVINO cannot read"):
        load_session(tmp_path / "bad.xml")


def test_registry_names_and_errors(tmp_path):
    assert list(BACKENDS) == ["ort", "openvino", "tensorrt"]
    assert get_backend("onnxruntime") is BACKENDS["ort"] and get_backend("OV") is BACKENDS["openvino"]
    assert {"ort", "openvino"} <= set(available_backends()) <= set(BACKENDS)
    with pytest.raises(GatekitError, match="^unknown runtime 'nope': choose one of ort, openvino, tensorrt"):
        get_backend("nope")
    with pytest.raises(GatekitError, match="cannot tell the runtime of model.bin"):
        load_session(tmp_path / "model.bin")


@pytest.mark.parametrize("name", ["missing.onnx", "missing.xml"])
def test_missing_file_is_a_one_line_error(tmp_path, name):
    with pytest.raises(GatekitError, match="no such file") as e:
        load_session(tmp_path / name)
    assert "\n" not in str(e.value)


def test_garbage_file_is_a_one_line_error(tmp_path):
    (tmp_path / "garbage.onnx").write_bytes(b"\x00garbage\x01\x02")
    with pytest.raises(GatekitError, match="ONNX Runtime cannot load") as e:
        load_session(tmp_path / "garbage.onnx")
    assert "\n" not in str(e.value)


def test_runtimes_import_and_run_without_torch(tmp_path):
    tiny_onnx(tmp_path / "m.onnx")
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\nimport gatekit.runtimes\nfrom gatekit.runtimes import load_session\n"
        f"s = load_session({str(tmp_path / 'm.onnx')!r}, threads=1)\n"
        "print(s.run(np.zeros((1, 3, 8, 8), np.float32)).shape, s.info.provider)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert proc.returncode == 0, proc.stderr
    assert "(1, 4) CPUExecutionProvider" in proc.stdout


@pytest.mark.parametrize("runtime", ["ort", "openvino"])
def test_the_timed_call_runs_the_same_inference(tmp_path, runtime):
    """Session.runner (what the latency protocol times: input bound once, no output copy) runs the model on
    the bound input, every call: its output buffer holds what run() returns for that input."""
    if runtime not in available_backends():
        pytest.skip(f"{runtime} is not installed")
    w, b = tiny_onnx(tmp_path / "m.onnx")
    path = tmp_path / "m.onnx" if runtime == "ort" else save_ir(tmp_path / "m.onnx", tmp_path / "m.xml")
    with load_session(path, runtime, threads=1) as s:
        calls = [s.runner(x_of(k)) for k in (1, 2)]
        for k, call in zip((1, 2), calls):
            call()
            np.testing.assert_allclose(call.output(), reference(x_of(k), w, b), rtol=1e-5, atol=1e-5)
        calls[0]()
        np.testing.assert_allclose(calls[0].output(), reference(x_of(1), w, b), rtol=1e-5, atol=1e-5)
        calls[0]()  # the same call again (OpenVINO: its input is still set, not set again)
        np.testing.assert_allclose(calls[0].output(), reference(x_of(1), w, b), rtol=1e-5, atol=1e-5)
        s.run(x_of(2))  # run() binds another input; the next timed call must bind its own again
        calls[0]()
        np.testing.assert_allclose(calls[0].output(), reference(x_of(1), w, b), rtol=1e-5, atol=1e-5)
