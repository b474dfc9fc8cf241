"""The full-width latency sweep: full-width ResNet-18, dense/static/hybrid/dynamic at t_d 0.1/0.3/0.5,
torch / ONNX Runtime / OpenVINO at 1 and 2 threads, batch 1, on real images, in one run; then its targets.

    python benchmarks/bench_cpu/fullwidth.py --size 32 --train     # ~5 min per checkpoint, then ~15 min
    python benchmarks/bench_cpu/fullwidth.py --size 96 --train     # STL-10 stem, CIFAR-10 upscaled to 96 px

Checkpoints come from the `cpu-fullwidth` / `cpu-fullwidth-96` recipes (short CPU runs whose gates reach
the budget; accuracy is not the point) under runs/. Every graph is exported for every budget, the dense one
included: a latency ratio is to the dense graph of the same checkpoint (gatekit.bench.tables).
The static agreement k-NN check of `gatekit export` is skipped (benchmarks/export records it); numerical
verification against PyTorch is not. Besides the sweep, every dynamic graph is compared with a static
network of the same architecture at its mean active widths (rounded up to whole channels; random
weights, since a dense float32 conv's latency does not depend on them), timed with the same protocol.

Writes benchmarks/bench_cpu/cifar{size}-fullwidth.{jsonl,md,png} and -targets.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gatekit.artifacts import load_inputs, open_artifact, runtime_name  # noqa: E402
from gatekit.atomic import write_json, write_text  # noqa: E402
from gatekit.bench.protocol import Protocol, measure  # noqa: E402
from gatekit.bench.run import write_jsonl  # noqa: E402
from gatekit.bench.sweep import bench_manifests  # noqa: E402
from gatekit.bench.tables import markdown_table, plot_latency_vs_flops, plot_per_input, with_ratios  # noqa: E402
from gatekit.export.sweep import export_all  # noqa: E402
from gatekit.runtimes import load_session  # noqa: E402
from gatekit.sysinfo import machine_info  # noqa: E402

HERE = Path(__file__).resolve().parent


def checkpoints(size: int, train: bool) -> dict[float, Path]:
    from interleaved import checkpoints as trained

    return trained("full32" if size == 32 else "full96", train)


def static_at_mean_width(dyn_records: list[dict], threads: list[int], protocol: Protocol) -> list[dict]:
    """Times a static network at each dynamic graph's mean active widths, on ORT, at each thread count."""
    from gatekit.models.arch import Architecture
    from gatekit.pick import synth

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for art_path in sorted({r["artifact"] for r in dyn_records}):
            art = open_artifact(art_path)
            m = art.manifest
            widths = [max(1, math.ceil(w - 1e-6)) for w in m["macs"]["mean_active_widths"]]
            arch = Architecture.from_model_config(m["model_config"])
            path = Path(tmp) / f"static-meanwidth-{m['budget']}.onnx"
            path.write_bytes(synth.network(arch, widths).SerializeToString())
            x, _ = load_inputs(m, 256)
            for t in threads:
                with load_session(path, "ort", threads=t) as s:
                    stats = measure(s, [x[i : i + 1] for i in range(len(x))], protocol).stats()
                rows.append(
                    {
                        "budget": m["budget"],
                        "threads": t,
                        "widths": widths,
                        "macs_ratio": arch.macs(widths) / m["macs"]["dense"],
                        "stats": stats,
                    }
                )
                print(f"static at mean active widths t_d={m['budget']} {t}T: p50 {stats['p50_ms']:.3f} ms", flush=True)
    return rows


