"""Per-input channel skipping with the native GatedBlock op, beside dense, static, hybrid, the standard-ops
dynamic forms and a static network at the native graph's per-block mean active widths: one run per set.

    python benchmarks/bench_cpu/native_dynamic.py --set x0.25            # committed cpu-small checkpoints
    python benchmarks/bench_cpu/native_dynamic.py --set full32 --train   # cpu-fullwidth recipe
    python benchmarks/bench_cpu/native_dynamic.py --set full96 --train   # cpu-fullwidth-96 recipe

--train trains the missing checkpoints: 5-12 min per budget with cpu-fullwidth (by host), about 3 min per
budget with cpu-fullwidth-96 on the fastest host here.

Phase 1 (this process, torch): trains missing checkpoints, exports every graph to ONNX and OpenVINO IR
(each verified; the dynamic graph in the native form, its standard-ops fallback beside it), and writes the
static networks at the native graph's mean active widths (gatekit.pick.synth; random weights: a dense
float32 conv's latency does not depend on them). Phase 2 (a fresh process, no torch): `--rounds` rounds,
each measuring every (artifact, runtime, threads, path) once in a shuffled order with the bench protocol;
the figures are medians over rounds, and every ratio compares numbers of the same run. The load average
is recorded per round.

Writes benchmarks/bench_cpu/native-dynamic-{set}.{jsonl,json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from interleaved import BUDGETS, ROOT, add_arguments, bench_phase, checkpoints, last_run_items, run_fresh, write_results  # noqa: E402


def export_phase(name: str, train: bool, art_dir: Path, budgets: tuple[float, ...]) -> list[dict]:
    """Exports every graph of every budget; returns the jobs' artifacts (manifest paths and static-width ONNX files)."""
    from gatekit.export.sweep import export_all
    from gatekit.models.arch import Architecture
    from gatekit.pick import synth

    ckpts = checkpoints(name, train, budgets)
    items = []
    for b, ckpt in ckpts.items():
        graphs = ["static", "hybrid", "dynamic"] + (["dense"] if b == 0.3 else [])
        manifests, _ = export_all(
            ckpt,
            art_dir / f"td{b}",
            graphs=graphs,
            formats=["onnx", "openvino"],
            strict=True,
            knn_check=False,
            record_inputs=256,
            dynamic_form="native",
            progress=False,
        )
        # the earlier native form, each projection shortcut a Conv node feeding the op its residual
        # (--native-shortcut graph)
        split, _ = export_all(
            ckpt,
            art_dir / f"td{b}" / "shortcut-in-graph",
            graphs=["dynamic"],
            formats=["onnx", "openvino"],
            strict=True,
            knn_check=False,
            record_inputs=256,
            dynamic_form="native",
            native_shortcut="graph",
            progress=False,
        )
        for m in split:
            items.append(
                {
                    "kind": "artifact",
                    "budget": b,
                    "graph": "dynamic (shortcut as a Conv node)",
                    "manifest": m["manifest_path"],
                    "format": m["format"],
                    "paths": ["native"],
                }
            )
        for m in manifests:
            items.append(
                {
                    "kind": "artifact",
                    "budget": b,
                    "graph": m["graph"],
                    "manifest": m["manifest_path"],
                    "format": m["format"],
                }
            )
            if m["graph"] == "dynamic" and m["format"] == "onnx":
                widths = [max(1, math.ceil(w - 1e-6)) for w in m["macs"]["mean_active_widths"]]
                arch = Architecture.from_model_config(m["model_config"])
                path = art_dir / f"td{b}" / "static-at-mean-active-widths.onnx"
                path.write_bytes(synth.network(arch, widths).SerializeToString())
                items.append(
                    {
                        "kind": "synthetic",
                        "budget": b,
                        "graph": "static (mean active widths)",
                        "onnx": str(path),
                        "widths": widths,
                        "macs_ratio": arch.macs(widths) / m["macs"]["dense"],
                        "inputs_from": m["manifest_path"],
                    }
                )
    return items


