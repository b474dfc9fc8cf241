"""int8 per-input channel skipping: the int8 dynamic graph (gatekit's int8 gated-block ops) beside the dense and
static graphs in int8 and fp32 and the fp32 dynamic graph, on ONNX Runtime and OpenVINO, in one interleaved run.

    python benchmarks/bench_cpu/int8_dynamic.py --set x0.25             # the committed cpu-small t_d 0.3 checkpoint
    python benchmarks/bench_cpu/int8_dynamic.py --set full32 --train    # cpu-fullwidth recipe, t_d 0.3

Phase 1 (this process, torch): exports dense, static and dynamic graphs of the t_d 0.3 checkpoint to ONNX and
OpenVINO IR in fp32 and int8, each verified (int8: feature cosine and k-NN against the fp32 graph, and for the
int8 dynamic graph how often its gate decisions equal the fp32 graph's). Phase 2 (a fresh process, no torch):
`--rounds` rounds, each measuring every (artifact, runtime, threads) once in a shuffled order with the bench
protocol; the figures are medians over rounds and every ratio compares numbers of the same run.

Writes benchmarks/bench_cpu/int8-dynamic-{set}.{jsonl,json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from interleaved import ROOT, add_arguments, bench_phase, checkpoints, run_fresh, write_results  # noqa: E402

BUDGET = 0.3
GRAPHS = ("dense", "static", "dynamic")


def export_phase(name: str, train: bool, art_dir: Path) -> list[dict]:
    """Every graph in fp32 and int8, both formats, verified; the dynamic graphs in their native form."""
    from gatekit.export.sweep import export_all

    ckpt = checkpoints(name, train, (BUDGET,))[BUDGET]
    items = []
    for precision in ("fp32", "int8"):
        manifests, _ = export_all(
            ckpt,
            art_dir / precision,
            graphs=list(GRAPHS),
            formats=["onnx", "openvino"],
            precisions=[precision],
            strict=True,
            knn_check=False,
            record_inputs=256,
            dynamic_form="native",
            progress=False,
        )
        for m in manifests:
            items.append(
                {
                    "kind": "artifact",
                    "budget": BUDGET,
                    "graph": m["graph"],
                    "precision": precision,
                    "format": m["format"],
                    "manifest": m["manifest_path"],
                    "paths": ["auto"],
                }
            )
    return items


def _find(d, key):
    """The first value of `key` anywhere in a nested manifest (verification reports nest by format)."""
    if isinstance(d, dict):
        if key in d:
            return d[key]
        for v in d.values():
            found = _find(v, key)
            if found is not None:
                return found
    return None


def accuracy_rows(items: list[dict]) -> list[dict]:
    """What the export's verification recorded for each int8 artifact."""
    rows = []
    for it in items:
        if it["precision"] != "int8":
            continue
        m = json.loads(Path(it["manifest"]).read_text())
        cos = _find(m, "cosine_to_fp32") or {}
        rows.append(
            {
                "graph": it["graph"],
                "format": it["format"],
                "form": m.get("dynamic_form"),
                "cosine_mean": cos.get("mean"),
                "cosine_min": cos.get("min"),
                "knn": _find(m, "knn20"),
                "knn_fp32": _find(m, "knn20_fp32"),
                "knn_delta_points": _find(m, "knn_delta_points"),
                "gate_agreement": _find(m, "gate_agreement"),
            }
        )
    return rows


