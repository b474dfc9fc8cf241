"""gatekit compare and pick across families, on hand-built bench and accuracy records; the numpy k-NN and
linear probe of `gatekit accuracy` against the torch ones of `gatekit eval`."""

import json

import numpy as np
import pytest

from gatekit.bench.accuracy import SCHEMA, knn_accuracy, linear_probe
from gatekit.cli import cli
from gatekit.errors import GatekitError
from gatekit.pick import compare as cmp
from gatekit.pick.families import DENSE, DENSE_INT8, GATEKIT, TORCH_PRUNING, TORCH_PRUNING_FT, family_of, label_of
from gatekit.pick.select import candidates, load_accuracies, pick


def summary(
    kind,
    *,
    budget=None,
    graph="dense",
    precision="fp32",
    width=0.25,
    ratio=None,
    ft=False,
    fmt="onnx",
    flops=1.0,
    min_usage=0.0,
):
    m = {
        "graph": graph,
        "format": fmt,
        "precision": precision,
        "budget": budget,
        "model_config": {"width": width},
        "macs": {"ratio_to_dense": flops},
        "method": {"gatekit": "vicreg-dual"}.get(kind, "vicreg"),
        "widths": [16],
        "pruning": {"min_usage": min_usage} if graph == "static" else None,
        "pruned": None,
    }
    if kind == "tp":
        m["pruned"] = {"tool": "torch-pruning", "ratio": ratio, **({"fine_tune": {"epochs": 1}} if ft else {})}
    return m


def bench(art, m, p90s, runtime="ort", threads=1):
    return [
        {
            "schema": "gatekit.bench/1",
            "artifact": art,
            "manifest": m,
            "runtime": {"name": runtime},
            "threads": threads,
            "batch": 1,
            "precision": m["precision"],
            "stats": {"p90_ms": v, "p50_ms": v * 0.9},
        }
        for v in p90s
    ]


def acc(art, m, top1, linear=None):
    r = {"schema": SCHEMA, "artifact": art, "manifest_path": art + ".json", "manifest": m, "knn": {"top1": top1}}
    if linear is not None:
        r["linear"] = {"top1": linear}
    return r


def point(acc_, lat, family="x"):
    return cmp.Point(family, f"{family}@{lat}", lat, acc_, 1.0, "fp32", "a", {})


def test_families_and_labels():
    assert family_of(summary("gatekit", budget=0.3, graph="static")) == GATEKIT
    assert family_of(summary("gatekit", budget=0.3, graph="static", precision="int8")) == GATEKIT
    assert family_of(summary("tp", ratio=0.5)) == TORCH_PRUNING
    assert family_of(summary("tp", ratio=0.5, ft=True)) == TORCH_PRUNING_FT
    assert family_of(summary("dense", width=0.1875)) == DENSE
    assert family_of(summary("dense", precision="int8")) == DENSE_INT8
    assert label_of(summary("gatekit", budget=0.3, graph="static", min_usage=0.1)) == "t_d 0.3 static min-usage 0.1"
    assert label_of(summary("tp", ratio=0.5)) == "ratio 0.5"
    assert label_of(summary("dense", width=0.1875)) == "x0.1875"


def test_front_keeps_only_undominated_points_fastest_first():
    pts = [point(0.60, 1.0), point(0.58, 1.2), point(0.65, 1.5), point(0.64, 2.0), point(0.70, 3.0), point(None, 0.1)]
    front = cmp.pareto_front(pts)
    assert [(p.latency_ms, p.accuracy) for p in front] == [(1.0, 0.60), (1.5, 0.65), (3.0, 0.70)]


def test_interpolation_between_neighbours_below_and_beyond_the_front():
    front = cmp.pareto_front([point(0.60, 1.0), point(0.70, 2.0)])
    assert cmp.interpolate(front, 1.5) == pytest.approx(0.65)
    assert cmp.interpolate(front, 1.0) == pytest.approx(0.60)
    assert cmp.interpolate(front, 0.9) is None  # nothing that fast
    assert cmp.interpolate(front, 5.0) == pytest.approx(0.70)  # a slower budget keeps the most accurate point
    one = cmp.pareto_front([point(0.5, 2.0)])  # a family with one point
    assert cmp.interpolate(one, 1.9) is None and cmp.interpolate(one, 2.0) == 0.5 and cmp.interpolate(one, 9) == 0.5
    assert cmp.interpolate([], 1.0) is None


