"""The vicreg-dual budget sweep of the cpu-small recipe (t_d 0.1 / 0.3 / 0.5, and gate groups of 16).

    python benchmarks/train_cifar10/budgets.py RUN_DIR... --out benchmarks/train_cifar10

Each RUN_DIR holds model.safetensors, metrics.jsonl and eval.json (`gatekit eval RUN_DIR --json RUN_DIR/eval.json`).
"""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
def main(runs: tuple[str, ...], out_dir: str) -> None:
    from gatekit.atomic import write_json, write_text

    rows = []
    for run in runs:
        ev = json.loads((Path(run) / "eval.json").read_text())
        last = json.loads((Path(run) / "metrics.jsonl").read_text().splitlines()[-1])
        d, g = ev["paths"]["dense"], ev["paths"]["gated"]
        rows.append(
            {
                "run": Path(run).name,
                "budget": ev["budget"],
                "gate_group": ev["model_config"]["gate_group"],
                "epochs": last["epoch"],
                "knn20_dense": d["knn20_cosine"],
                "knn20_gated": g["knn20_cosine"],
                "knn1_dense": d["knn1_euclidean"],
                "knn1_gated": g["knn1_euclidean"],
                "flops_kept": g["flops"]["flops_kept"],
                "flops_kept_p90": g["flops"]["flops_kept_p90"],
                "flops_kept_train": last["flops_kept"],
                "checkpoint_sha256": ev["checkpoint_sha256"],
            }
        )
    rows.sort(key=lambda r: (r["gate_group"], r["budget"]))
    lines = [
        "| t_d | gate group | epochs | k-NN k=20 dense / gated | k-NN k=1 dense / gated | FLOPs kept, test (p90) "
        "| FLOPs R. |",
        "|---:|---:|---:|---|---|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['budget']} | {r['gate_group']} | {r['epochs']} | "
            f"{100 * r['knn20_dense']:.1f} / {100 * r['knn20_gated']:.1f} | "
            f"{100 * r['knn1_dense']:.1f} / {100 * r['knn1_gated']:.1f} | "
            f"{r['flops_kept']:.3f} ({r['flops_kept_p90']:.3f}) | "
            f"{100 * (1 - r['flops_kept']):.1f}% |"
        )
    write_json(Path(out_dir) / "budgets.json", {"rows": rows})
    write_text(Path(out_dir) / "budgets.md", "\n".join(lines) + "\n")
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
