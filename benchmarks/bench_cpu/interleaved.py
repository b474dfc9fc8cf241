"""Shared by the CPU suites (native_dynamic.py, precisions.py, native_paired.py, openvino_layout_hint.py): the
checkpoint sets, the jobs of the last native_dynamic.py run, and the measurement phase that runs in a fresh
process (no torch) as interleaved rounds of every job, keeping medians over rounds and the load average of
each round."""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

BUDGETS = (0.1, 0.3, 0.5)
CKPT = ROOT / "benchmarks" / "train_cifar10" / "checkpoints"
SETS = {
    "x0.25": {
        b: CKPT / name
        for b, name in (
            (0.1, "vicreg-dual-td0.1.safetensors"),
            (0.3, "vicreg-dual.safetensors"),
            (0.5, "vicreg-dual-td0.5.safetensors"),
        )
    },
    "full32": "cpu-fullwidth",
    "full96": "cpu-fullwidth-96",
}


def checkpoints(name: str, train: bool, budgets: tuple[float, ...] = BUDGETS) -> dict[float, Path]:
    spec = SETS[name]
    if isinstance(spec, dict):
        return {b: spec[b] for b in budgets}
    out = {}
    for b in budgets:
        run = ROOT / "runs" / f"{spec}-td{b}"
        if not (run / "model.safetensors").is_file():
            if not train:
                sys.exit(f"missing {run}: pass --train (or `gatekit train --recipe {spec} --budget {b} --out {run}`)")
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "gatekit",
                    "train",
                    "--recipe",
                    spec,
                    "--budget",
                    str(b),
                    "--out",
                    str(run),
                    "--quiet",
                ],
                check=True,
            )
        out[b] = run
    return out


def last_run_items(name: str) -> list[dict]:
    """The jobs of the set's last native_dynamic.py run (its exported artifacts), or exit with one line."""
    items_path = ROOT / "runs" / "native_dynamic" / name / "items.json"
    if not items_path.is_file():
        sys.exit(
            f"--set {name}: no {items_path}: run `python benchmarks/bench_cpu/native_dynamic.py --set {name}` first"
        )
    return json.loads(items_path.read_text())


