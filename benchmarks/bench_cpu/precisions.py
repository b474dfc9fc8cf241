"""fp32, int8 and bf16 side by side: dense, static and hybrid graphs of the t_d 0.1 / 0.3 / 0.5 checkpoints in
fp32 and int8 on ONNX Runtime and OpenVINO, and bf16 on OpenVINO, at 1 and 2 threads, in one run per set.

    python benchmarks/bench_cpu/precisions.py --set x0.25             # committed cpu-small checkpoints
    python benchmarks/bench_cpu/precisions.py --set full32 --train    # cpu-fullwidth recipe (~5 min per budget)

Phase 1 (torch): every artifact exported and verified (fp32 elementwise against PyTorch; int8 and bf16 by
feature cosine and k-NN top-1 against the fp32 graph, on --knn-train training images as memory and
--knn-test test images). Phase 2 (a fresh process): interleaved rounds, medians over rounds. The table
gives p50/p90, the latency ratio to fp32 dense on the same runtime and threads, the cosine and the k-NN
difference of every artifact, and the int8 static graph's latency-over-FLOPs ratio against int8 dense.

Writes benchmarks/bench_cpu/precisions-{set}.{jsonl,json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from interleaved import ROOT, add_arguments, bench_phase, checkpoints, run_fresh, write_results  # noqa: E402

PRECISIONS = {"onnx": ("fp32", "int8"), "openvino": ("fp32", "int8", "bf16")}


def export_phase(name: str, train: bool, art_dir: Path, knn_train: int, knn_test: int, budgets) -> list[dict]:
    from gatekit.export.sweep import export_all

    items = []
    for b, ckpt in checkpoints(name, train).items():
        if b not in budgets:
            continue
        graphs = ["static", "hybrid"] + (["dense"] if b == 0.3 or len(budgets) == 1 else [])
        for fmt, precisions in PRECISIONS.items():
            manifests, _ = export_all(
                ckpt,
                art_dir / f"td{b}",
                graphs=graphs,
                formats=[fmt],
                precisions=precisions,
                strict=True,
                knn_check=False,
                knn_train=knn_train,
                knn_test=knn_test,
                progress=False,
            )
            items += [
                {
                    "kind": "artifact",
                    "budget": b,
                    "graph": m["graph"],
                    "manifest": m["manifest_path"],
                    "format": m["format"],
                    "precision": m["precision"],
                    "check": {
                        k: m["verification"].get(k)
                        for k in ("cosine_to_fp32", "knn_delta_points", "knn20", "knn20_fp32")
                    },
                }
                for m in manifests
            ]
    return items


def summarise(result: dict, items: list[dict]) -> tuple[dict, str]:
    checks = {it["manifest"]: it for it in items}
    rows = result["rows"]
    table = []
    by_key = {}
    for r in rows:
        by_key[(r["budget"], r["graph"], r["runtime"], r["threads"], r["precision"])] = r
    for r in rows:
        dense32 = next(
            (
                d
                for k, d in by_key.items()
                if k[1] == "dense" and k[2] == r["runtime"] and k[3] == r["threads"] and k[4] == "fp32"
            ),
            None,
        )
        dense_same = next(
            (
                d
                for k, d in by_key.items()
                if k[1] == "dense" and k[2] == r["runtime"] and k[3] == r["threads"] and k[4] == r["precision"]
            ),
            None,
        )
        item = checks.get(r["manifest"], {})
        check = item.get("check") or {}
        row = dict(
            r,
            over_fp32_dense=r["p50_ms"] / dense32["p50_ms"] if dense32 else None,
            over_same_precision_dense=r["p50_ms"] / dense_same["p50_ms"] if dense_same else None,
            cosine=(check.get("cosine_to_fp32") or {}).get("mean"),
            knn_delta_points=check.get("knn_delta_points"),
        )
        if r["graph"] == "static" and row["over_same_precision_dense"]:
            row["latency_over_flops"] = row["over_same_precision_dense"] / r["flops_ratio"]
        table.append(row)
    table.sort(
        key=lambda x: (
            x["runtime"],
            x["threads"],
            x["budget"] if x["graph"] != "dense" else 0,
            x["graph"],
            x["precision"],
        )
    )
    lines = [
        "| runtime | threads | t_d | graph | precision | FLOPs ratio | p50 / p90 ms | x fp32 dense "
        "| x same-precision dense "
        "| static latency / FLOPs | cosine to fp32 | k-NN vs fp32 (points) |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in table:

        def f(v, fmt):
            return format(v, fmt) if v is not None else "-"

        lines.append(
            f"| {x['runtime']} | {x['threads']} | {x['budget'] if x['graph'] != 'dense' else '-'} | {x['graph']} | "
            f"{x['precision']} | {x['flops_ratio']:.3f} | {x['p50_ms']:.3f} / {x['p90_ms']:.3f} | "
            f"{f(x['over_fp32_dense'], '.2f')} | {f(x['over_same_precision_dense'], '.2f')} | "
            f"{f(x.get('latency_over_flops'), '.2f')} | {f(x['cosine'], '.4f')} | {f(x['knn_delta_points'], '+.2f')} |"
        )
    return {"table": table}, "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    ap.add_argument("--knn-train", type=int, default=10000)
    ap.add_argument("--knn-test", type=int, default=10000)
    ap.add_argument(
        "--budgets", default="0.1,0.3,0.5", help="t_d of the checkpoints to export (the dense graph comes from 0.3)"
    )
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    if args.bench_only:
        items = json.loads(Path(args.bench_only).read_text())
        result = bench_phase(items, threads, args.rounds, args.min_runs, args.min_seconds, args.seed)
        summary, md = summarise(result, items)
        write_results(
            f"precisions-{args.name}",
            result,
            summary,
            md,
            args,
            f"python benchmarks/bench_cpu/precisions.py --set {args.name}",
        )
        return
    budgets = [float(b) for b in args.budgets.split(",")]
    items = export_phase(
        args.name, args.train, ROOT / "runs" / "precisions" / args.name, args.knn_train, args.knn_test, budgets
    )
    sys.exit(run_fresh(__file__, args.name, items, args))


if __name__ == "__main__":
    main()