def _records():
    g = summary("gatekit", budget=0.3, graph="static", flops=0.8)
    gh = summary("gatekit", budget=0.3, graph="hybrid", flops=0.82)
    g_int8 = summary("gatekit", budget=0.3, graph="static", precision="int8", flops=0.8)
    tp1, tp2 = summary("tp", ratio=0.5, flops=0.6), summary("tp", ratio=0.25, flops=0.9)
    d = summary("dense", flops=1.0)
    b = (
        bench("/a/gk/static.onnx", g, [1.0, 1.2, 1.1])
        + bench("/a/gk/hybrid.onnx", gh, [1.3])
        + bench("/a/gk/static-int8.onnx", g_int8, [0.5])
        + bench("/a/tp5/dense.onnx", tp1, [0.8])
        + bench("/a/tp25/dense.onnx", tp2, [1.4])
        + bench("/a/d/dense.onnx", d, [1.6])
        + bench("/a/gk/static.xml", dict(g, format="openvino"), [0.9], runtime="openvino")
        + bench("/a/gk/static-int8.xml", dict(g_int8, format="openvino"), [0.4], runtime="openvino")
    )
    a = [
        acc("/a/gk/static.onnx", g, 0.66, 0.65),
        acc("/a/gk/hybrid.onnx", gh, 0.665),
        acc("/a/tp5/dense.onnx", tp1, 0.60),
        acc("/a/tp25/dense.onnx", tp2, 0.64),
        acc("/a/d/dense.onnx", d, 0.665),
        acc("/a/gk/static-int8.xml", dict(g_int8, format="openvino"), 0.62),
    ]
    return b, a


def test_compare_headline_interpolates_each_family_at_the_reference_latency():
    b, a = _records()
    result = cmp.compare(b, a)
    ort = next(g for g in result["groups"] if g["runtime"] == "ort")
    h = ort["headlines"]["fp32"]
    assert h["reference"]["label"] == "t_d 0.3 static" and h["reference"]["latency_ms"] == pytest.approx(1.1)  # median
    tp = h["families"][TORCH_PRUNING]
    assert tp["accuracy"] == pytest.approx(0.60 + (1.1 - 0.8) / (1.4 - 0.8) * 0.04)
    assert tp["gatekit_minus_family_points"] == pytest.approx(100 * (0.66 - tp["accuracy"]))
    assert h["families"][DENSE]["accuracy"] is None  # dense is slower than the reference
    # an int8 accuracy measured on OpenVINO does not apply to the ONNX Runtime int8 graph
    assert "t_d 0.3 static int8 [x0.25 no checkpoint]" in ort["missing_accuracy"]
    ov = next(g for g in result["groups"] if g["runtime"] == "openvino")
    by_label = {p["label"]: p for p in ov["points"]}
    assert by_label["t_d 0.3 static"]["accuracy"] == pytest.approx(0.66)  # fp32 accuracy is shared across formats
    assert by_label["t_d 0.3 static int8"]["accuracy"] == pytest.approx(0.62)
    assert ov["headlines"]["int8"]["reference"]["latency_ms"] == pytest.approx(0.4)  # a headline per precision
    assert "int8" not in ort["headlines"]  # the ORT int8 graph has no measured accuracy: no int8 reference there
    assert "torch-pruning" in cmp.markdown(result)


def test_reference_follows_the_gate_group_asked_for():
    b, a = _records()
    g16 = summary("gatekit", budget=0.3, graph="static", flops=0.6)
    g16["model_config"]["gate_group"] = 16
    b += bench("/a/g16/static.onnx", g16, [0.9])
    a += [acc("/a/g16/static.onnx", g16, 0.667)]
    per_channel = next(g for g in cmp.compare(b, a)["groups"] if g["runtime"] == "ort")
    grouped = next(g for g in cmp.compare(b, a, gate_group=16)["groups"] if g["runtime"] == "ort")
    assert per_channel["headlines"]["fp32"]["reference"]["label"] == "t_d 0.3 static"
    assert grouped["headlines"]["fp32"]["reference"]["label"] == "t_d 0.3 g16 static"
    assert grouped["headlines"]["fp32"]["reference"]["latency_ms"] == pytest.approx(0.9)


def test_compare_refuses_records_of_another_kind():
    with pytest.raises(GatekitError, match="accuracy record 1"):
        cmp.compare(_records()[0], [{"knn": 1}])
    with pytest.raises(GatekitError, match="bench record 1"):
        cmp.compare([{"artifact": "x"}], [])


def test_pick_chooses_an_alternative_family_when_it_is_more_accurate_in_the_budget(tmp_path):
    b, a = _records()
    acc_path = tmp_path / "acc.jsonl"
    acc_path.write_text("".join(json.dumps(r) + "\n" for r in a))
    accs = load_accuracies([acc_path])
    cands = candidates(b, accs, runtime="ort", threads=1)
    chosen, why = pick(cands, 1.45)  # gatekit's hybrid (66.5%, 1.3 ms) beats Torch-Pruning ratio 0.25 (64%, 1.4 ms)
    assert chosen.name.startswith("t_d=0.3") and chosen.accuracy == pytest.approx(0.665)
    chosen, why = pick(cands, 0.95)  # only Torch-Pruning ratio 0.5 and the int8 graph (no accuracy on ORT) fit
    assert chosen.name.startswith("torch-pruning ratio 0.5") and chosen.accuracy == pytest.approx(0.60)