def bench_phase(
    items: list[dict], threads: list[int], rounds: int, min_runs: int, min_seconds: float, seed: int
) -> dict:
    """Fresh process, deploy side only: interleaved rounds of every job; medians over rounds."""
    from gatekit.artifacts import load_inputs, open_artifact
    from gatekit.bench.protocol import Protocol, measure
    from gatekit.bench.run import bench_one
    from gatekit.runtimes import load_session
    from gatekit.sysinfo import machine_info

    assert "torch" not in sys.modules
    protocol = Protocol(min_runs=min_runs, min_seconds=min_seconds)
    machine = machine_info()
    jobs = []
    for it in items:
        if it["kind"] == "artifact":
            art = open_artifact(it["manifest"])
            paths = it.get("paths") or (["native", "fallback"] if art.native_op else ["auto"])
            jobs += [(it, art.runtime, t, p) for t in threads for p in paths]
        else:
            jobs += [(it, rt, t, "synthetic") for rt in ("ort", "openvino") for t in threads]
    inputs = {}
    rng = random.Random(seed)
    samples: dict[int, list[dict]] = {i: [] for i in range(len(jobs))}
    loads = []
    for r in range(rounds):
        order = list(range(len(jobs)))
        rng.shuffle(order)
        load_before = os.getloadavg()
        started = time.time()
        for i in order:
            it, rt, t, path = jobs[i]
            src = it["manifest"] if it["kind"] == "artifact" else it["inputs_from"]
            if src not in inputs:
                inputs[src] = load_inputs(open_artifact(src).manifest, 256)
            x, xname = inputs[src]
            if it["kind"] == "artifact":
                rec = bench_one(
                    open_artifact(it["manifest"]), rt, t, 1, protocol, x, xname, describe_machine=machine, ops=path
                )
            else:
                with load_session(it["onnx"], rt, threads=t) as s:
                    rec = {
                        "stats": measure(s, [x[k : k + 1] for k in range(len(x))], protocol).stats(),
                        "runtime": s.info.to_dict(),
                    }
            samples[i].append(rec)
        loads.append(
            {
                "round": r,
                "seconds": round(time.time() - started, 1),
                "loadavg_before": load_before,
                "loadavg_after": os.getloadavg(),
            }
        )
        print(
            f"round {r + 1}/{rounds}: {loads[-1]['seconds']} s, load {load_before[0]:.2f} -> {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    rows, records = [], []
    for i, (it, rt, t, path) in enumerate(jobs):
        recs = samples[i]
        p50 = statistics.median(x["stats"]["p50_ms"] for x in recs)
        p90 = statistics.median(x["stats"]["p90_ms"] for x in recs)
        row = {
            "budget": it["budget"],
            "graph": it["graph"],
            "runtime": rt,
            "threads": t,
            "path": path,
            "p50_ms": p50,
            "p90_ms": p90,
            "p50_rounds": [x["stats"]["p50_ms"] for x in recs],
            **{k: it[k] for k in ("precision", "format", "manifest") if k in it},
        }
        if it["kind"] == "artifact":
            m = recs[0]["manifest"]
            row |= {
                "flops_ratio": m["macs"]["ratio_to_dense"],
                "form": m.get("dynamic_form"),
                "widths": m["widths"],
                "ran": recs[0]["runtime"].get("ops"),
            }
            records += recs
        else:
            row |= {"flops_ratio": it["macs_ratio"], "widths": it["widths"]}
        rows.append(row)
    return {
        "machine": machine,
        "protocol": protocol.to_dict(),
        "rounds": rounds,
        "loads": loads,
        "rows": rows,
        "records": records,
    }


def run_fresh(script: str, name: str, items: list[dict], args, extra: list[str] = ()) -> int:
    """Writes the items and re-runs `script --bench-only ITEMS` in a fresh interpreter (no torch threads)."""
    art_dir = ROOT / "runs" / Path(script).stem / name
    art_dir.mkdir(parents=True, exist_ok=True)
    items_path = art_dir / "items.json"
    items_path.write_text(json.dumps(items, indent=1))
    cmd = [
        sys.executable,
        script,
        "--set",
        name,
        "--threads",
        args.threads,
        "--rounds",
        str(args.rounds),
        "--min-runs",
        str(args.min_runs),
        "--min-seconds",
        str(args.min_seconds),
        "--seed",
        str(args.seed),
        "--out",
        str(args.out),
        "--bench-only",
        str(items_path),
        *extra,
    ]
    return subprocess.run(cmd).returncode


def add_arguments(ap) -> None:
    ap.add_argument("--set", dest="name", choices=tuple(SETS), default="x0.25")
    ap.add_argument("--train", action="store_true", help="Train missing checkpoints first.")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-runs", type=int, default=1000)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--bench-only", help=argparse.SUPPRESS)  # phase 2, in a fresh process: the items file


def write_results(stem: str, result: dict, summary: dict, md: str, args, command: str) -> None:
    from gatekit.atomic import write_json, write_text
    from gatekit.bench.run import write_jsonl

    out = Path(args.out)
    if (out / f"{stem}.jsonl").exists():
        (out / f"{stem}.jsonl").unlink()
    write_jsonl(out / f"{stem}.jsonl", result.pop("records"))
    write_json(out / f"{stem}.json", dict(result, **summary, command=command))
    m = result["machine"]
    loads = ", ".join(f"{x['loadavg_before'][0]:.2f}->{x['loadavg_after'][0]:.2f}" for x in result["loads"])
    head = (
        f"Set {args.name}: machine {m['cpu']}, {m['cores']} cores; onnxruntime {m['packages'].get('onnxruntime')}, "
        f"openvino {m['packages'].get('openvino')}; batch 1; p50 = median over {args.rounds} interleaved rounds "
        f"(each: >= {args.min_runs} runs or {args.min_seconds} s after warm-up); load average per round: {loads}.\n"
        f"Re-run: `{command}`\n\n"
    )
    write_text(out / f"{stem}.md", head + md + "\n")
    print(head + md)
