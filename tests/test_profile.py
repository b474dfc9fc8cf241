"""The device latency table (`gatekit profile`), the predictor, and planning unexported static widths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gatekit.bench.protocol import Protocol
from gatekit.cli import main
from gatekit.errors import GatekitError
from gatekit.models import ModelConfig, cost_model
from gatekit.models.arch import Architecture
from gatekit.pick import predict as predictor
from gatekit.pick import synth
from gatekit.pick.plan import choose, threshold_options
from gatekit.pick.profile import ProfileOptions, calibration_configs, held_out_configs, load_lut, native_drift, profile

REPO = str(Path(__file__).resolve().parent.parent)
TINY = Protocol(warmup_runs=2, warmup_seconds=0.0, min_runs=20, min_seconds=0.05, floor_runs=5)


@pytest.mark.parametrize("stem,size", [("cifar", 32), ("imagenet", 96), ("imagenet", 224)])
@pytest.mark.parametrize("width", [1.0, 0.25])
def test_synth_macs_match_the_cost_model(stem, size, width):
    arch = Architecture(width=width, stem=stem, input_size=size)
    cfg = ModelConfig(width=width, stem=stem, input_size=size)
    cost = cost_model(cfg)
    full = [b.planes for b in arch.blocks()]
    assert arch.macs(full) == cost.dense_macs
    half = [max(1, p // 2) for p in full]
    assert arch.macs(half) == cost.static_macs(half)


def test_synth_network_runs_with_the_shapes_of_the_model():
    import onnxruntime as ort

    arch = Architecture(width=0.25, stem="imagenet", input_size=96)
    widths = [b.grid(16)[0] for b in arch.blocks()]
    model = synth.network(arch, widths)
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = s.run(None, {"input": np.random.default_rng(0).standard_normal((1, 3, 96, 96)).astype(np.float32)})[0]
    assert y.shape == (1, arch.widths[-1]) and np.isfinite(y).all()
    for b in arch.blocks():  # every piece takes exactly the activation it sees in the network
        piece = synth.piece(arch, "block", b.grid(16)[-1], b.index)
        shape = [d.dim_value for d in piece.graph.input[0].type.tensor_type.shape.dim]
        assert shape == synth.input_shape(arch, "block", b.index)
    with pytest.raises(ValueError, match="outside"):
        synth.network(arch, [0] + widths[1:])


def test_grid_and_configs():
    arch = Architecture()
    assert arch.blocks()[0].grid(16) == [16, 32, 48, 64]
    assert Architecture(width=0.3).blocks()[0].grid(16) == [16, 19]  # planes 19: the full width is on the grid
    calib = calibration_configs(arch, 16)
    assert calib[-1] == [b.planes for b in arch.blocks()] and calib[0][0] == 16
    held = held_out_configs(arch, 16, 20, 1, calib)
    assert len(held) == 20 and len({tuple(h) for h in held}) == 20
    assert not any(h in calib for h in held)
    assert all(w in b.grid(16) for h in held for b, w in zip(arch.blocks(), h))


def fake_lut(per_channel_ms=0.01, overhead=0.2, scale=1.0):
    """A LUT whose block entries are exactly linear in width: known answers for the predictor."""
    arch = Architecture(width=0.25)
    blocks = []
    for b in arch.blocks():
        grid = b.grid(4)
        blocks.append(
            {
                "index": b.index,
                "planes": b.planes,
                "widths": grid,
                "p50_ms": [per_channel_ms * w for w in grid],
                "p90_ms": [1.1 * per_channel_ms * w for w in grid],
            }
        )
    lut = {
        "schema": "gatekit.lut/1",
        "arch": arch.to_dict(),
        "round_to": 4,
        "threads": 1,
        "runtime": {"name": "onnxruntime"},
        "stem": {"p50_ms": 0.05},
        "head": {"p50_ms": 0.01},
        "blocks": blocks,
    }
    configs = calibration_configs(arch, 4)
    measured = [
        {
            "p50_ms": scale * predictor.table_sum(lut, c) + overhead,
            "p90_ms": 1.2 * (scale * predictor.table_sum(lut, c) + overhead),
        }
        for c in configs
    ]
    lut["calibration"] = predictor.calibrate(lut, configs, measured)
    return lut, arch


def test_predictor_fits_and_interpolates():
    lut, arch = fake_lut(scale=0.8, overhead=0.3)
    fit = lut["calibration"]["fit"]
    assert fit["p50_ms"]["scale"] == pytest.approx(0.8) and fit["p50_ms"]["offset_ms"] == pytest.approx(0.3)
    widths = [6, 6, 10, 10, 30, 30, 62, 62]  # between grid points: linear interpolation is exact here
    expected = 0.8 * (0.06 + 0.01 * sum(widths)) + 0.3
    assert predictor.predict(lut, widths)["p50_ms"] == pytest.approx(expected)
    assert predictor.predict(lut, widths)["p90_ms"] == pytest.approx(1.2 * expected)
    with pytest.raises(GatekitError, match="outside"):
        predictor.table_sum(lut, [0] * 8)
    with pytest.raises(GatekitError, match="8 blocks"):
        predictor.table_sum(lut, [4] * 7)
    dyn = predictor.predict_dynamic(lut, np.array([widths, widths]))
    assert dyn["p50_ms"] == pytest.approx(expected) and dyn["predicted"]


def test_native_dynamic_prediction_uses_the_native_table():
    lut, arch = fake_lut(scale=0.8, overhead=0.3)
    native = [
        {
            "index": b.index,
            "planes": b.planes,
            "widths": [0, b.planes],
            "p50_ms": [0.1, 0.1 + 0.02 * b.planes],
            "p90_ms": [0.11, 0.11 + 0.022 * b.planes],
        }
        for b in arch.blocks()
    ]
    lut["native"] = {"blocks": native}
    configs = [[round(b.planes * f) for b in arch.blocks()] for f in (0.0, 0.5, 1.0)]
    view = predictor.native_view(lut)
    measured = [
        {"p50_ms": 2 * predictor.table_sum(view, c), "p90_ms": 3 * predictor.table_sum(view, c)} for c in configs
    ]
    lut["native"]["calibration"] = predictor.calibrate(view, configs, measured)
    active = np.array([[0] * 8, [b.planes for b in arch.blocks()]])
    dyn = predictor.predict_dynamic(lut, active, native=True)
    full = 0.05 + 0.01 + sum(0.1 + 0.02 * b.planes for b in arch.blocks())
    assert dyn["per_input_ms"] == pytest.approx([2 * (0.06 + 0.8), 2 * full])  # zero active channels is a valid input
    assert dyn["per_input_p90_ms"][1] == pytest.approx(3 * full) and dyn["native"]
    del lut["native"]
    with pytest.raises(GatekitError, match="no native op table"):
        predictor.predict_dynamic(lut, active, native=True)


@pytest.mark.benchmark
def test_profile_times_the_native_op(cifar_dir):
    from gatekit import native_ops
    from gatekit.pick.profile import real_inputs

    if native_ops.library_for("ort") is None:
        pytest.skip("gatekit's native op library is not built here (`gatekit ops build`)")
    arch = Architecture(width=0.125, input_size=32)
    images = real_inputs("cifar10", str(cifar_dir), 32, count=4)
    opts = ProfileOptions(
        runtime="ort", threads=1, round_to=8, protocol=TINY, check_protocol=TINY, check=2, native=True, native_steps=2
    )
    lut = profile(arch, opts, images)
    table = lut["native"]
    assert table["library"] == str(native_ops.library_for("ort"))
    # the kernel path its timings ran, as the library reports it
    assert table["isa"] == (os.environ.get("GATEKIT_OPS_ISA") or native_ops.cpu_isa())
    assert [b["widths"] for b in table["blocks"]][0] == [0, 4, 8]
    assert all(v > 0 for b in table["blocks"] for v in b["p50_ms"])
    assert table["validation"]["count"] >= 4 and len(table["calibration"]["configs"]) >= 5
    pred = predictor.predict_dynamic(lut, np.array([[4] * 8, [b.planes for b in arch.blocks()]]), native=True)
    assert 0 < pred["per_input_ms"][0] and pred["per_input_ms"][1] > 0
    # the machine's drift since the build: the same calibration networks re-timed (a broad band: tiny protocol)
    drift = native_drift(lut, arch, opts, images, count=2)
    assert drift["networks"] == 2
    assert all(0.25 < drift[k] < 4.0 for k in ("p50_now_over_lut", "p90_now_over_lut"))
    with pytest.raises(GatekitError, match="no calibrated native op table"):
        native_drift({k: v for k, v in lut.items() if k != "native"}, arch, opts, images)


def _selector_decisions(g1w, g1b, g2, pooled):
    """The folded gate's decision (tests.test_native_ops.gate_reference) for pooled inputs (rows)."""
    from tests.test_native_ops import gate_reference

    return gate_reference(pooled[:, :, None, None], g1w, g1b, g2)[0] != 0


