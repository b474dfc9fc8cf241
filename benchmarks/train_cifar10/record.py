"""Builds the recorded table of the cpu-small acceptance run from the run directories.

    .venv/bin/python benchmarks/train_cifar10/record.py --runs runs/cpu-small \
        --throughput benchmarks/train_cifar10/throughput.json --out benchmarks/train_cifar10

Reads RUNS/<method>/{eval.json,metrics.jsonl} for the three methods and RUNS/random-init/eval.json,
writes OUT/results.json and OUT/results.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

METHODS = ("vicreg-dual", "vicreg", "vicreg-gating")
TRAINED_PATHS = {"vicreg": ("dense",), "vicreg-gating": ("gated",), "vicreg-dual": ("dense", "gated")}


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


@click.command()
@click.option("--runs", "runs_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--throughput", "throughput_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--trained-on", default="", help="Where the runs were trained, for the record.")
def main(runs_dir: str, throughput_path: str, out_dir: str, trained_on: str) -> None:
    from gatekit.atomic import write_json, write_text
    from gatekit.sysinfo import machine_info

    runs = Path(runs_dir)
    speed = json.loads(Path(throughput_path).read_text())
    random = json.loads((runs / "random-init" / "eval.json").read_text())["paths"]
    rows = []
    for method in METHODS:
        ev = json.loads((runs / method / "eval.json").read_text())
        metrics = [json.loads(x) for x in (runs / method / "metrics.jsonl").read_text().splitlines()]
        # only the paths the method trained (the other path's BNs and gates were never trained)
        paths = {p: r for p, r in ev["paths"].items() if p in TRAINED_PATHS[method]}
        row = {
            "method": method,
            "epochs": metrics[-1]["epoch"],
            "knn20_dense": paths.get("dense", {}).get("knn20_cosine"),
            "knn20_gated": paths.get("gated", {}).get("knn20_cosine"),
            "knn1_dense": paths.get("dense", {}).get("knn1_euclidean"),
            "knn1_gated": paths.get("gated", {}).get("knn1_euclidean"),
            "linear_dense": paths.get("dense", {}).get("linear"),
            "linear_gated": paths.get("gated", {}).get("linear"),
            "flops_kept": paths["gated"]["flops"]["flops_kept"] if "gated" in paths else 1.0,
            "flops_kept_p90": paths["gated"]["flops"]["flops_kept_p90"] if "gated" in paths else 1.0,
            "cpu_images_per_s": speed["images_per_s"][method]["median"],
            "cpu_ratio_to_vicreg": speed["ratio_to_vicreg"][method]["median"],
            "cpu_hours_per_run": metrics[-1]["epoch"] * 50000 / speed["images_per_s"][method]["median"] / 3600,
            "train_images_per_s_where_trained": metrics[-1]["images_per_s"],
            "checkpoint_sha256": ev["checkpoint_sha256"],
        }
        rows.append(row)
    result = {
        "suite": "train_cifar10 / cpu-small (ResNet-18 x0.25, t_d 0.3, real CIFAR-10)",
        "trained_on": trained_on,
        "evaluated_on": machine_info(),
        "throughput": speed,
        "random_init": {
            p: {k: v for k, v in r.items() if k in ("knn20_cosine", "knn1_euclidean", "linear")}
            for p, r in random.items()
        },
        "rows": rows,
    }
    lines = [
        "| method | epochs | k-NN k=20 dense | k-NN k=20 gated | k-NN k=1 dense / gated | linear dense / gated "
        "| gated FLOPs kept (p90) | CPU train img/s (x vicreg) | CPU h / run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['epochs']} | {_pct(r['knn20_dense'])} | {_pct(r['knn20_gated'])} | "
            f"{_pct(r['knn1_dense'])} / {_pct(r['knn1_gated'])} | "
            f"{_pct(r['linear_dense'])} / {_pct(r['linear_gated'])} | "
            f"{r['flops_kept']:.3f} ({r['flops_kept_p90']:.3f}) | "
            f"{r['cpu_images_per_s']:.0f} ({r['cpu_ratio_to_vicreg']:.2f}) | "
            f"{r['cpu_hours_per_run']:.2f} |"
        )
    lines.append(
        f"| random init | 0 | {_pct(random['dense']['knn20_cosine'])} | {_pct(random['gated']['knn20_cosine'])} | "
        f"{_pct(random['dense']['knn1_euclidean'])} / {_pct(random['gated']['knn1_euclidean'])} | "
        f"{_pct(random['dense'].get('linear'))} / {_pct(random['gated'].get('linear'))} | - | - | - |"
    )
    m = speed["machine"]
    lines += [
        "",
        f"Accuracy: top-1 (%) on the 10,000 real CIFAR-10 test images, k-NN memory = the 50,000 training images. "
        f"Trained on: {trained_on or 'see results.json'}. "
        f"CPU images/s: median of {len(speed['images_per_s']['vicreg']['runs'])} "
        f"interleaved repeats on {m['cpu']} ({m['cores']} cores), {speed['threads']} threads, "
        f"torch {m['packages'].get('torch')}, "
        f"kornia {m['packages'].get('kornia')}, batch {speed['batch']}.",
    ]
    out = Path(out_dir)
    write_json(out / "results.json", result)
    write_text(out / "results.md", "\n".join(lines) + "\n")
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