def test_compare_cli_writes_table_and_plots(tmp_path):
    from click.testing import CliRunner

    b, a = _records()
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in b))
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in a))
    res = CliRunner().invoke(
        cli,
        [
            "compare",
            "--results",
            str(tmp_path / "b.jsonl"),
            "--accuracy",
            str(tmp_path / "a.jsonl"),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "compare.md").is_file() and (
        tmp_path / "out" / "compare-ort-1t-b1.png"
    ).stat().st_size > 0
    assert json.loads((tmp_path / "out" / "compare.json").read_text())["groups"][0]["headlines"]["fp32"]


def test_numpy_knn_equals_the_torch_knn_of_eval():
    torch = pytest.importorskip("torch")
    from gatekit.evaluate.knn import knn_accuracy as torch_knn

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 16))
    ytr, yte = rng.integers(0, 5, 600), rng.integers(0, 5, 200)
    xtr = centers[ytr] + 1.5 * rng.normal(size=(600, 16))
    xte = centers[yte] + 1.5 * rng.normal(size=(200, 16))
    mine = knn_accuracy(xtr.astype(np.float32), ytr, xte.astype(np.float32), yte, 5)
    ref = torch_knn(
        torch.tensor(xtr, dtype=torch.float32),
        torch.tensor(ytr),
        torch.tensor(xte, dtype=torch.float32),
        torch.tensor(yte),
        k=20,
        metric="cosine",
        num_classes=5,
    )
    assert 0.3 < mine < 1.0 and mine == pytest.approx(ref, abs=1e-9)


def test_numpy_linear_probe_reaches_the_torch_probe():
    torch = pytest.importorskip("torch")
    from gatekit.evaluate.linear_probe import train_linear_probe

    rng = np.random.default_rng(1)
    w = rng.normal(size=(10, 32))
    xtr, xte = rng.normal(size=(3000, 32)) * 3 + 1, rng.normal(size=(1000, 32)) * 3 + 1
    ytr = (xtr @ w.T + rng.gumbel(size=(3000, 10)) * 4).argmax(1)
    yte = (xte @ w.T + rng.gumbel(size=(1000, 10)) * 4).argmax(1)
    mine = linear_probe(xtr, ytr, xte, yte, 10)
    ref = train_linear_probe(
        torch.tensor(xtr, dtype=torch.float32),
        torch.tensor(ytr),
        torch.tensor(xte, dtype=torch.float32),
        torch.tensor(yte),
        num_classes=10,
    )
    assert mine["top1"] > 0.5
    assert abs(mine["top1"] - ref.accuracy) <= 0.01
    assert abs(mine["settings"]["final_loss"] - ref.settings["final_loss"]) < 1e-3


def test_two_networks_with_one_label_are_two_points_each_on_its_own_front():
    """Two gatekit networks at t_d 0.3 (x0.25 and full width): one label, two names; whether a point is on
    the front is its own, not that of the other network's point with the same label."""

    def gk(sha, width, flops):
        m = summary("gatekit", budget=0.3, graph="static", flops=flops, width=width)
        m["checkpoint_sha256"] = sha
        return m

    small, full = gk("5" * 64, 0.25, 0.83), gk("f" * 64, 1.0, 0.44)
    b = bench("/a/x025/static.onnx", small, [0.4]) + bench("/a/full/static.onnx", full, [3.0])
    a = [acc("/a/x025/static.onnx", small, 0.70), acc("/a/full/static.onnx", full, 0.65)]  # full width: slower, worse
    (g,) = cmp.compare(b, a)["groups"]
    assert [(p["label"], p["network"], p["on_front"]) for p in g["points"]] == [
        ("t_d 0.3 static", "x0.25 55555555", True),
        ("t_d 0.3 static", "x1 ffffffff", False),
    ]
    assert g["fronts"][GATEKIT] == ["t_d 0.3 static [x0.25 55555555]"]
    rows = [line for line in cmp.markdown(cmp.compare(b, a)).splitlines() if line.startswith("| gatekit |")]
    assert rows == [
        "| gatekit | x0.25 55555555 | t_d 0.3 static | 1 | 0.400 | 0.830 | 70.00 | yes |",
        "| gatekit | x1 ffffffff | t_d 0.3 static | 1 | 3.000 | 0.440 | 65.00 |  |",
    ]


