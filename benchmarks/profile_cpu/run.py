"""The latency tables (LUTs) of this CPU and their held-out check: ResNet-18 (full width) at 32 px (CIFAR stem)
and 96 px (STL-10 stem), ONNX Runtime and OpenVINO, 1 and 2 threads; each LUT predicts 20 held-out static width
configurations it was not built from, which are then measured (share within +-10% of p50 and p90).

    python benchmarks/profile_cpu/run.py                 # all 8 tables, about 25 min on 2 cores
    python benchmarks/profile_cpu/run.py --sizes 32 --runtimes ort --threads 1

When the full-width sweep's records exist (benchmarks/bench_cpu/cifar{32,96}-fullwidth.jsonl), every LUT
also predicts the real exported static graphs of that sweep, and the error against their measured p50
and p90 is recorded beside the held-out check (same machine, other run: noise included).

Writes benchmarks/profile_cpu/lut-{runtime}-{size}px-{threads}t.{json,png} and summary.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from gatekit.artifacts import runtime_name  # noqa: E402
from gatekit.atomic import write_json, write_text  # noqa: E402
from gatekit.pick import predict as predictor  # noqa: E402
from gatekit.sysinfo import machine_info  # noqa: E402


def exported_static_check(lut: dict, size: int, runtime: str, threads: int) -> dict | None:
    path = ROOT / "benchmarks" / "bench_cpu" / f"cifar{size}-fullwidth.jsonl"
    if not path.is_file():
        return None
    rows = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        m = r["manifest"]
        if (
            m["graph"] in ("static", "dense")
            and runtime_name(r["runtime"]["name"]) == runtime
            and r["threads"] == threads
            and m["model_config"]["input_size"] == size
        ):
            widths = m["widths"] if m["graph"] == "static" else m["full_widths"]
            row = predictor.compare(lut, widths, r["stats"])
            row.update(graph=m["graph"], budget=m["budget"])
            rows.append(row)
    return predictor.summarise(rows) if rows else None


def dynamic_check(lut: dict, size: int, runtime: str, threads: int) -> list[dict]:
    """The LUT's prediction of each recorded dynamic graph's latency distribution, from its per-input
    active widths, beside the measured one (the table has no NonZero/Gather costs: expect it low)."""
    path = ROOT / "benchmarks" / "bench_cpu" / f"cifar{size}-fullwidth.jsonl"
    if not path.is_file() or runtime != "ort":
        return []
    out = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if (
            r["manifest"]["graph"] != "dynamic"
            or runtime_name(r["runtime"]["name"]) != "ort"
            or r["threads"] != threads
        ):
            continue
        manifest = json.loads(Path(r["artifact"]).with_suffix(".onnx.json").read_text())
        widths = manifest.get("per_input", {}).get("active_widths")
        if not widths:
            continue
        pred = predictor.predict_dynamic(lut, widths[: r["inputs"]["images"]])
        out.append(
            {
                "budget": r["manifest"]["budget"],
                "predicted_p50_ms": pred["p50_ms"],
                "predicted_p90_ms": pred["p90_ms"],
                "measured_p50_ms": r["stats"]["p50_ms"],
                "measured_p90_ms": r["stats"]["p90_ms"],
                "measured_over_predicted_p90": r["stats"]["p90_ms"] / pred["p90_ms"],
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="32,96")
    ap.add_argument("--runtimes", default="ort,openvino")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--check", type=int, default=20)
    args = ap.parse_args()
    os.environ.setdefault("GATEKIT_DATA", str(ROOT.parent / "shared" / "datasets"))
    for size in [int(x) for x in args.sizes.split(",") if x]:
        for rt in args.runtimes.split(","):
            for t in map(int, args.threads.split(",")):
                stem = HERE / f"lut-{rt}-{size}px-{t}t"
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "gatekit",
                        "profile",
                        "--runtime",
                        rt,
                        "--arch",
                        "resnet18",
                        "--input",
                        str(size),
                        "--threads",
                        str(t),
                        "--check",
                        str(args.check),
                        "--out",
                        f"{stem}.json",
                        "--plot",
                        f"{stem}.png",
                        "--quiet",
                    ],
                    check=True,
                )
    summary = []  # every LUT recorded here, including those of earlier invocations
    for path in sorted(HERE.glob("lut-*.json"), key=lambda p: json.loads(p.read_text())["arch"]["input_size"]):
        lut = json.loads(path.read_text())
        rt = runtime_name(lut["runtime"]["name"])
        size, t, v = lut["arch"]["input_size"], lut["threads"], lut["validation"]
        summary.append(
            {
                "size": size,
                "runtime": rt,
                "threads": t,
                "seconds": lut["seconds"],
                "lut": path.name,
                "check_repeats": lut.get("check_repeats", 1),
                "created": lut["created"],
                "entries": sum(len(b["widths"]) for b in lut["blocks"]) + 2,
                **{k: v[k] for k in v if k != "configs"},
                "exported_static": exported_static_check(lut, size, rt, t),
                "dynamic": dynamic_check(lut, size, rt, t),
            }
        )
    info = machine_info()
    write_json(HERE / "summary.json", {"machine": info, "rows": summary})
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores; onnxruntime {info['packages'].get('onnxruntime')}, "
        f"OpenVINO {info['packages'].get('openvino')}; batch 1, fp32.",
        "",
        "| input | runtime | threads | entries | minutes | check repeats | held-out within +-10% p50 | p90 "
        "| median abs err p50 | p90 | max abs err p90 | exported graphs within +-10% p50 / p90 (n) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in summary:
        e = r["exported_static"]
        ex = (
            f"{100 * e['within_tolerance_p50']:.0f}% / {100 * e['within_tolerance_p90']:.0f}% ({e['count']})"
            if e
            else "-"
        )
        lines.append(
            f"| {r['size']} | {r['runtime']} | {r['threads']} | {r['entries']} | {r['seconds'] / 60:.1f} | "
            f"{r['check_repeats']} | "
            f"{100 * r['within_tolerance_p50']:.0f}% | {100 * r['within_tolerance_p90']:.0f}% | "
            f"{100 * r['median_abs_error_p50']:.1f}% | {100 * r['median_abs_error_p90']:.1f}% | "
            f"{100 * r['max_abs_error_p90']:.1f}% | {ex} |"
        )
    dyn = [(r, d) for r in summary for d in r["dynamic"]]
    if dyn:
        lines += [
            "",
            "Dynamic graphs (ORT): the LUT's prediction from per-input active widths against the measurement "
            "(the table prices convs at those widths, not NonZero/Gather/weight copies):",
            "",
            "| input | threads | t_d | predicted p50 / p90 ms | measured p50 / p90 ms | measured / predicted p90 |",
            "|---:|---:|---:|---|---|---:|",
        ]
        for r, d in dyn:
            lines.append(
                f"| {r['size']} | {r['threads']} | {d['budget']} | "
                f"{d['predicted_p50_ms']:.3f} / {d['predicted_p90_ms']:.3f} | "
                f"{d['measured_p50_ms']:.3f} / {d['measured_p90_ms']:.3f} | {d['measured_over_predicted_p90']:.2f} |"
            )
    write_text(HERE / "summary.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
