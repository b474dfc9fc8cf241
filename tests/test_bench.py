"""The latency protocol, the records and the report; a cross-check against OpenVINO's benchmark_app."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from gatekit.artifacts import open_artifact
from gatekit.bench.protocol import Measurement, Protocol, latency_stats, measure, per_input_latency, per_input_stats
from gatekit.bench.run import SCHEMA, read_jsonl, write_jsonl
from gatekit.bench.tables import markdown_table, plot_latency_vs_flops, with_ratios
from gatekit.errors import GatekitError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SleepySession:
    """A fake session whose latency is known: input k sleeps k * 0.5 ms."""

    def __init__(self):
        self.calls = 0

    def run(self, x):
        self.calls += 1
        time.sleep(float(x.flat[0]) * 5e-4)
        return x


def test_protocol_warms_up_then_stops_at_min_runs():
    s = SleepySession()
    batches = [np.full((1, 1), k, np.float32) for k in (0, 2)]
    m = measure(s, batches, Protocol(warmup_runs=5, warmup_seconds=0.0, min_runs=40, min_seconds=60))
    assert len(m.latencies_ns) == 40 and s.calls == 45
    lat = per_input_latency(m)
    assert lat[1] > lat[0] + 0.5  # input 1 sleeps 1 ms, input 0 not at all


def test_per_input_stats_split_interleaved_runs_by_input():
    """Runs cycled over inputs: each input's percentiles come from its own runs only."""
    ms = np.array([1, 10, 2, 20, 3, 30, 4, 40, 5, 50], np.int64) * 1_000_000  # input 0: 1..5 ms, input 1: 10..50
    m = Measurement(ms, np.array([0, 1] * 5), batch=1)
    st = per_input_stats(m)
    assert set(st) == {0, 1} and st[0]["runs"] == st[1]["runs"] == 5
    assert st[0]["p50_ms"] == 3.0 and st[1]["p50_ms"] == 30.0
    assert st[0]["p90_ms"] == np.percentile([1, 2, 3, 4, 5], 90) and st[1]["max_ms"] == 50.0
    assert per_input_latency(m) == {0: 3.0, 1: 30.0}


def test_protocol_stops_at_min_seconds_but_never_below_the_floor():
    s = SleepySession()
    m = measure(
        s,
        [np.full((1, 1), 2, np.float32)],
        Protocol(warmup_runs=1, warmup_seconds=0.0, min_runs=10**6, min_seconds=0.05, floor_runs=20),
    )
    assert 20 <= len(m.latencies_ns) < 200


def test_latency_stats():
    st = latency_stats(np.array([1, 2, 3, 4, 100], dtype=np.int64) * 1_000_000, batch=2)
    assert st["p50_ms"] == 3 and st["min_ms"] == 1 and st["max_ms"] == 100 and st["runs"] == 5
    assert st["mean_ms"] == pytest.approx(22) and st["throughput_per_s"] == pytest.approx(2000 / 22)


def record(graph, flops, p50, threads=1, sha="a", name="onnxruntime", width=1.0, precision="fp32"):
    return {
        "schema": SCHEMA,
        "manifest": {
            "graph": graph,
            "budget": 0.3,
            "dynamic_form": None,
            "checkpoint_sha256": sha,
            "macs": {"ratio_to_dense": flops},
            "model_config": {"arch": "resnet18", "width": width, "stem": "cifar", "input_size": 32, "gate_group": 1},
        },
        "runtime": {"name": name, "provider": "CPU", "version": "1"},
        "precision": precision,
        "threads": threads,
        "batch": 1,
        "stats": {"p50_ms": p50, "p90_ms": p50 * 1.1},
    }


def test_ratios_use_the_dense_graph_of_the_same_runtime_and_threads():
    recs = with_ratios(
        [
            record("dense", 1.0, 4.0),
            record("dense", 1.0, 2.0, threads=2),
            record("static", 0.5, 2.2),
            record("static", 0.5, 1.5, threads=2),
        ]
    )
    ratios = {(r["manifest"]["graph"], r["threads"]): r["latency_ratio"]["p50"] for r in recs}
    assert ratios[("static", 1)] == pytest.approx(0.55) and ratios[("static", 2)] == pytest.approx(0.75)
    table = markdown_table(recs)
    assert "| resnet18 x1 32px a | 0.3 | static | 0.500 | 2.200 / 2.420 (0.55) | 1.500 / 1.650 (0.75) |" in table