@pytest.mark.parametrize("hidden,active,masks", [(4, 3, 4), (32, 40, 4), (8, 0, 4), (8, 16, 4), (8, 5, 1)])
def test_selector_gate_turns_on_exactly_active_channels(hidden, active, masks):
    planes, cin = 16 if active <= 16 else 64, 16
    g1w, g1b, g2 = synth.selector_gate(cin, planes, hidden, active, masks, np.random.default_rng(3))
    rng = np.random.default_rng(4)
    pooled = rng.uniform(0, 1, (400, cin))
    lo, hi = synth.SELECTOR_RANGE
    pooled[:, 0] = np.concatenate([rng.uniform(lo - 1, hi + 1, 399), [lo]])  # also beyond the range
    on = _selector_decisions(g1w, g1b, g2, pooled)
    assert (on.sum(axis=1) == active).all()
    sets = {tuple(np.flatnonzero(r)) for r in on}
    want = 1 if masks == 1 or active in (0, planes) else min(masks, hidden)
    assert len(sets) == want  # several sets only when the selector can choose among them
    if masks == 1:  # the fixed set does not depend on the input at all
        pooled[:, 0] = 0.0
        assert (_selector_decisions(g1w, g1b, g2, pooled) == on[0]).all()


@pytest.mark.parametrize("block", [0, 2])  # an identity block, and a stride-2 block with its 1x1 shortcut in the op
def test_native_piece_with_masks_runs_the_selected_set_and_passes_the_selector_on(block, tmp_path):
    from onnx import numpy_helper

    from gatekit import native_ops
    from tests.test_native_ops import ort_session, reference

    lib = native_ops.library_for("ort")
    if lib is None:
        pytest.skip("gatekit's native op library is not built here (`gatekit ops build`)")
    arch = Architecture(width=0.25, input_size=32)
    b = arch.blocks()[block]
    model = synth.piece(arch, "native", 5, block, seed=1, masks=4)
    path = tmp_path / "piece.onnx"
    path.write_bytes(model.SerializeToString())
    rng = np.random.default_rng(0)
    acts = synth.selector_activations(
        [
            np.maximum(rng.standard_normal((1, b.in_channels, b.size_in, b.size_in)), 0).astype(np.float32)
            for _ in range(12)
        ],
        rng,
    )
    (node,) = [n for n in model.graph.node if n.domain == synth.NATIVE_DOMAIN]
    assert node.op_type == ("GatedBlockWithGateAndShortcut" if b.shortcut else "GatedBlockWithGate")
    assert not any(n.op_type == "Conv" for n in model.graph.node)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    g1w, g1b, g2, w1, b1, w2, b2 = (inits[name] for name in node.input[1:8])
    sess = ort_session(path, lib, 1)
    sets = set()
    for x in acts:
        y = sess.run(None, {synth.INPUT_NAME: x})[0]
        mask = _selector_decisions(g1w, g1b, g2, x.mean(axis=(2, 3), dtype=np.float64))
        sets.add(tuple(np.flatnonzero(mask[0])))
        assert mask.sum() == 5
        if not b.shortcut:
            res = x
        else:
            ws, bs = (inits[name] for name in node.input[8:10])
            res = np.einsum("nchw,oc->nohw", x[:, :, :: b.stride, :: b.stride], ws) + bs[None, :, None, None]
        ref = reference(x, mask.astype(np.float32), w1, b1, w2, b2, res, b.stride)
        assert np.abs(y - ref).max() <= 1e-4 * np.abs(ref).max()
        # output channel 0 is the selector, unchanged (subsampled by a stride-2 block)
        assert np.array_equal(y[:, 0], x[:, 0, :: b.stride, :: b.stride])
    assert len(sets) >= 2


