"""Tabulates `gatekit export --json` outputs of several budgets into benchmarks/export/results.{json,md}.

    for td in 0.1 0.3 0.5; do
      gatekit export CKPT_$td --graph all --format all --dynamic-batch --out runs/export/td$td \
          --json runs/export/td$td/export.json
    done
    python benchmarks/export/record.py runs/export/td0.1/export.json runs/export/td0.3/export.json \
        runs/export/td0.5/export.json --out benchmarks/export
"""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.argument("exports", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
def main(exports: tuple[str, ...], out_dir: str) -> None:
    from gatekit.atomic import write_json, write_text
    from gatekit.sysinfo import machine_info

    rows, skipped = [], []
    for path in exports:
        data = json.loads(Path(path).read_text())
        for m in data["artifacts"]:
            a = m.get("agreement") or {}
            rows.append(
                {
                    "budget": m["budget"],
                    "gate_group": m["model_config"]["gate_group"],
                    "graph": m["graph"],
                    "format": m["format"],
                    "dynamic_form": m.get("dynamic_form"),
                    "widths": m["widths"],
                    "macs_ratio": m["macs"]["ratio_to_dense"],
                    "macs_p90_ratio": (m["macs"].get("p90") or m["macs"]["mean"]) / m["macs"]["dense"],
                    "flop_counter_macs": m["macs"].get("flop_counter_macs"),
                    "macs": m["macs"]["mean"],
                    "max_relative_error": max(m["verification"]["relative_error"].values()),
                    "verified_batches": sorted(m["verification"]["relative_error"]),
                    "runtime": f"{m['runtime']['name']} {m['runtime']['version']} ({m['runtime']['precision']})",
                    "knn20_static": a.get("knn20_static"),
                    "knn20_gated": a.get("knn20_gated"),
                    "checkpoint_sha256": m["checkpoint_sha256"],
                }
            )
        skipped += data.get("not_exported", [])
    lines = [
        "| t_d | group | graph | format | inner widths per block | MACs / dense | rel. error (batches) "
        "| k-NN static vs gated |",
        "|---:|---:|---|---|---|---:|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["budget"], r["gate_group"], r["graph"], r["format"])):
        knn = f"{100 * r['knn20_static']:.2f} vs {100 * r['knn20_gated']:.2f}" if r["knn20_static"] is not None else ""
        form = f" ({r['dynamic_form']})" if r["dynamic_form"] else ""
        lines.append(
            f"| {r['budget']} | {r['gate_group']} | {r['graph']}{form} | {r['format']} | {r['widths']} | "
            f"{r['macs_ratio']:.3f} | {r['max_relative_error']:.1e} ({', '.join(r['verified_batches'])}) | {knn} |"
        )
    for s in skipped:
        lines.append(f"| | | {s['graph']} | {s['format']} | not exported: {s['error']} | | | |")
    write_json(Path(out_dir) / "results.json", {"machine": machine_info(), "rows": rows, "not_exported": skipped})
    write_text(Path(out_dir) / "results.md", "\n".join(lines) + "\n")
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