SMALL, FULL = "5" * 64, "f" * 64  # two checkpoints trained at t_d 0.3: x0.25 and full width


def marker_of(collection) -> tuple:
    return tuple(map(tuple, collection.get_paths()[0].vertices.round(3)))


def test_two_checkpoints_at_one_t_d_are_two_networks_in_the_bench_table_and_plot(tmp_path):
    """x0.25 and full width at one t_d: two static rows, each with its own FLOPs ratio, latency and dense
    graph; in the plot, one marker style per network and a legend beside the panels, over no data."""
    small = [
        record("dense", 1.0, 0.42, sha=SMALL, width=0.25),
        record("static", 0.827, 0.36, sha=SMALL, width=0.25),
        record("dense", 1.0, 0.30, sha=SMALL, width=0.25, threads=2),
        record("static", 0.827, 0.27, sha=SMALL, width=0.25, threads=2),
    ]
    full = [
        record("dense", 1.0, 7.0, sha=FULL),
        record("static", 0.44, 2.94, sha=FULL),
        record("dense", 1.0, 3.6, sha=FULL, threads=2),
        record("static", 0.44, 1.53, sha=FULL, threads=2),
    ]
    table = markdown_table(small + full)
    rows = [line for line in table.splitlines() if line.startswith("| resnet18")]
    assert len(rows) == 4 and "no ratio" not in table
    assert (
        "| resnet18 x0.25 32px 55555555 | 0.3 | static | 0.827 | 0.360 / 0.396 (0.86) | 0.270 / 0.297 (0.90) |" in rows
    )
    assert "| resnet18 x1 32px ffffffff | 0.3 | static | 0.440 | 2.940 / 3.234 (0.42) | 1.530 / 1.683 (0.42) |" in rows
    assert "| resnet18 x1 32px ffffffff | 0.3 | dense | 1.000 | 7.000 / 7.700 (1.00) | 3.600 / 3.960 (1.00) |" in rows

    fig = plot_latency_vs_flops(small + full, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    panels = [ax for ax in fig.axes if ax.collections]
    assert len(panels) == 2  # 1 and 2 threads
    markers: dict[str, set] = {}
    for ax in panels:
        for c in ax.collections:
            markers.setdefault(c.get_gid().split(",")[0], set()).add(marker_of(c))
    assert set(markers) == {"resnet18 x0.25 32px 55555555", "resnet18 x1 32px ffffffff"}
    assert all(len(m) == 1 for m in markers.values()) and len(set.union(*markers.values())) == 2
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in fig.axes)
    names = [t.get_text() for t in legend.get_texts()]
    assert "resnet18 x0.25 32px 55555555, t_d 0.3" in names and "resnet18 x1 32px ffffffff, t_d 0.3" in names


def test_int8_and_fp32_each_have_their_own_dense_reference(tmp_path):
    recs = [
        record("dense", 1.0, 4.0),
        record("static", 0.5, 2.0),
        record("dense", 1.0, 1.0, precision="int8"),
        record("static", 0.5, 0.8, precision="int8"),
    ]
    ratios = {(r["manifest"]["graph"], r["precision"]): r["latency_ratio"]["p50"] for r in with_ratios(recs)}
    assert ratios == {("dense", "fp32"): 1.0, ("static", "fp32"): 0.5, ("dense", "int8"): 1.0, ("static", "int8"): 0.8}
    fig = plot_latency_vs_flops(recs, tmp_path / "p.png")
    panels = {ax.get_title(): ax for ax in fig.axes if ax.collections}
    assert set(panels) == {"ORT 1T b1", "ORT int8 1T b1"}
    for ax in panels.values():  # each panel's dense point is its own reference
        dense = [c for c in ax.collections if c.get_gid().endswith(": dense")]
        assert len(dense) == 1 and dense[0].get_offsets()[0][1] == 1.0