def test_native_network_with_masks_varies_the_channels_per_image_at_fixed_widths(cifar_dir, tmp_path):
    from gatekit.pick.profile import real_inputs

    arch = Architecture(width=0.25, input_size=32)
    widths = [5, 5, 9, 9, 17, 17, 40, 40]
    net = synth.network(arch, widths, native=True, masks=4, seed=2)
    fixed = synth.network(arch, widths, native=True, masks=1, seed=2)
    from onnx import numpy_helper

    def gates(model):
        inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        return [[inits[i] for i in n.input[1:4]] for n in model.graph.node if n.domain == synth.NATIVE_DOMAIN]

    # the selector every block pools: the stem's channel 0 = relu(image channel 0 + offset) (its centre tap,
    # over the stem's padding), subsampled by each stride-2 block (as the op passes it on; checked above)
    images = real_inputs("cifar10", str(cifar_dir), 32, count=64)
    edge = arch.padding - 1
    plane = np.maximum(
        np.pad(images[:, 0].astype(np.float64), ((0, 0), (edge, edge), (edge, edge))) + synth.SELECTOR_OFFSET, 0
    )
    assert plane.shape[-1] == arch.stem_size
    for model, several in ((net, True), (fixed, False)):
        step = 1
        for b, w, (g1w, g1b, g2) in zip(arch.blocks(), widths, gates(model)):
            pooled = np.zeros((len(images), b.in_channels))
            pooled[:, 0] = plane[:, ::step, ::step].mean(axis=(1, 2))
            step *= b.stride
            on = _selector_decisions(g1w, g1b, g2, pooled)
            assert (on.sum(axis=1) == w).all()
            assert (len({tuple(np.flatnonzero(r)) for r in on}) >= 3) == several
    from gatekit import native_ops

    lib = native_ops.library_for("ort")
    if lib is not None:  # the whole network carries the selector to its pooled features' channel 0
        from tests.test_native_ops import ort_session

        path = tmp_path / "net.onnx"
        path.write_bytes(net.SerializeToString())
        sess = ort_session(path, lib, 1)
        got = np.concatenate([sess.run(None, {synth.INPUT_NAME: images[i : i + 1]})[0][:, 0] for i in range(8)])
        assert np.allclose(got, plane[:8, ::step, ::step].mean(axis=(1, 2)), rtol=1e-5)


