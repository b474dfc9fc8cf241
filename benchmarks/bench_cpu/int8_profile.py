"""Where the time of the small int8 graphs goes: OpenVINO's own per-layer counters (benchmark_app
`-report_type average_counters`, the CSV form of `-pc`) for dense and static IRs in fp32 and int8, summed by
layer type, beside each graph's FLOPs. Answers why the x0.25 t_d 0.1 int8 static graph's latency over FLOPs
against int8 dense is above 1.2 (precisions-x0.25.md) while t_d 0.3/0.5 are below it.

    python benchmarks/bench_cpu/int8_profile.py     # after precisions.py --set x0.25 (its IRs)

benchmark_app: -hint none -nthreads 1 -nstreams 1 -nireq 1 -api sync -t 3 -infer_precision f32 (as gatekit runs
every IR: the quantized layers of an int8 IR stay int8, the rest f32, never bf16). The IRs are profiled in
--rounds interleaved rounds; per-layer-type times are medians over rounds.

Writes benchmarks/bench_cpu/int8-profile.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

ARTIFACTS = "runs/precisions/x0.25"
IRS = [  # (label, t_d, graph, precision, IR relative to ARTIFACTS)
    ("dense fp32", 0.3, "dense", "fp32", "td0.3/dense.xml"),
    ("dense int8", 0.3, "dense", "int8", "td0.3/dense-int8.xml"),
    ("t_d 0.1 static fp32", 0.1, "static", "fp32", "td0.1/static.xml"),
    ("t_d 0.1 static int8", 0.1, "static", "int8", "td0.1/static-int8.xml"),
    ("t_d 0.3 static fp32", 0.3, "static", "fp32", "td0.3/static.xml"),
    ("t_d 0.3 static int8", 0.3, "static", "int8", "td0.3/static-int8.xml"),
]
# Layer types grouped by what they do.
GROUPS = {
    "Convolution": "convolution",
    "Reorder": "reorder",
    "Subgraph": "fused eltwise / (de)quantize",
    "Eltwise": "fused eltwise / (de)quantize",
    "FakeQuantize": "fused eltwise / (de)quantize",
    "ReduceMean": "pooling / head",
    "FullyConnected": "pooling / head",
    "Pooling": "pooling / head",
}


def profile(ir: Path, threads: int, seconds: int) -> dict:
    """benchmark_app's median and per-layer average counters for one IR (f32 pinned as gatekit runs it: the
    quantized layers of an int8 IR stay int8, the rest f32)."""
    from gatekit.bench.crosscheck import layer_counters
    from gatekit.errors import GatekitError

    try:
        return layer_counters(ir, [1, 3, 32, 32], threads, seconds)
    except GatekitError as e:
        sys.exit(str(e))


def macs_of(ir: Path) -> float | None:
    manifest = ir.with_suffix(".openvino.json")
    try:
        return float(json.loads(manifest.read_text())["macs"]["mean"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args()
    from gatekit.atomic import write_json, write_text
    from gatekit.bench.crosscheck import counters_by_group
    from gatekit.sysinfo import machine_info

    base = ROOT / ARTIFACTS
    missing = [rel for *_, rel in IRS if not (base / rel).is_file()]
    if missing:
        sys.exit(
            f"missing {', '.join(missing)} under {ARTIFACTS}: "
            "run `python benchmarks/bench_cpu/precisions.py --set x0.25` first"
        )
    loads = [os.getloadavg()[0]]
    runs = {label: [] for label, *_ in IRS}
    for _ in range(args.rounds):
        for label, *_, rel in IRS:
            runs[label].append(profile(base / rel, args.threads, args.seconds))
        loads.append(os.getloadavg()[0])
    rows = []
    for label, budget, graph, precision, rel in IRS:
        groups = counters_by_group(runs[label], lambda layer: GROUPS.get(layer["type"], "other"))
        convs = [(lay["name"], lay["exec"]) for lay in runs[label][0]["layers"] if lay["type"] == "Convolution"]
        rows.append(
            {
                "label": label,
                "budget": budget,
                "graph": graph,
                "precision": precision,
                "ir": f"{ARTIFACTS}/{rel}",
                "macs": macs_of(base / rel),
                "median_ms": statistics.median(r["median_ms"] for r in runs[label]),
                "counters_total_ms": sum(groups.values()),
                "groups_ms": groups,
                "conv_kernels": sorted({e for _, e in convs}),
                "layers_executed": len(runs[label][0]["layers"]),
            }
        )
    by = {r["label"]: r for r in rows}
    for r in rows:
        dense = by["dense " + r["precision"]]
        r["flops_ratio"] = r["macs"] / dense["macs"] if r["macs"] and dense["macs"] else None
        r["latency_ratio"] = r["median_ms"] / dense["median_ms"]
        r["conv_ratio"] = r["groups_ms"].get("convolution", 0.0) / dense["groups_ms"]["convolution"]
        r["latency_over_flops"] = r["latency_ratio"] / r["flops_ratio"] if r["flops_ratio"] else None
        r["conv_over_flops"] = r["conv_ratio"] / r["flops_ratio"] if r["flops_ratio"] else None
    m = machine_info()
    command = "python benchmarks/bench_cpu/int8_profile.py"
    write_json(
        Path(args.out) / "int8-profile.json",
        {
            "machine": m,
            "threads": args.threads,
            "rounds": args.rounds,
            "loadavg": loads,
            "rows": rows,
            "command": command,
        },
    )
    names = ["convolution", "reorder", "fused eltwise / (de)quantize", "pooling / head", "other"]
    lines = [
        f"OpenVINO {m['packages'].get('openvino')} per-layer counters (benchmark_app -report_type average_counters), "
        f"{args.threads} thread, batch 1, x0.25 IRs of `precisions.py --set x0.25`; medians over {args.rounds} "
        f"interleaved rounds of {args.seconds} s; load average {' -> '.join(f'{x:.2f}' for x in loads)}.",
        "",
        f"Re-run: `{command}`",
        "",
        "| IR | median ms | FLOPs / dense | latency / dense | latency / FLOPs | conv ms | conv / dense conv "
        "| conv time / FLOPs | " + " | ".join(f"{n} ms" for n in names[1:]) + " | conv kernel |",
        "|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * (len(names) - 1) + "---|",
    ]
    for r in rows:
        g = r["groups_ms"]
        fr = f"{r['flops_ratio']:.3f}" if r["flops_ratio"] else "-"
        lf = f"{r['latency_over_flops']:.2f}" if r["latency_over_flops"] else "-"
        cf = f"{r['conv_over_flops']:.2f}" if r["conv_over_flops"] else "-"
        lines.append(
            f"| {r['label']} | {r['median_ms']:.3f} | {fr} | {r['latency_ratio']:.2f} | {lf} | "
            f"{g.get('convolution', 0.0):.3f} | {r['conv_ratio']:.2f} | {cf} | "
            + " | ".join(f"{g.get(n, 0.0):.3f}" for n in names[1:])
            + f" | {', '.join(r['conv_kernels'])} |"
        )
    write_text(Path(args.out) / "int8-profile.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