def test_a_record_without_the_dense_graph_of_its_checkpoint_has_no_ratio(tmp_path):
    """A checkpoint measured without its dense graph: its latency alone, not a ratio to another checkpoint's
    dense graph of the same architecture; the table says why, and the plot leaves it out."""
    recs = [
        record("dense", 1.0, 4.0, sha=SMALL),
        record("static", 0.5, 2.0, sha=SMALL),
        record("static", 0.3, 1.5, sha=FULL),
    ]
    out = {r["manifest"]["checkpoint_sha256"] + r["manifest"]["graph"]: r for r in with_ratios(recs)}
    assert "latency_ratio" not in out[FULL + "static"]
    assert out[FULL + "static"]["no_ratio"] == "no dense graph of checkpoint ffffffff"
    assert out[SMALL + "static"]["latency_ratio"]["p50"] == 0.5
    table = markdown_table(recs)
    assert "| resnet18 x1 32px ffffffff | 0.3 | static | 0.300 | 1.500 / 1.650 (no ratio) |" in table
    assert table.splitlines()[-1] == (
        "- resnet18 x1 32px ffffffff has no latency ratio: no dense graph of checkpoint "
        "ffffffff was measured; its latencies are shown alone."
    )
    fig = plot_latency_vs_flops(recs, tmp_path / "p.png")
    (ax,) = fig.axes
    assert ax.get_title() == "ORT 1T b1\n1 without a dense reference, not drawn"
    assert sorted(c.get_gid() for c in ax.collections) == [
        "resnet18 x1 32px 55555555, t_d 0.3: dense",
        "resnet18 x1 32px 55555555, t_d 0.3: static",
    ]


def test_a_dense_graph_measured_on_one_runtime_only_gives_ratios_there_only():
    recs = [
        record("dense", 1.0, 4.0),
        record("static", 0.5, 2.0),
        record("static", 0.5, 1.2, threads=2),
        record("static", 0.5, 1.0, name="openvino"),
    ]
    table = markdown_table(recs)
    assert "| resnet18 x1 32px a | 0.3 | static | 0.500 | 2.000 / 2.200 (0.50) | 1.200 / 1.320 (no ratio) |" in table
    assert table.splitlines()[-1] == (
        "- resnet18 x1 32px a has no latency ratio: no dense graph of checkpoint a on "
        "ORT 2T b1, OpenVINO 1T b1; its latencies are shown alone."
    )


def test_a_pruned_network_takes_its_ratio_to_the_dense_graph_it_was_pruned_from():
    """Its FLOPs ratio counts against the checkpoint it was pruned from, so its latency ratio does too."""
    pruned = record("dense", 0.6, 2.4, sha=FULL, width=0.25)
    pruned["manifest"]["pruned"] = {"tool": "torch-pruning", "ratio": 0.5, "from": {"sha256": SMALL}}
    recs = with_ratios([record("dense", 1.0, 4.0, sha=SMALL, width=0.25), pruned])
    assert recs[1]["latency_ratio"]["p50"] == pytest.approx(0.6)
    alone = with_ratios([pruned])[0]
    assert alone["no_ratio"] == "no dense graph of checkpoint 55555555 (the checkpoint it was pruned from)"


def test_runtime_names_are_read_as_one_name(tmp_path):
    write_jsonl(
        tmp_path / "r.jsonl",
        [
            record("dense", 1.0, 4.0),
            record("static", 0.5, 2.0, name="ort"),
            record("static", 0.5, 2.0, name="some-new-runtime"),
        ],
    )
    assert [r["runtime"]["name"] for r in read_jsonl([tmp_path / "r.jsonl"])] == ["ort", "ort", "some-new-runtime"]


def test_plot_and_jsonl_round_trip(tmp_path):
    recs = [record("dense", 1.0, 4.0), record("static", 0.5, 2.2)]
    plot_latency_vs_flops(recs, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    write_jsonl(tmp_path / "r.jsonl", recs)
    write_jsonl(tmp_path / "r.jsonl", recs[:1])  # appends
    assert len(read_jsonl([tmp_path / "r.jsonl"])) == 3
    (tmp_path / "bad.jsonl").write_text(json.dumps({"schema": "other/9"}) + "\n")
    with pytest.raises(GatekitError, match="expected gatekit.bench/1"):
        read_jsonl([tmp_path / "bad.jsonl"])


def test_artifact_without_manifest_is_a_clear_error(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"")
    with pytest.raises(GatekitError, match="no manifest for"):
        open_artifact(tmp_path / "x.onnx")
    with pytest.raises(GatekitError, match="not an artifact"):
        open_artifact(tmp_path / "x.tflite")


def test_bench_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None; import gatekit.bench.run, gatekit.bench.tables, gatekit.runtimes"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO)
    )
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def exported_ir(tmp_path_factory):
    """A real exported IR (width 0.5 CIFAR ResNet-18 dense graph) with its manifest."""
    import torch

    from gatekit.checkpoint import save_model
    from gatekit.export.exporter import ExportOptions, export
    from gatekit.models import GatedResNet, ModelConfig

    tmp = tmp_path_factory.mktemp("ir")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)  # test = train: calibration covers the test images
    np.savez(tmp / "d.npz", x_train=x, y_train=np.zeros(64, np.uint8), x_test=x, y_test=np.zeros(64, np.uint8))
    torch.manual_seed(0)
    model = GatedResNet(ModelConfig(width=0.5)).eval()
    save_model(tmp / "m.safetensors", model, {"train_config": {"dataset": "npz", "data_dir": str(tmp / "d.npz")}})
    export(
        tmp / "m.safetensors",
        tmp / "out",
        ExportOptions(graph="dense", fmt="openvino", verify_images=32, threads=1),
        progress=False,
    )
    return tmp / "out" / "dense.xml"


