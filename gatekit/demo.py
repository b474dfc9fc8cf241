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
    from gatekit.bench.report import markdown_table, plot_latency_vs_flops
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
    manifests = export_all(out / "train", out / "export", data_dir, cfg.threads)
    click.echo("[5/5] benchmark every artifact: batch 1, 1 and 2 threads, real test images")
    records = bench_all(out / "export", manifests, data_dir)
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


def export_all(checkpoint: Path, out: Path, data_dir: str | None, threads: int) -> list[dict]:
    from gatekit.export.exporter import FORMATS, ExportOptions, Prepared, export
    from gatekit.export.graphs import GRAPHS
    from gatekit.runtimes import available_backends

    have = set(available_backends())
    formats = [f for f in FORMATS if {"onnx": "ort", "openvino": "openvino", "tensorrt": "tensorrt"}[f] in have]
    manifests = []
    for graph in GRAPHS:
        opts = ExportOptions(graph=graph, data_dir=data_dir, threads=threads, knn_train=10000, record_inputs=256)
        prepared = Prepared(checkpoint, opts, progress=False)
        for fmt in formats:
            opts.fmt = fmt
            m = export(checkpoint, out, opts, progress=False, prepared=prepared)
            err = max(m["verification"]["relative_error"].values())
            click.echo(f"  {graph:8s} {fmt:9s} MACs x{m['macs']['ratio_to_dense']:.3f}  max rel err {err:.1e}")
            manifests.append(m)
    return manifests


def bench_all(out: Path, manifests: list[dict], data_dir: str | None) -> list[dict]:
    from gatekit.bench.protocol import Protocol
    from gatekit.bench.run import FORMAT_RUNTIME, bench_one, load_inputs, open_artifact, write_jsonl

    protocol = Protocol(warmup_runs=50, warmup_seconds=0.2, min_runs=1000, min_seconds=2.0)
    records, inputs = [], None
    for m in manifests:
        art = open_artifact(out / f"{next(iter(m['files'].values())).rsplit('.', 1)[0]}.{m['format']}.json")
        if inputs is None:
            inputs = load_inputs(art.manifest, 256, data_dir)
        for threads in (1, 2):
            r = bench_one(art, FORMAT_RUNTIME[m["format"]], threads, 1, protocol, *inputs)
            records.append(r)
    write_jsonl(out / "bench.jsonl", records)
    return records


if __name__ == "__main__":
    demo()
