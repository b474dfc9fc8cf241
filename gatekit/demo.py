"""`make demo`: the whole pipeline, as far as it is built, end to end on real CIFAR-10 in minutes on 2 cores.

Today: train VICReg-Dual-Gating (the cpu-small recipe, shortened) -> evaluate both paths (k-NN,
linear probe, FLOPs kept, channel usage) against the same network at random initialisation ->
export every graph to every format available here, each verified -> benchmark them all under one
protocol and end with the latency-against-FLOPs table and plot.
"""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.command()
@click.option("--out", "out_dir", default="runs/demo", show_default=True, type=click.Path())
@click.option("--epochs", default=3, show_default=True, help="Training epochs of the short run.")
@click.option("--limit", default=25000, show_default=True, help="Training images used.")
@click.option("--data-dir", type=click.Path(), help="Default: $GATEKIT_DATA.")
def demo(out_dir: str, epochs: int, limit: int, data_dir: str | None) -> None:
    from gatekit.atomic import write_json, write_text
    from gatekit.bench.protocol import Protocol
    from gatekit.bench.report import markdown_table, plot_latency_vs_flops
    from gatekit.bench.run import write_jsonl
    from gatekit.bench.sweep import bench_manifests, export_all
    from gatekit.evaluate.run import evaluate_checkpoint
    from gatekit.train.config import build_config
    from gatekit.train.trainer import train

    out = Path(out_dir)
    t0 = time.perf_counter()
    cfg = build_config("cpu-small", {"epochs": epochs, "limit": limit, "data_dir": data_dir, "warmup_epochs": epochs})
    click.echo(f"[1/5] train {cfg.method}, ResNet-18 x{cfg.width}, t_d={cfg.budget}, {epochs} epochs on {limit} real CIFAR-10 images")
    trained = train(cfg, out / "train")
    click.echo("[2/5] evaluate the trained encoder (dense and gated paths)")
    result = evaluate_checkpoint(out / "train", knn=True, linear=True, threads=cfg.threads, data_dir=data_dir)
    click.echo("[3/5] evaluate the same network at random initialisation (the baseline)")
    baseline = evaluate_checkpoint(out / "train", knn=True, linear=False, random_init=True, threads=cfg.threads,
                                   data_dir=data_dir, out_dir=out / "random-init")
    rows = ["| encoder | path | k-NN k=20 cos | k-NN k=1 euc | linear | FLOPs kept |", "|---|---|---|---|---|---|"]
    for name, res in (("trained", result), ("random init", baseline)):
        for path, r in res["paths"].items():
            kept = f"{r['flops']['flops_kept']:.3f}" if "flops" in r else "1.000"
            lin = f"{100 * r['linear']:.1f}" if "linear" in r else "-"
            rows.append(f"| {name} | {path} | {100 * r['knn20_cosine']:.1f} | {100 * r['knn1_euclidean']:.1f} | {lin} | {kept} |")
    table = "\n".join(rows)
    click.echo("\n" + table + "\n")

    click.echo("[4/5] export dense, static, hybrid and dynamic graphs to every format available here (each verified)")
    manifests = export_all(out / "train", out / "export", data_dir=data_dir, threads=cfg.threads, knn_train=10000,
                           record_inputs=256)
    click.echo("[5/5] benchmark every artifact: batch 1, 1 and 2 threads, 256 real test images, >= 2 s each")
    protocol = Protocol(warmup_runs=50, warmup_seconds=0.2, min_runs=1000, min_seconds=2.0)
    records = bench_manifests([m["manifest_path"] for m in manifests], [1, 2], protocol, data_dir=data_dir, progress=False)
    write_jsonl(out / "bench.jsonl", records)
    bench_table = markdown_table(records)
    plot_latency_vs_flops(records, out / "latency_vs_flops.png", title="demo checkpoint, this CPU")
    summary = {"train": trained.summary, "eval": result, "random_init": baseline, "export": manifests,
               "bench": records, "seconds": time.perf_counter() - t0}
    write_json(out / "demo.json", summary)
    write_text(out / "demo.md", table + "\n\n" + bench_table + "\n")
    click.echo("\nAccuracy:\n" + table)
    click.echo("\nLatency against FLOPs (p50 / p90 ms, ratio to dense on the same runtime and threads):\n" + bench_table)
    click.echo(f"\ntraining: {trained.summary['images_per_s']:.0f} images/s; plots: {out / 'train' / 'channel_usage.png'}, "
               f"{out / 'latency_vs_flops.png'}; total {summary['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    demo()