def test_bench_cli_records_a_real_run(exported_ir, tmp_path):
    manifest = json.loads(exported_ir.with_name("dense.openvino.json").read_text())
    data = manifest["input"]  # the bench reads the manifest's dataset: point GATEKIT_DATA-free npz loading at it
    assert data["dataset"] == "npz"
    cmd = [
        sys.executable,
        "-m",
        "gatekit",
        "bench",
        str(exported_ir),
        "--threads",
        "1",
        "--inputs",
        "16",
        "--min-runs",
        "60",
        "--min-seconds",
        "5",
        "--warmup-runs",
        "5",
        "--json",
        str(tmp_path / "r.jsonl"),
        "--table",
        str(tmp_path / "t.md"),
        "--plot",
        str(tmp_path / "p.png"),
        "--quiet",
        "--data-dir",
        str(exported_ir.parent.parent / "d.npz"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr[-2000:]
    (rec,) = read_jsonl([tmp_path / "r.jsonl"])
    assert rec["runtime"]["name"] == "openvino" and rec["precision"] == "fp32" and rec["threads"] == 1
    assert rec["stats"]["runs"] == 60 and rec["stats"]["p90_ms"] >= rec["stats"]["p50_ms"] > 0
    assert rec["machine"]["cores"] >= 1 and rec["manifest"]["graph"] == "dense"
    assert "| dense |" in (tmp_path / "t.md").read_text()


def _ratio_to_benchmark_app(ir, pairs: int = 5) -> list[float]:
    from gatekit.bench.crosscheck import benchmark_app_path, crosscheck

    if benchmark_app_path() is None:
        pytest.skip("benchmark_app (shipped in the openvino wheel) not found")
    return [p["ratio"] for p in crosscheck(ir, threads=1, pairs=pairs)["pairs"]]


@pytest.mark.benchmark
def test_layer_counters_cover_the_ir_and_add_up_to_its_latency(exported_ir):
    """benchmark_app's per-layer counters (int8_profile.py, native_profile.py): every executed layer with a
    type and a time; a dense ResNet spends most of its time in convolutions, and the counters' sum is an
    inference: at most twice benchmark_app's median (which includes the request's own overhead) and at least
    half the fastest inference gatekit times. Not half the median: on a busy host the median includes waits for
    a core that the counters leave out (the sum was 0.4 of the median at load average 8 on 2 cores)."""
    from gatekit.bench.crosscheck import benchmark_app_path, layer_counters
    from gatekit.runtimes import load_session

    if benchmark_app_path() is None:
        pytest.skip("benchmark_app (shipped in the openvino wheel) not found")
    res = layer_counters(exported_ir, [1, 3, 32, 32], threads=1, seconds=1)
    with load_session(exported_ir, "openvino", threads=1) as s:
        x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
        fastest = measure(s, [x], Protocol(warmup_runs=20, min_runs=200, min_seconds=1)).stats()["min_ms"]
    layers = res["layers"]
    assert layers and all(lay["type"] and lay["ms"] >= 0 for lay in layers)
    total = sum(lay["ms"] for lay in layers)
    conv = sum(lay["ms"] for lay in layers if lay["type"] == "Convolution")
    assert conv > 0.5 * total
    assert 0.5 * fastest <= total <= 2.0 * res["median_ms"], (total, fastest, res["median_ms"])


def test_layer_counters_feed_the_given_inputs_to_benchmark_app(exported_ir):
    """Real inputs (a dynamic graph's work depends on them) reach benchmark_app as float32 files, one per
    inference: the right shape runs, a wrong one is refused by benchmark_app itself (so the files are read)."""
    from gatekit.bench.crosscheck import benchmark_app_path, layer_counters

    if benchmark_app_path() is None:
        pytest.skip("benchmark_app (shipped in the openvino wheel) not found")
    rng = np.random.default_rng(0)
    good = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(3)]
    res = layer_counters(exported_ir, [1, 3, 32, 32], threads=1, seconds=1, inputs=good)
    assert res["median_ms"] > 0 and res["layers"]
    with pytest.raises(GatekitError, match="benchmark_app failed"):
        layer_counters(
            exported_ir,
            [1, 3, 32, 32],
            threads=1,
            seconds=1,
            inputs=[rng.standard_normal((1, 3, 16, 16)).astype(np.float32)],
        )


def test_counters_by_group_sums_each_run_then_takes_the_median():
    from gatekit.bench.crosscheck import counters_by_group

    def run(*layers):
        return {"layers": [{"name": n, "type": t, "ms": ms} for n, t, ms in layers], "median_ms": 1.0}

    runs = [
        run(("a", "Convolution", 1.0), ("b", "Convolution", 2.0), ("r", "Reorder", 0.5)),
        run(("a", "Convolution", 4.0), ("b", "Convolution", 4.0)),
        run(("a", "Convolution", 2.0), ("b", "Convolution", 2.0), ("r", "Reorder", 0.1)),
    ]
    got = counters_by_group(runs, lambda layer: layer["type"].lower())
    assert got == {"convolution": 4.0, "reorder": 0.1}  # medians of (3, 8, 4) and (0.5, 0, 0.1)


@pytest.mark.benchmark
def test_p50_agrees_with_benchmark_app(exported_ir):
    """A width-0.5 IR: the median of five interleaved per-pair ratios within 15%. On a busy 2-core host single
    pairs move by up to 20% (0.82 to 1.21 at load average 8) while the median stays within a few percent; the
    recorded quiet-machine cross-check in benchmarks/bench_cpu is within 5%."""
    ratios = _ratio_to_benchmark_app(exported_ir)
    assert abs(np.median(ratios) - 1) <= 0.15, ratios


@pytest.mark.benchmark
def test_p50_agrees_with_benchmark_app_on_the_smallest_recorded_model(cifar_dir, tmp_path):
    """The recorded ResNet-18 x0.25 t_d 0.3 static IR (0.3-0.7 ms an inference: where any per-call cost shows
    most): the median of five per-pair ratios within 20% (five, so that two pairs hit by a busy host's bursts
    do not move it); the quiet-machine figures are in benchmarks/bench_cpu/harness.md."""
    from gatekit.export.exporter import ExportOptions, export

    ckpt = os.path.join(REPO, "benchmarks", "train_cifar10", "checkpoints", "vicreg-dual.safetensors")
    export(
        ckpt,
        tmp_path,
        ExportOptions(graph="static", fmt="openvino", calib=500, knn_check=False, threads=1, data_dir=str(cifar_dir)),
        progress=False,
    )
    ratios = _ratio_to_benchmark_app(tmp_path / "static.xml")
    assert abs(np.median(ratios) - 1) <= 0.20, ratios


def test_sweep_exports_and_benchmarks_every_graph(exported_ir, tmp_path):
    ckpt = exported_ir.parent.parent / "m.safetensors"
    cmd = [
        sys.executable,
        "-m",
        "gatekit",
        "bench",
        "--sweep",
        str(ckpt),
        "--out",
        str(tmp_path / "art"),
        "--threads",
        "1",
        "--inputs",
        "8",
        "--min-runs",
        "20",
        "--min-seconds",
        "0.2",
        "--warmup-runs",
        "2",
        "--json",
        str(tmp_path / "s.jsonl"),
        "--plot",
        str(tmp_path / "s.png"),
        "--quiet",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO), timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    recs = read_jsonl([tmp_path / "s.jsonl"])
    assert {(r["manifest"]["graph"], r["runtime"]["name"]) for r in recs} == {
        (g, rt) for g in ("dense", "static", "hybrid", "dynamic") for rt in ("ort", "openvino")
    }
    dyn = [r for r in recs if r["manifest"]["graph"] == "dynamic"]
    assert all(len(r["per_input"]) == 8 for r in dyn)
    assert (tmp_path / "s-per-input.png").is_file()