def test_int8_profile_times_quantized_graphs(cifar_dir):
    from gatekit.pick.profile import real_inputs

    arch = Architecture(width=0.125, input_size=32)
    images = real_inputs("cifar10", str(cifar_dir), 32, count=4)
    opts = ProfileOptions(
        runtime="ort",
        threads=1,
        round_to=8,
        precision="int8",
        protocol=TINY,
        check_protocol=TINY,
        check=2,
        calibration=(0.5, 1.0),
        calibration_random=1,
        native=False,
    )
    lut = profile(arch, opts, images)
    assert lut["precision"] == "int8" and lut["runtime"]["precision"] == "int8" and "native" not in lut
    assert all(v > 0 for b in lut["blocks"] for v in b["p50_ms"]) and lut["validation"]["count"] == 2


def test_summarise_counts_the_share_within_ten_percent():
    lut, _ = fake_lut()
    rows = []
    for err in (0.0, 0.05, -0.099, 0.2, -0.3):
        w = [4] * 8
        p = predictor.predict(lut, w)
        rows.append(predictor.compare(lut, w, {"p50_ms": p["p50_ms"] / (1 + err), "p90_ms": p["p90_ms"]}))
    s = predictor.summarise(rows)
    assert s["within_tolerance_p50"] == pytest.approx(0.6) and s["within_tolerance_p90"] == 1.0
    assert s["max_abs_error_p50"] == pytest.approx(0.3)


def test_check_arch_refuses_another_architecture():
    lut, arch = fake_lut()
    predictor.check_arch(lut, ModelConfig(width=0.25).to_dict())
    with pytest.raises(GatekitError, match="gatekit profile"):
        predictor.check_arch(lut, ModelConfig(width=0.5).to_dict())