def _seed_records(gk_accs, dense_accs, gk_lat=1.0, dense_lat=(0.9, 1.2)):
    """gatekit t_d 0.3 static and two dense widths, one artifact per training run (checkpoint)."""
    b, a = [], []
    for i, top1 in enumerate(gk_accs):
        m = dict(summary("gatekit", budget=0.3, graph="static", flops=0.8), checkpoint_sha256=f"gk{i}")
        b += bench(f"/s{i}/gk/static.onnx", m, [gk_lat + 0.01 * i])
        a.append(acc(f"/s{i}/gk/static.onnx", m, top1))
    for width, lat in zip((0.125, 0.1875), dense_lat):
        for i, top1 in enumerate(dense_accs[width]):
            m = dict(summary("dense", width=width), checkpoint_sha256=f"d{width}-{i}")
            b += bench(f"/s{i}/d{width}/dense.onnx", m, [lat])
            a.append(acc(f"/s{i}/d{width}/dense.onnx", m, top1))
    return b, a


def test_a_family_of_three_seeds_is_one_point_at_its_mean_with_its_spread():
    b, a = _seed_records([0.66, 0.67, 0.65], {0.125: [0.62, 0.63, 0.64], 0.1875: [0.66, 0.68, 0.67]})
    ort = cmp.compare(b, a)["groups"][0]
    by_label = {p["label"]: p for p in ort["points"]}
    assert len(ort["points"]) == 3
    gk = by_label["t_d 0.3 static"]
    assert gk["seeds"] == 3 and len(gk["artifacts"]) == 3
    assert gk["accuracy"] == pytest.approx(0.66) and gk["latency_ms"] == pytest.approx(1.01)
    assert gk["accuracy_sd"] == pytest.approx(0.01) and gk["accuracy_range"] == pytest.approx([0.65, 0.67])
    assert by_label["x0.125"]["accuracy"] == pytest.approx(0.63)
    md = cmp.markdown(cmp.compare(b, a))
    assert "| gatekit | x0.25 (3 runs) | t_d 0.3 static | 3 | 1.010 | 0.800 | 66.00 ± 1.00 (65.00-67.00) |" in md


def test_a_difference_inside_the_spread_is_reported_as_such():
    # dense front at the reference latency 1.01: 0.63 + (0.11 / 0.3) * 0.04, sd 0.01 on both sides
    b, a = _seed_records([0.64, 0.66, 0.65], {0.125: [0.62, 0.63, 0.64], 0.1875: [0.66, 0.68, 0.67]})
    h = cmp.compare(b, a)["groups"][0]["headlines"]["fp32"]["families"][DENSE]
    assert h["accuracy"] == pytest.approx(0.63 + 0.11 / 0.3 * 0.04)
    assert h["accuracy_sd"] == pytest.approx(0.01)
    assert h["spread_points"] == pytest.approx(100 * (2 * 0.01**2) ** 0.5)
    assert abs(h["gatekit_minus_family_points"]) > 0 and h["verdict"] == "within spread"
    assert "within spread" in cmp.markdown(cmp.compare(b, a))
    # the same means with tight seeds: a difference larger than its spread is called
    b, a = _seed_records([0.660, 0.661, 0.659], {0.125: [0.600, 0.601, 0.599], 0.1875: [0.640, 0.641, 0.639]})
    h = cmp.compare(b, a)["groups"][0]["headlines"]["fp32"]["families"][DENSE]
    assert h["gatekit_minus_family_points"] > h["spread_points"] and h["verdict"] == "ahead"


def test_one_run_has_no_spread_and_no_verdict_beyond_that():
    b, a = _seed_records([0.66], {0.125: [0.62, 0.63, 0.64], 0.1875: [0.66, 0.68, 0.67]})
    ort = cmp.compare(b, a)["groups"][0]
    assert {p["label"]: p["seeds"] for p in ort["points"]}["t_d 0.3 static"] == 1
    h = ort["headlines"]["fp32"]["families"][DENSE]
    assert h["spread_points"] is None and h["verdict"] == "one run"


def test_two_exports_of_one_checkpoint_are_one_run_not_two_seeds():
    m = dict(summary("gatekit", budget=0.3, graph="static", flops=0.8), checkpoint_sha256="same")
    b = bench("/x/a/static.onnx", m, [1.0]) + bench("/x/b/static.onnx", m, [1.2])
    a = [acc("/x/a/static.onnx", m, 0.66), acc("/x/b/static.onnx", m, 0.66)]
    (p,) = cmp.compare(b, a)["groups"][0]["points"]
    assert p["seeds"] == 1 and p["accuracy_sd"] is None and p["latency_ms"] == pytest.approx(1.1)
