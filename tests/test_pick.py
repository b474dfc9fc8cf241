"""`gatekit pick` on a hand-built results file with known answers."""

import json
import os
import subprocess
import sys

import pytest

from gatekit.bench.run import SCHEMA
from gatekit.errors import GatekitError
from gatekit.pick.select import candidates, pick

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rec(graph, budget, p90, sha, flops, knn_static=None, threads=1):
    manifest = {
        "graph": graph,
        "budget": budget,
        "checkpoint_sha256": sha,
        "macs": {"ratio_to_dense": flops},
        "format": "onnx",
        "dynamic_form": None,
    }
    if knn_static is not None:  # measured on a smaller k-NN memory than eval's: static is 0.02 below gated there
        manifest["agreement"] = {"knn20_static": knn_static, "knn20_gated": knn_static + 0.02}
    return {
        "schema": SCHEMA,
        "manifest": manifest,
        "runtime": {"name": "onnxruntime"},
        "threads": threads,
        "batch": 1,
        "precision": "fp32",
        "stats": {"p50_ms": p90 * 0.9, "p90_ms": p90, "p99_ms": p90 * 1.2},
    }


RECORDS = [
    rec("dense", 0.1, 4.0, "A", 1.0),
    rec("static", 0.1, 1.5, "A", 0.3, knn_static=0.80),
    rec("hybrid", 0.1, 1.8, "A", 0.35),
    rec("dense", 0.5, 4.0, "B", 1.0),
    rec("dynamic", 0.5, 2.9, "B", 0.5),
    rec("hybrid", 0.5, 2.5, "B", 0.6),  # same accuracy as dynamic (gated path of B), faster: wins the tie
    rec("static", 0.5, 2.2, "B", 0.55),  # no k-NN agreement recorded: accuracy missing
    rec("dynamic", 0.5, 0.9, "B", 0.5, threads=2),
]
ACC = {
    "A": {"dense": {"knn20_cosine": 0.85}, "gated": {"knn20_cosine": 0.82}},
    "B": {"dense": {"knn20_cosine": 0.90}, "gated": {"knn20_cosine": 0.88}},
}


def chosen_name(target, **kw):
    c, _ = pick(candidates(RECORDS, ACC, threads=1, **kw), target)
    return None if c is None else c.name


def test_best_accuracy_that_meets_the_target():
    assert chosen_name(10) == "t_d=0.5 dense [B] ort 1T b1"  # 0.90, the most accurate
    assert chosen_name(3.0) == "t_d=0.5 hybrid [B] ort 1T b1"  # 0.88: a tie with dynamic, hybrid is faster
    assert chosen_name(2.0) == "t_d=0.1 hybrid [A] ort 1T b1"  # 0.82 beats static's 0.82 - 0.02
    assert chosen_name(1.6) == "t_d=0.1 static [A] ort 1T b1"


def test_static_accuracy_is_the_gated_accuracy_shifted_by_the_measured_difference():
    static_a = next(c for c in candidates(RECORDS, ACC, threads=1) if c.name.startswith("t_d=0.1 static"))
    assert static_a.accuracy == pytest.approx(0.82 - 0.02)


def test_missing_accuracy_is_listed_but_never_chosen():
    cands = candidates(RECORDS, ACC, threads=1)
    static_b = next(c for c in cands if c.name.startswith("t_d=0.5 static"))
    assert static_b.accuracy is None
    c, reason = pick([static_b], 5.0)
    assert c is None and "none has a recorded accuracy" in reason


def test_nothing_feasible_names_the_fastest_and_the_margin():
    c, reason = pick(candidates(RECORDS, ACC, threads=1), 1.0)
    assert c is None
    assert "fastest option is t_d=0.1 static [A] ort 1T b1 at 1.500 ms, 0.500 ms over" in reason


def test_percentile_and_filters():
    assert chosen_name(1.4, percentile=50) == "t_d=0.1 static [A] ort 1T b1"  # p50 = 1.35
    c, _ = pick(candidates(RECORDS, ACC, threads=2), 1.0)
    assert c.name == "t_d=0.5 dynamic [B] ort 2T b1"
    with pytest.raises(GatekitError, match="no recorded result matches"):
        candidates(RECORDS, ACC, runtime="openvino")


def test_pick_cli_exit_codes(tmp_path):
    results = tmp_path / "r.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    acc = tmp_path / "b.json"
    acc.write_text(json.dumps({"checkpoint_sha256": "B", "paths": ACC["B"]}))
    env = dict(os.environ, PYTHONPATH=REPO)
    base = [
        sys.executable,
        "-m",
        "gatekit",
        "pick",
        "--results",
        str(results),
        "--accuracy",
        str(acc),
        "--threads",
        "1",
    ]
    ok = subprocess.run(
        base + ["--target-ms", "3", "--json", str(tmp_path / "p.json"), "--plot", str(tmp_path / "p.png")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "p.json").read_text())["chosen"]["graph"] == "hybrid"
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    none = subprocess.run(base + ["--target-ms", "0.5"], capture_output=True, text=True, env=env)
    assert none.returncode == 1 and "nothing meets 0.5 ms" in none.stderr and "Traceback" not in none.stderr


def test_two_networks_at_one_t_d_are_two_options():
    """x0.25 and full width, both t_d 0.3: two static options with their own names, latencies and accuracies."""

    def net(sha, width, p90, knn):
        r = rec("static", 0.3, p90, sha, 0.8, knn_static=knn)
        r["manifest"]["model_config"] = {
            "arch": "resnet18",
            "width": width,
            "stem": "cifar",
            "input_size": 32,
            "gate_group": 1,
        }
        return r

    small, full = "5" * 64, "f" * 64
    cands = candidates([net(small, 0.25, 0.4, 0.70), net(full, 1.0, 3.0, 0.80)], {}, threads=1)
    assert [c.name for c in cands] == [
        "t_d=0.3 static [resnet18 x0.25 32px 55555555] ort 1T b1",
        "t_d=0.3 static [resnet18 x1 32px ffffffff] ort 1T b1",
    ]
    assert [c.to_dict()["network"] for c in cands] == ["resnet18 x0.25 32px 55555555", "resnet18 x1 32px ffffffff"]
    assert pick(cands, 5.0)[0].name == cands[1].name and pick(cands, 1.0)[0].name == cands[0].name