def summarise(result: dict) -> tuple[dict, str]:
    rows = result["rows"]

    def find(budget, graph, rt, t, path=None):
        for r in rows:
            if (
                r["graph"] == graph
                and r["runtime"] == rt
                and r["threads"] == t
                and (budget is None or r["budget"] == budget)
                and (path is None or r["path"] == path)
            ):
                return r
        return None

    table = []
    for rt in ("ort", "openvino"):
        for t in sorted({r["threads"] for r in rows}):
            dense = find(None, "dense", rt, t)
            for b in BUDGETS:
                native = find(b, "dynamic", rt, t, "native")
                split = find(b, "dynamic (shortcut as a Conv node)", rt, t, "native")
                fallback = find(b, "dynamic", rt, t, "fallback")
                static = find(b, "static", rt, t)
                hybrid = find(b, "hybrid", rt, t)
                same = find(b, "static (mean active widths)", rt, t)
                if not (dense and native and static):
                    continue
                table.append(
                    {
                        "runtime": rt,
                        "threads": t,
                        "budget": b,
                        "dense_ms": dense["p50_ms"],
                        "native_ms": native["p50_ms"],
                        "native_flops": native["flops_ratio"],
                        "native_ran": native["ran"],
                        "static_ms": static["p50_ms"],
                        "static_flops": static["flops_ratio"],
                        "hybrid_ms": hybrid["p50_ms"] if hybrid else None,
                        "fallback_ms": fallback["p50_ms"] if fallback else None,
                        "same_width_ms": same["p50_ms"] if same else None,
                        "native_over_dense": native["p50_ms"] / dense["p50_ms"],
                        "static_over_dense": static["p50_ms"] / dense["p50_ms"],
                        "fallback_over_dense": fallback["p50_ms"] / dense["p50_ms"] if fallback else None,
                        "native_over_static": native["p50_ms"] / static["p50_ms"],
                        "native_over_same_width": native["p50_ms"] / same["p50_ms"] if same else None,
                        "shortcut_in_graph_ms": split["p50_ms"] if split else None,
                        "shortcut_in_graph_over_same_width": split["p50_ms"] / same["p50_ms"]
                        if split and same
                        else None,
                        "native_flops_below_0.8_static": native["flops_ratio"] < 0.8 * static["flops_ratio"],
                    }
                )
    lines = [
        (
            "| runtime | threads | t_d | FLOPs native / static | dense ms | static ms (x dense) | hybrid ms "
            "| standard-ops dynamic ms (x dense) "
            "| **native ms (x dense)** | native / static | native / static at mean active widths "
            "| shortcut as a Conv node: ms (/ static at mean widths) |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in table:
        hy = f"{x['hybrid_ms']:.3f}" if x["hybrid_ms"] else "-"
        fb = f"{x['fallback_ms']:.3f} ({x['fallback_over_dense']:.2f})" if x["fallback_ms"] else "-"
        sw = f"{x['native_over_same_width']:.2f}" if x["native_over_same_width"] else "-"
        gg = (
            f"{x['shortcut_in_graph_ms']:.3f} ({x['shortcut_in_graph_over_same_width']:.2f})"
            if x["shortcut_in_graph_over_same_width"]
            else "-"
        )
        lines.append(
            f"| {x['runtime']} | {x['threads']} | {x['budget']} | {x['native_flops']:.3f} / {x['static_flops']:.3f} | "
            f"{x['dense_ms']:.3f} | {x['static_ms']:.3f} ({x['static_over_dense']:.2f}) | {hy} | {fb} | "
            f"**{x['native_ms']:.3f} ({x['native_over_dense']:.2f})** | {x['native_over_static']:.2f} | {sw} | {gg} |"
        )
    return {"table": table}, "\n".join(lines)


def lut_check(
    items: list[dict],
    name: str,
    runtime: str,
    threads: int,
    inputs: int,
    runs: int,
    out: Path,
    native_masks: int | None = None,
) -> dict:
    """Builds this device's LUT with the native op table (`gatekit profile --native`), then, per native dynamic
    artifact of `runtime`, predicts each of the first `inputs` test images (held out: the gates were
    calibrated on training images) from its active widths and measures it (`runs` rounds after a warm-up,
    each running every input once: interleaved, so that every input's percentiles span the same stretch of
    the machine's noise), comparing the predicted with the measured p50 and p90 of every input. native_masks:
    the LUT's `--native-masks` (None: profile's default)."""
    import numpy as np

    from gatekit.artifacts import load_inputs, open_artifact
    from gatekit.atomic import write_json
    from gatekit.bench.protocol import Protocol, measure, per_input_stats
    from gatekit.models.arch import Architecture
    from gatekit.pick import predict
    from gatekit.pick.profile import ProfileOptions, native_drift, profile
    from gatekit.runtimes import load_artifact

    native = [
        it
        for it in items
        if it["kind"] == "artifact" and it["graph"] == "dynamic" and open_artifact(it["manifest"]).runtime == runtime
    ]
    first = open_artifact(native[0]["manifest"]).manifest
    x, _ = load_inputs(first, max(inputs, 64))
    opts = ProfileOptions(runtime=runtime, threads=threads, native=True)
    if native_masks is not None:
        opts.native_masks = native_masks
    arch = Architecture.from_model_config(first["model_config"])
    lut = profile(arch, opts, x[:64])
    write_json(out / f"lut-native-{name}-{runtime}-{threads}t{_masks_suffix(native_masks)}.json", lut)
    rows, drifts = [], []
    for it in native:
        drifts.append(native_drift(lut, arch, opts, x[:64]))
        art = open_artifact(it["manifest"])
        widths = np.array(art.manifest["per_input"]["active_widths"][:inputs])
        pred = predict.predict_dynamic(lut, widths, native=True)
        with load_artifact(art, ops="native", threads=threads) as s:
            # every input once per round, `runs` rounds (interleaved, as the calibration networks were measured)
            n = len(widths)
            m = measure(
                s,
                [x[i : i + 1] for i in range(n)],
                Protocol(
                    warmup_runs=5 * n, warmup_seconds=0.0, min_runs=runs * n, min_seconds=1e9, floor_runs=runs * n
                ),
            )
        halves = _halves(m)
        prefixes = {r: per_input_stats(_slice(m, slice(0, r * n))) for r in PREFIX_ROUNDS if r < runs}
        for i, st in per_input_stats(m).items():
            rows.append(
                {
                    "budget": it["budget"],
                    "input": i,
                    "active_widths": widths[i].tolist(),
                    "predicted_p50_ms": pred["per_input_ms"][i],
                    "predicted_p90_ms": pred["per_input_p90_ms"][i],
                    "measured_p50_ms": st["p50_ms"],
                    "measured_p90_ms": st["p90_ms"],
                    "halves_p90_ms": [h[i]["p90_ms"] for h in halves],
                    "first_rounds_p90_ms": {str(r): p[i]["p90_ms"] for r, p in prefixes.items()},
                }
            )
    err90 = np.array([r["predicted_p90_ms"] / r["measured_p90_ms"] - 1 for r in rows])
    err50 = np.array([r["predicted_p50_ms"] / r["measured_p50_ms"] - 1 for r in rows])
    # The measurement against itself: each input's p90 over the first half of the rounds against the second
    # half's.  However good a prediction, it cannot agree with a measured p90 more often than two halves of
    # the same measurement agree with each other; too few runs per input make this (and the check) fail.
    self90 = np.array([r["halves_p90_ms"][0] / r["halves_p90_ms"][1] - 1 for r in rows])
    return {
        "runtime": runtime,
        "threads": threads,
        "native_masks": opts.native_masks,
        "inputs_per_artifact": inputs,
        "runs_per_input": runs,
        "timing": "interleaved: every input once per round",
        "lut_native_validation": lut["native"]["validation"] | {"configs": None},
        "within_10pct_p90": float(np.mean(np.abs(err90) <= 0.10)),
        "within_10pct_p50": float(np.mean(np.abs(err50) <= 0.10)),
        "median_abs_error_p90": float(np.median(np.abs(err90))),
        "median_error_p90": float(np.median(err90)),
        "halves_within_10pct_p90": float(np.mean(np.abs(self90) <= 0.10)),
        # the LUT's own calibration networks re-timed before each budget's measurement, over their times in the
        # LUT: a record, not a correction (at 96 px they read 5-9% slower while the predictions matched)
        "drift": drifts,
        # the same check against each input's p90 over only its first r rounds (fewer runs per input)
        "within_10pct_p90_first_rounds": {
            r: float(np.mean([abs(x["predicted_p90_ms"] / x["first_rounds_p90_ms"][r] - 1) <= 0.10 for x in rows]))
            for r in rows[0]["first_rounds_p90_ms"]
        }
        if rows
        else {},
        "lut_seconds": lut["seconds"],
        "rows": rows,
    }


PREFIX_ROUNDS = (30, 100)


def _slice(m, sl):
    from gatekit.bench.protocol import Measurement

    return Measurement(latencies_ns=m.latencies_ns[sl], input_index=m.input_index[sl], batch=m.batch)


def _halves(m) -> list[dict]:
    """per_input_stats of the first and of the second half of a measurement's runs (every input once per round,
    so each half holds half of every input's rounds)."""
    from gatekit.bench.protocol import per_input_stats

    k = len(m.latencies_ns) // 2
    return [per_input_stats(_slice(m, sl)) for sl in (slice(0, k), slice(k, None))]


def _masks_suffix(native_masks: int | None) -> str:
    return "" if native_masks is None else f"-masks{native_masks}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    ap.add_argument(
        "--lut", default="ort:1", help="RUNTIME:THREADS whose LUT predicts the native graphs per input ('' skips)"
    )
    ap.add_argument("--lut-inputs", type=int, default=100)
    ap.add_argument(
        "--lut-runs",
        type=int,
        default=200,
        help="rounds per input: a p90 of 30 runs is its 27th sample (x0.25: the spread of each input's "
        "p90/p50, sd 0.08-0.17 at 30 rounds, 0.02-0.08 at 200)",
    )
    ap.add_argument(
        "--lut-only",
        action="store_true",
        help="Only the LUT check, on the artifacts of the last run of this set (a quiet re-run of it); "
        "writes lut-check-{set}.json",
    )
    ap.add_argument(
        "--native-masks",
        type=int,
        help="the LUT's `gatekit profile --native-masks` (default: profile's); "
        "a non-default value writes lut-check-{set}-masks{N}.json",
    )
    ap.add_argument(
        "--budgets",
        default=",".join(str(b) for b in BUDGETS),
        help="t_d budgets to export and time (0.3 must be among them: it carries the dense graph)",
    )
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    try:
        budgets = tuple(float(b) for b in args.budgets.split(","))
    except ValueError:
        sys.exit(
            f"--budgets: expected comma-separated numbers among {', '.join(map(str, BUDGETS))}, got {args.budgets!r}"
        )
    if not set(budgets) <= set(BUDGETS) or 0.3 not in budgets:
        sys.exit(
            f"--budgets: choose among {', '.join(map(str, BUDGETS))}, 0.3 included (it carries the dense graph); "
            f"got {args.budgets!r}"
        )
    if args.lut_only:
        from gatekit.atomic import write_json

        rt, t = (args.lut or "ort:1").split(":")
        load_before = os.getloadavg()[0]
        check = lut_check(
            last_run_items(args.name),
            args.name,
            rt,
            int(t),
            args.lut_inputs,
            args.lut_runs,
            Path(args.out),
            args.native_masks,
        )
        check["loadavg"] = [load_before, os.getloadavg()[0]]
        check["command"] = f"python benchmarks/bench_cpu/native_dynamic.py --set {args.name} --lut-only" + (
            f" --native-masks {args.native_masks}" if args.native_masks is not None else ""
        )
        write_json(Path(args.out) / f"lut-check-{args.name}{_masks_suffix(args.native_masks)}.json", check)
        print(
            {
                k: check[k]
                for k in (
                    "within_10pct_p90",
                    "within_10pct_p50",
                    "median_abs_error_p90",
                    "median_error_p90",
                    "halves_within_10pct_p90",
                    "drift",
                )
            }
        )
        return
    if args.bench_only:
        result = bench_phase(
            json.loads(Path(args.bench_only).read_text()),
            threads,
            args.rounds,
            args.min_runs,
            args.min_seconds,
            args.seed,
        )
        summary, md = summarise(result)
        if args.lut:
            rt, t = args.lut.split(":")
            check = lut_check(
                json.loads(Path(args.bench_only).read_text()),
                args.name,
                rt,
                int(t),
                args.lut_inputs,
                args.lut_runs,
                Path(args.out),
            )
            summary["lut_check"] = check
            md += (
                f"\n\nLUT prediction of the native graphs per input ({rt}, {t} thread(s), "
                f"{check['inputs_per_artifact']} held-out test images per budget, {check['runs_per_input']} runs "
                f"each): within +-10% of the measured p90 for {100 * check['within_10pct_p90']:.0f}% of inputs "
                f"(p50: {100 * check['within_10pct_p50']:.0f}%), median |error| "
                f"{100 * check['median_abs_error_p90']:.1f}% (signed median {100 * check['median_error_p90']:+.1f}%); "
                "the native table's own held-out networks: "
                f"p50 {100 * check['lut_native_validation']['within_tolerance_p50']:.0f}%, "
                f"p90 {100 * check['lut_native_validation']['within_tolerance_p90']:.0f}% within +-10%."
            )
        budgets_run = sorted({it["budget"] for it in json.loads(Path(args.bench_only).read_text())})
        command = f"python benchmarks/bench_cpu/native_dynamic.py --set {args.name}"
        if tuple(budgets_run) != BUDGETS:
            command += f" --budgets {','.join(map(str, budgets_run))}"
        if args.lut != "ort:1":
            command += f" --lut {args.lut}" if args.lut else " --lut ''"
        for dest in ("threads", "rounds", "min_runs", "min_seconds", "seed"):
            if getattr(args, dest) != ap.get_default(dest):
                command += f" --{dest.replace('_', '-')} {getattr(args, dest)}"
        write_results(f"native-dynamic-{args.name}", result, summary, md, args, command)
        return
    items = export_phase(args.name, args.train, ROOT / "runs" / "native_dynamic" / args.name, budgets)
    sys.exit(
        run_fresh(
            __file__,
            args.name,
            items,
            args,
            ["--lut", args.lut, "--lut-inputs", str(args.lut_inputs), "--lut-runs", str(args.lut_runs)],
        )
    )


if __name__ == "__main__":
    main()
