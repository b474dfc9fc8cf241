"""int8, fp16 and bf16 artifacts: export with quantization calibrated on real images, the reduced-precision
verification (feature cosine and k-NN against fp32) and its refusal, and pick choosing across precisions."""

from __future__ import annotations

import numpy as np
import pytest

from gatekit.bench.run import SCHEMA
from gatekit.errors import GatekitError
from gatekit.pick.select import candidates, pick
from tests.conftest import REPO

CKPT = REPO / "benchmarks" / "train_cifar10" / "checkpoints" / "vicreg-dual.safetensors"  # real, ResNet-18 x0.25


def small(**kw):
    from gatekit.export.exporter import ExportOptions

    base = dict(
        graph="static",
        calib=300,
        quant_calib=64,
        knn_train=1000,
        knn_test=300,
        knn_check=False,
        threads=1,
        verify_images=32,
    )
    return ExportOptions(**(base | kw))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from tests.conftest import data_dir

    if data_dir() is None:
        pytest.skip("real CIFAR-10 not found: set GATEKIT_DATA to a directory holding cifar10.npz")
    from gatekit.export.exporter import Prepared

    return Prepared(CKPT, small(data_dir=str(data_dir())), progress=False)


@pytest.mark.parametrize("fmt,precision", [("onnx", "int8"), ("openvino", "int8"), ("openvino", "bf16")])
def test_reduced_precision_export_is_verified_against_fp32(prepared, tmp_path, fmt, precision):
    import json

    from gatekit.export.exporter import export

    prepared.opts.fmt, prepared.opts.precision = fmt, precision
    m = export(CKPT, tmp_path, prepared.opts, progress=False, prepared=prepared)
    v = m["verification"]
    assert m["precision"] == precision and m["runtime"]["precision"] == precision
    assert v["cosine_to_fp32"]["mean"] >= 0.99 and abs(v["knn_delta_points"]) <= 1.0
    assert v["knn_train_images"] == 1000 and v["knn_test_images"] == 300
    if precision == "int8":
        q = m["quantization"]
        assert q["tool"] == {"onnx": "onnxruntime.quantization", "openvino": "nncf"}[fmt]
        assert q["calibration"] == {"dataset": "cifar10", "split": "train", "images": 64, "first": True}
    stem = f"static-{precision}"
    assert json.loads((tmp_path / f"{stem}.{fmt}.json").read_text())["precision"] == precision
    if fmt == "onnx":  # a QDQ graph: quantize/dequantize pairs around int8 weights
        import onnx

        ops = {n.op_type for n in onnx.load(str(tmp_path / f"{stem}.onnx")).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_a_broken_calibration_is_refused_and_writes_nothing(tmp_path):
    """Calibrated on one black image, the int8 graph clips every real activation: refused, nothing written."""
    from tests.conftest import data_dir

    if data_dir() is None:
        pytest.skip("real CIFAR-10 not found")
    from gatekit.export.exporter import export

    with np.load(data_dir() / "cifar10.npz") as d:
        x_train, y_train, x_test, y_test = (
            d["x_train"][:2000],
            d["y_train"][:2000],
            d["x_test"][:500],
            d["y_test"][:500],
        )
    x_train = x_train.copy()
    x_train[0] = 0  # the quantizer's only calibration image
    bad = tmp_path / "data"
    bad.mkdir()
    np.savez(bad / "cifar10.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    out = tmp_path / "out"
    with pytest.raises(GatekitError, match=r"int8: .*(cosine|k-NN).*not written: keep parts in float"):
        export(CKPT, out, small(fmt="onnx", precision="int8", quant_calib=1, data_dir=str(bad)), progress=False)
    assert not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(".")]


def test_precision_must_fit_the_format_and_graph(tmp_path):
    from gatekit.export.exporter import export

    with pytest.raises(GatekitError, match="ONNX artifacts hold fp32, int8, not bf16"):
        export(CKPT, tmp_path, small(fmt="onnx", precision="bf16"), progress=False)
    with pytest.raises(GatekitError, match="dynamic graphs are exported in fp32 or int8"):
        export(CKPT, tmp_path, small(graph="dynamic", fmt="openvino", precision="bf16"), progress=False)


def rec(graph, precision, p90, knn_delta=None, sha="A"):
    manifest = {
        "graph": graph,
        "budget": 0.3,
        "checkpoint_sha256": sha,
        "macs": {"ratio_to_dense": 1.0 if graph == "dense" else 0.8},
        "format": "openvino",
        "dynamic_form": None,
        "precision": precision,
    }
    if knn_delta is not None:
        manifest["precision_check"] = {"knn_delta_points": knn_delta, "cosine_to_fp32": {"mean": 0.999}}
    return {
        "schema": SCHEMA,
        "manifest": manifest,
        "runtime": {"name": "openvino"},
        "threads": 1,
        "batch": 1,
        "precision": precision,
        "stats": {"p50_ms": p90 * 0.9, "p90_ms": p90, "p99_ms": p90 * 1.1},
    }


def test_pick_chooses_int8_when_only_it_meets_the_target():
    acc = {"A": {"dense": {"knn20_cosine": 0.60}, "gated": {"knn20_cosine": 0.58}}}
    records = [rec("dense", "fp32", 1.0), rec("dense", "int8", 0.4, knn_delta=-0.3), rec("hybrid", "fp32", 0.8)]
    chosen, _ = pick(candidates(records, acc), 0.5)
    assert chosen.record["precision"] == "int8" and chosen.accuracy == pytest.approx(0.60 - 0.003)
    assert "int8" in chosen.name
    chosen, _ = pick(candidates(records, acc), 2.0)  # all meet it: the most accurate is fp32 dense
    assert chosen.record["precision"] == "fp32" and chosen.record["manifest"]["graph"] == "dense"
    # an int8 record without a measured k-NN difference has no accuracy and is never chosen
    chosen, reason = pick(candidates([rec("dense", "fp32", 1.0), rec("dense", "int8", 0.4)], acc), 0.5)
    assert chosen is None and "none has a recorded accuracy" in reason