def summarise(result: dict, items: list[dict]) -> tuple[dict, str]:
    rows = result["rows"]

    def p50(graph, precision, rt, t):
        for r in rows:
            if (r["graph"], r.get("precision"), r["runtime"], r["threads"]) == (graph, precision, rt, t):
                return r
        return None

    table = []
    for rt in ("ort", "openvino"):
        for t in sorted({r["threads"] for r in rows}):
            got = {(g, p): p50(g, p, rt, t) for g in GRAPHS for p in ("fp32", "int8")}
            if any(v is None for v in got.values()):
                continue
            ms = {k: v["p50_ms"] for k, v in got.items()}
            table.append(
                {
                    "runtime": rt,
                    "threads": t,
                    "ms": {f"{g} {p}": v for (g, p), v in ms.items()},
                    "ran": got[("dynamic", "int8")]["ran"],
                    "flops": {g: got[(g, "int8")]["flops_ratio"] for g in GRAPHS},
                    "dyn8_over_dense8": ms[("dynamic", "int8")] / ms[("dense", "int8")],
                    "dyn8_over_static8": ms[("dynamic", "int8")] / ms[("static", "int8")],
                    "dyn8_over_dense32": ms[("dynamic", "int8")] / ms[("dense", "fp32")],
                    "dense8_over_dense32": ms[("dense", "int8")] / ms[("dense", "fp32")],
                    "dyn32_over_dense32": ms[("dynamic", "fp32")] / ms[("dense", "fp32")],
                }
            )
    lines = [
        "| runtime | threads | dense fp32 ms | dense int8 ms | static int8 ms | dynamic fp32 ms | "
        "**dynamic int8 ms** | **dyn int8 / dense int8** | dyn int8 / static int8 | dyn int8 / dense fp32 | "
        "dense int8 / dense fp32 | dyn fp32 / dense fp32 | int8 op ran |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for x in table:
        ms = x["ms"]
        lines.append(
            f"| {x['runtime']} | {x['threads']} | {ms['dense fp32']:.3f} | {ms['dense int8']:.3f} | "
            f"{ms['static int8']:.3f} | {ms['dynamic fp32']:.3f} | **{ms['dynamic int8']:.3f}** | "
            f"**{x['dyn8_over_dense8']:.2f}** | {x['dyn8_over_static8']:.2f} | {x['dyn8_over_dense32']:.2f} | "
            f"{x['dense8_over_dense32']:.2f} | {x['dyn32_over_dense32']:.2f} | {x['ran']} |"
        )
    if table:
        f = table[0]["flops"]
        lines.append(
            f"\nFLOPs ratio to dense: static {f['static']:.3f}, dynamic (mean over the recorded test inputs) "
            f"{f['dynamic']:.3f}."
        )
    acc = accuracy_rows(items)
    lines += [
        "",
        "| int8 graph | format | form | cosine to fp32 (mean / min) | k-NN % (fp32 graph) | "
        "gate decisions equal to fp32's (calibration images) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for a in acc:
        cos = f"{a['cosine_mean']:.4f} / {a['cosine_min']:.3f}" if a["cosine_mean"] is not None else "-"
        knn = (
            f"{100 * a['knn']:.2f} ({100 * a['knn_fp32']:.2f})"
            if a["knn"] is not None and a["knn_fp32"] is not None
            else "-"
        )
        agree = a["gate_agreement"] or {}
        agree = (
            f"{100 * agree['decisions']:.2f}% ({100 * agree['images_all_agree']:.1f}% of images in every block)"
            if "decisions" in agree
            else "-"
        )
        lines.append(f"| {a['graph']} | {a['format']} | {a['form'] or '-'} | {cos} | {knn} | {agree} |")
    return {"table": table, "accuracy": acc}, "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    args = ap.parse_args()
    stem = f"int8-dynamic-{args.name}"
    command = f"python benchmarks/bench_cpu/int8_dynamic.py --set {args.name}" + (" --train" if args.train else "")
    defaults = ap.parse_args([])
    for flag in ("threads", "rounds", "min_runs", "min_seconds", "seed"):
        if getattr(args, flag) != getattr(defaults, flag):
            command += f" --{flag.replace('_', '-')} {getattr(args, flag)}"
    if args.bench_only:
        items = json.loads(Path(args.bench_only).read_text())
        result = bench_phase(
            items, [int(t) for t in args.threads.split(",")], args.rounds, args.min_runs, args.min_seconds, args.seed
        )
        summary, md = summarise(result, items)
        write_results(stem, result, summary, md, args, command)
        return
    art_dir = ROOT / "runs" / "int8_dynamic" / args.name
    items = export_phase(args.name, args.train, art_dir)
    sys.exit(run_fresh(__file__, args.name, items, args))


if __name__ == "__main__":
    main()