def targets(records: list[dict], mean_width: list[dict], size: int) -> dict:
    rows = []
    recs = with_ratios(records)
    for r in recs:
        g, rt = r["manifest"]["graph"], runtime_name(r["runtime"]["name"])
        if "latency_ratio" not in r or g == "dense":
            continue
        lat, fl = r["latency_ratio"]["p50"], r["flops_ratio"]
        row = {
            "budget": r["manifest"]["budget"],
            "graph": g,
            "form": r["manifest"].get("dynamic_form"),
            "runtime": rt,
            "threads": r["threads"],
            "flops_ratio": fl,
            "latency_ratio": lat,
            "latency_over_flops": lat / fl,
        }
        if g in ("static", "hybrid") and rt in ("ort", "openvino"):
            row["limit"] = 1.15 if g == "static" else 1.25
            row["meets"] = lat <= row["limit"] * fl
        if g == "dynamic" and rt == "ort":
            ref = [s for s in mean_width if s["budget"] == row["budget"] and s["threads"] == r["threads"]]
            if ref:
                row["static_same_width_p50_ms"] = ref[0]["stats"]["p50_ms"]
                row["over_static_same_width"] = r["stats"]["p50_ms"] / ref[0]["stats"]["p50_ms"]
                row["aim_1.3_met"] = row["over_static_same_width"] <= 1.3
            if size == 96 and r["threads"] == 1 and row["budget"] == 0.3:
                row["must_beat_dense"] = True
                row["meets"] = lat < 1.0
        rows.append(row)
    checked = [x for x in rows if "meets" in x]
    return {
        "size": size,
        "rows": rows,
        "checked": len(checked),
        "met": sum(x["meets"] for x in checked),
        "missed": [x for x in checked if not x["meets"]],
    }


def targets_md(t: dict) -> str:
    lines = [
        f"Targets at {t['size']} px: {t['met']} of {t['checked']} checked rows met.",
        "",
        "| t_d | graph | runtime | threads | FLOPs ratio | latency ratio | latency / FLOPs | limit | met "
        "| dynamic / static same width |",
        "|---:|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for x in sorted(t["rows"], key=lambda x: (x["graph"], x["runtime"], x["threads"], x["budget"])):
        g = x["graph"] + (" (matmul)" if x.get("form") == "matmul" else "")
        limit = f"{x['limit']:.2f}x FLOPs" if "limit" in x else ("< dense" if x.get("must_beat_dense") else "-")
        met = "-" if "meets" not in x else ("yes" if x["meets"] else "**no**")
        same = f"{x['over_static_same_width']:.2f}" if "over_static_same_width" in x else "-"
        lines.append(
            f"| {x['budget']} | {g} | {x['runtime']} | {x['threads']} | {x['flops_ratio']:.3f} | "
            f"{x['latency_ratio']:.3f} | "
            f"{x['latency_over_flops']:.2f} | {limit} | {met} | {same} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, choices=(32, 96), default=32)
    ap.add_argument("--train", action="store_true", help="Train missing checkpoints first.")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--min-seconds", type=float, default=10.0)
    ap.add_argument("--min-runs", type=int, default=1000)
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args()
    os.environ.setdefault("GATEKIT_DATA", str(ROOT.parent / "shared" / "datasets"))
    threads = [int(t) for t in args.threads.split(",")]
    ckpts = checkpoints(args.size, args.train)
    art_dir = ROOT / "runs" / f"bench-fullwidth-{args.size}"
    manifests = []
    for b, ckpt in ckpts.items():
        manifests += export_all(
            ckpt,
            art_dir / f"td{b}",
            graphs=["dense", "static", "hybrid", "dynamic"],
            formats=["onnx", "openvino"],
            knn_check=False,
            progress=False,
        )[0]
    protocol = Protocol(min_runs=args.min_runs, min_seconds=args.min_seconds)
    records = bench_manifests(
        [m["manifest_path"] for m in manifests],
        threads,
        protocol,
        runtimes=["ort", "openvino", "torch"],
        progress=False,
    )
    stem = Path(args.out) / f"cifar{args.size}-fullwidth"
    write_jsonl(f"{stem}.jsonl", records)
    info = machine_info()
    table = markdown_table(records)
    write_text(
        f"{stem}.md", f"Machine: {info['cpu']}, {info['cores']} cores; {json.dumps(info['packages'])}\n\n{table}\n"
    )
    plot_latency_vs_flops(records, f"{stem}.png", title=f"ResNet-18 full width, {args.size} px, {info['cpu']}")
    plot_per_input(records, f"{stem}-per-input.png")
    dyn = [r for r in records if r["manifest"]["graph"] == "dynamic" and runtime_name(r["runtime"]["name"]) == "ort"]
    mean_width = static_at_mean_width(dyn, threads, protocol)
    t = targets(records, mean_width, args.size)
    t["static_at_mean_width"] = mean_width
    t["machine"] = info
    write_json(f"{stem}-targets.json", t)
    write_text(f"{stem}-targets.md", targets_md(t) + "\n")
    print(table)
    print(targets_md(t))


if __name__ == "__main__":
    main()
