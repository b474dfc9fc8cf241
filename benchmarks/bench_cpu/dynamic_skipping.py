"""Where should a dynamic graph skip channels? One run per input size: the t_d 0.3 full-width checkpoint's
dynamic graph (ONNX Runtime) with channel skipping in every block, or only in blocks whose output is at
least N pixels a side (the others run whole convs with constant weights and zero the inactive channels),
against the dense graph measured in the same run.

    python benchmarks/bench_cpu/dynamic_skipping.py          # after fullwidth.py --train (its checkpoints)

Writes benchmarks/bench_cpu/dynamic-skipping.{jsonl,json,md}.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gatekit.atomic import write_json, write_text  # noqa: E402
from gatekit.bench.protocol import Protocol  # noqa: E402
from gatekit.bench.run import write_jsonl  # noqa: E402
from gatekit.bench.sweep import bench_manifests  # noqa: E402
from gatekit.export.sweep import export_all  # noqa: E402
from gatekit.sysinfo import machine_info  # noqa: E402

HERE = Path(__file__).resolve().parent
SIZES = {32: ("cpu-fullwidth", (0, 9, 17, 34)), 96: ("cpu-fullwidth-96", (0, 6, 12, 24))}


def main() -> None:
    os.environ.setdefault("GATEKIT_DATA", str(ROOT.parent / "shared" / "datasets"))
    records, rows = [], []
    for size, (recipe, thresholds) in SIZES.items():
        ckpt = ROOT / "runs" / f"{recipe}-td0.3"
        out = ROOT / "runs" / f"dynamic-skipping-{size}"
        paths = [
            m["manifest_path"]
            for m in export_all(ckpt, out / "dense", graphs=["dense"], formats=["onnx"], knn_check=False)[0]
        ]
        for t in thresholds:
            paths += [
                m["manifest_path"]
                for m in export_all(
                    ckpt,
                    out / f"min{t}",
                    graphs=["dynamic"],
                    formats=["onnx"],
                    knn_check=False,
                    record_inputs=256,
                    dynamic_min_size=t,
                    dynamic_form="conv",
                )[0]
            ]
        recs = bench_manifests(paths, [1, 2], Protocol(), runtimes=["ort"], progress=False)
        records += recs
        dense = {r["threads"]: r for r in recs if r["manifest"]["graph"] == "dense"}
        for r in recs:
            if r["manifest"]["graph"] != "dynamic":
                continue
            m = r["manifest"]
            art = r["artifact"]
            import json

            full = json.loads(Path(art).with_suffix(".onnx.json").read_text())
            skip = full["dynamic_skipping"]
            rows.append(
                {
                    "size": size,
                    "threads": r["threads"],
                    "min_size": skip["min_size"],
                    "skipping": skip["blocks"],
                    "executed_macs_ratio": m["macs"]["ratio_to_dense"],
                    "p50_ms": r["stats"]["p50_ms"],
                    "p90_ms": r["stats"]["p90_ms"],
                    "dense_p50_ms": dense[r["threads"]]["stats"]["p50_ms"],
                    "ratio_to_dense_p50": r["stats"]["p50_ms"] / dense[r["threads"]]["stats"]["p50_ms"],
                    "ratio_to_dense_p90": r["stats"]["p90_ms"] / dense[r["threads"]]["stats"]["p90_ms"],
                }
            )
    write_jsonl(HERE / "dynamic-skipping.jsonl", records)
    write_json(HERE / "dynamic-skipping.json", {"machine": machine_info(), "rows": rows})
    lines = [
        "| input | threads | skip in blocks with output side >= | blocks skipping | executed MACs / dense "
        "| p50 / p90 ms | p50 ratio to dense | p90 ratio |",
        "|---:|---:|---:|---|---:|---|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["size"], r["threads"], r["min_size"])):
        lines.append(
            f"| {r['size']} | {r['threads']} | {r['min_size'] or 'every block'} | "
            f"{sum(r['skipping'])} of {len(r['skipping'])} | "
            f"{r['executed_macs_ratio']:.3f} | {r['p50_ms']:.3f} / {r['p90_ms']:.3f} | {r['ratio_to_dense_p50']:.2f} | "
            f"{r['ratio_to_dense_p90']:.2f} |"
        )
    info = machine_info()
    write_text(
        HERE / "dynamic-skipping.md",
        f"Machine: {info['cpu']}, {info['cores']} cores; onnxruntime "
        f"{info['packages'].get('onnxruntime')}; batch 1; t_d 0.3 full-width checkpoints.\n\n"
        + "\n".join(lines)
        + "\n",
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