def test_choose_takes_the_most_channels_that_meet_the_target():
    lut, arch = fake_lut()
    full = [b.planes for b in arch.blocks()]
    options = [(0.0, full), (0.1, [p // 2 for p in full]), (0.3, [4] * 8)]
    pred = [predictor.predict(lut, w)["p90_ms"] for _, w in options]
    assert pred[0] > pred[1] > pred[2]
    assert choose(lut, options, pred[0] + 1e-9, 90)["chosen"]["min_usage"] == 0.0
    assert choose(lut, options, pred[0] - 1e-6, 90)["chosen"]["min_usage"] == 0.1
    assert choose(lut, options, pred[0], 90, margin=0.05)["chosen"]["min_usage"] == 0.1
    with pytest.raises(GatekitError, match="predicted at"):
        choose(lut, options, pred[2] * 0.5, 90)
    with pytest.raises(GatekitError, match="p50 and p90"):
        choose(lut, options, 1.0, 99)


def test_threshold_options_shrink_as_the_threshold_rises():
    usage = [torch.tensor([10, 0, 3, 7, 1, 9, 2, 5]), torch.tensor([10, 10, 4, 4])]
    opts = threshold_options(usage, 10, 1, 1)
    assert opts[0] == (0.0, [7, 4])  # every channel ever on
    totals = [sum(w) for _, w in opts]
    assert totals == sorted(totals, reverse=True) and len(set(map(tuple, (w for _, w in opts)))) == len(opts)
    assert opts[-1][1] == [1, 2]  # only always-on channels (at least one per block)


def test_profile_builds_and_checks_a_table(cifar_dir):
    from gatekit.pick.profile import real_inputs

    arch = Architecture(width=0.125, input_size=32)
    images = real_inputs("cifar10", str(cifar_dir), 32, count=8)
    opts = ProfileOptions(
        runtime="ort", threads=1, round_to=8, protocol=TINY, check_protocol=TINY, check=3, native=False
    )
    lut = profile(arch, opts, images)
    assert "native" not in lut
    assert [len(b["widths"]) for b in lut["blocks"]] == [len(b.grid(8)) for b in arch.blocks()]
    assert all(v > 0 for b in lut["blocks"] for v in b["p50_ms"])
    assert lut["validation"]["count"] == 3 and 0 <= lut["validation"]["within_tolerance_p50"] <= 1
    assert lut["runtime"]["name"] == "ort" and lut["runtime"]["threads"] == 1
    assert lut["machine"]["cpu"] and len(lut["calibration"]["configs"]) >= 2
    with pytest.raises(GatekitError, match="profile inputs"):
        profile(arch, opts, images[:, :, :16, :16])


def test_profile_cli_writes_a_lut_and_plot(cifar_dir, tmp_path, capsys):
    out = tmp_path / "lut.json"
    with pytest.raises(SystemExit) as e:
        main(
            [
                "profile",
                "--runtime",
                "ort",
                "--width",
                "0.125",
                "--round-to",
                "8",
                "--check",
                "2",
                "--min-runs",
                "10",
                "--no-native",
                "--min-seconds",
                "0.02",
                "--data-dir",
                str(cifar_dir),
                "--out",
                str(out),
                "--plot",
                str(tmp_path / "v.png"),
                "--json",
                str(tmp_path / "s.json"),
                "--quiet",
            ]
        )
    assert e.value.code in (0, None)
    lut = load_lut(out)
    assert lut["threads"] == 1 and (tmp_path / "v.png").stat().st_size > 1000
    assert json.loads((tmp_path / "s.json").read_text())["count"] == 2
    assert "held-out check: 2 configurations" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["profile", "--runtime", "tflite", "--out", "x.json"], "unknown runtime"),
        (["pick", "--target-ms", "1"], "needs --results"),
        (["pick", "--target-ms", "1", "--lut", "missing.json", "--checkpoint", "c", "--export-to", "d"], "no such LUT"),
        (["pick", "--target-ms", "1", "--lut", "missing.json"], "needs --usage MANIFEST"),
    ],
)
def test_cli_errors_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and message in err and "\n" not in err


def test_load_lut_refuses_other_json(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"schema": "gatekit.bench/1"}))
    with pytest.raises(GatekitError, match="not a gatekit LUT"):
        load_lut(p)
    p.write_text("{broken")
    with pytest.raises(GatekitError, match="unreadable"):
        load_lut(p)


def test_profile_and_predict_import_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import gatekit.pick.profile, gatekit.pick.predict, gatekit.pick.synth, gatekit.pick.select"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO)
    )
    assert proc.returncode == 0, proc.stderr
