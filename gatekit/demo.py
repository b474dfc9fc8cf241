"""`make demo`: the whole pipeline, as far as it is built, end to end on real CIFAR-10 in minutes on 2 cores.

Today: train VICReg-Dual-Gating (the cpu-small recipe, shortened) -> evaluate both paths (k-NN,
linear probe, FLOPs kept, channel usage) against the same network at random initialisation ->
export every graph to every format available here, each verified -> benchmark them all under one
protocol, with the latency-against-FLOPs table and plot -> build this CPU's latency table (LUT) for
ONNX Runtime at 1 thread and check it on held-out networks -> pick: on the recorded results for a
target halfway between the fastest and slowest graphs' p90, then, with the LUT, static widths never exported
for a target below the recorded static graph's, exported, verified and measured.
"""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.command()
@click.option("--out", "out_dir", default="runs/demo", show_default=True, type=click.Path())
@click.option(
    "--epochs", default=3, show_default=True, type=click.IntRange(min=1), help="Training epochs of the short run."
)
@click.option("--limit", default=20000, show_default=True, type=click.IntRange(min=1), help="Training images used.")
@click.option(
    "--data-dir",
    type=click.Path(),
    help="Default: $GATEKIT_DATA, else $XDG_CACHE_HOME/gatekit/data (~/.cache/gatekit/data), where CIFAR-10 "
    "is downloaded (md5 checked) when it is missing and a network is reachable.",
)
def demo(out_dir: str, epochs: int, limit: int, data_dir: str | None) -> None:
    from gatekit.data import load_dataset

    # the data first: found, extracted from the official archive, or downloaded; else one line saying how
    load_dataset("cifar10", "test", data_dir, limit=1)
    _run(out_dir, epochs, limit, data_dir)


def _run(out_dir: str, epochs: int, limit: int, data_dir: str | None) -> None:
    from gatekit.atomic import write_json, write_text
    from gatekit.bench.protocol import Protocol
    from gatekit.bench.run import write_jsonl
    from gatekit.bench.sweep import bench_manifests
    from gatekit.bench.tables import markdown_table, plot_latency_vs_flops
    from gatekit.evaluate.run import evaluate_checkpoint
    from gatekit.export.sweep import export_all
    from gatekit.train.config import build_config
    from gatekit.train.trainer import train

    out = Path(out_dir)
    t0 = time.perf_counter()
    cfg = build_config("cpu-small", {"epochs": epochs, "limit": limit, "data_dir": data_dir, "warmup_epochs": epochs})
    click.echo(
        f"[1/7] train {cfg.method}, ResNet-18 x{cfg.width}, t_d={cfg.budget}, "
        f"{epochs} epochs on {limit} real CIFAR-10 images"
    )
    trained = train(cfg, out / "train", overwrite=True)  # the demo's own directory: each demo starts over
    click.echo("[2/7] evaluate the trained encoder (dense and gated paths)")
    result = evaluate_checkpoint(out / "train", knn=True, linear=True, threads=cfg.threads, data_dir=data_dir)
    click.echo("[3/7] evaluate the same network at random initialisation (the baseline)")
    baseline = evaluate_checkpoint(
        out / "train",
        knn=True,
        linear=False,
        random_init=True,
        threads=cfg.threads,
        data_dir=data_dir,
        out_dir=out / "random-init",
    )
    rows = ["| encoder | path | k-NN k=20 cos | k-NN k=1 euc | linear | FLOPs kept |", "|---|---|---|---|---|---|"]
    for name, res in (("trained", result), ("random init", baseline)):
        for path, r in res["paths"].items():
            kept = f"{r['flops']['flops_kept']:.3f}" if "flops" in r else "1.000"
            lin = f"{100 * r['linear']:.1f}" if "linear" in r else "-"
            rows.append(
                f"| {name} | {path} | {100 * r['knn20_cosine']:.1f} | "
                f"{100 * r['knn1_euclidean']:.1f} | {lin} | {kept} |"
            )
    table = "\n".join(rows)
    click.echo("\n" + table + "\n")

    click.echo(
        "[4/7] export dense, static, hybrid and dynamic graphs to every format available here, in fp32 and int8 "
        "(each verified: fp32 against PyTorch, int8 by feature cosine and k-NN against fp32)"
    )

    def exported(m):
        v = m["verification"]
        check = (
            f"max rel err {max(v['relative_error'].values()):.1e}"
            if m["precision"] == "fp32"
            else f"cosine to fp32 {v['cosine_to_fp32']['mean']:.4f}, k-NN {v['knn_delta_points']:+.2f} points"
        )
        form = f" ({m['dynamic_form']})" if m.get("dynamic_form") else ""
        click.echo(
            f"  {m['graph']:8s}{form:9s} {m['format']:9s} {m['precision']:5s} "
            f"MACs x{m['macs']['ratio_to_dense']:.3f}  {check}"
        )

    # Calibration on 10,000 training images (the exporter's default is 2,000): channels that no calibration image
    # turns on are removed before export, and the dynamic graph is verified against the gated path on held-out
    # images.  With 2,000, a 20,000-image demo run had one held-out image (of 64) turn on a removed channel, and
    # the dynamic graph was refused; 10,000 keeps those rare channels (about 7 s more per graph here).
    manifests, _ = export_all(
        out / "train",
        out / "export",
        data_dir=data_dir,
        threads=cfg.threads,
        knn_train=10000,
        knn_test=2000,
        calib=10000,
        precisions=("fp32", "int8"),
        record_inputs=256,
        on_result=exported,
        on_failure=lambda g, f, e: click.echo(f"  {g:8s} {f:9s} NOT EXPORTED: {e}", err=True),
    )
    click.echo("[5/7] benchmark every artifact: batch 1, 1 and 2 threads, 256 real test images, >= 2 s each")
    protocol = Protocol(warmup_runs=50, warmup_seconds=0.2, min_runs=1000, min_seconds=2.0)
    records = bench_manifests(
        [m["manifest_path"] for m in manifests], [1, 2], protocol, data_dir=data_dir, progress=False
    )
    write_jsonl(out / "bench.jsonl", records)
    bench_table = markdown_table(records)
    plot_latency_vs_flops(records, out / "latency_vs_flops.png", title="demo checkpoint, this CPU")
    click.echo(
        "\nLatency against FLOPs (p50 / p90 ms, ratio to dense on the same runtime and threads):\n" + bench_table
    )
    write_json(out / "eval.json", result)
    lut, picks = _lut_and_picks(out, records, data_dir)
    summary = {
        "train": trained.summary,
        "eval": result,
        "random_init": baseline,
        "export": manifests,
        "bench": records,
        "lut_validation": lut["validation"],
        "picks": picks,
        "seconds": time.perf_counter() - t0,
    }
    write_json(out / "demo.json", summary)
    write_text(out / "demo.md", table + "\n\n" + bench_table + "\n\n" + picks["recorded"]["table"] + "\n")
    lp = picks["lut"]
    click.echo("\n==== summary ====\nAccuracy:\n" + table)
    click.echo(
        "\nLatency against FLOPs (p50 / p90 ms, ratio to dense on the same runtime and threads):\n" + bench_table
    )
    click.echo(
        f"\nPick on recorded results, p90 <= {picks['recorded']['target_ms']:.3f} ms (ORT, 1 thread): "
        f"{picks['recorded']['reason']}"
    )
    click.echo(
        f"Pick with the LUT, p90 <= {lp['target_ms']:.3f} ms: static widths {lp['chosen']['widths']}, predicted "
        f"{lp['chosen']['predicted_p90_ms']:.3f} ms, measured {lp['measured']['p90_ms']:.3f} ms "
        f"({'meets' if lp['meets_target'] else 'MISSES'} the target)"
    )
    click.echo(
        f"\ntraining: {trained.summary['images_per_s']:.0f} images/s; plots: {out / 'train' / 'channel_usage.png'}, "
        f"{out / 'latency_vs_flops.png'}, {out / 'lut-ort-1t.png'}, {out / 'pick.png'}, {out / 'pick-lut.png'}; "
        f"total {summary['seconds'] / 60:.1f} min"
    )


def _lut_and_picks(out: Path, records: list[dict], data_dir: str | None) -> tuple[dict, dict]:
    """Steps 6 and 7: this CPU's LUT (ORT, 1 thread), then a pick on the recorded results and one from the LUT."""
    import json

    from gatekit.artifacts import runtime_name
    from gatekit.atomic import write_json
    from gatekit.bench.protocol import Protocol
    from gatekit.chains import plan_export_measure
    from gatekit.models.arch import Architecture
    from gatekit.pick.plan import plan_from_manifest, plot_plan
    from gatekit.pick.profile import ProfileOptions, plot_validation, profile, real_inputs
    from gatekit.pick.select import candidates, load_accuracies, pick, plot, table

    ort1 = [r for r in records if runtime_name(r["runtime"]["name"]) == "ort" and r["threads"] == 1]
    cfg = ort1[0]["manifest"]["model_config"]
    click.echo(
        "[6/7] this CPU's latency table: ONNX Runtime, 1 thread, every block at every width, "
        "checked on 10 held-out networks"
    )
    images = real_inputs("cifar10", data_dir, cfg["input_size"])
    opts = ProfileOptions(
        runtime="ort",
        threads=1,
        protocol=Protocol(20, 0.1, 300, 0.5),
        check_protocol=Protocol(50, 0.2, 1000, 1.5),
        check=10,
    )
    lut = profile(Architecture.from_model_config(cfg), opts, images)
    write_json(out / "lut-ort-1t.json", lut)
    plot_validation(lut, out / "lut-ort-1t.png")
    v = lut["validation"]
    click.echo(
        f"  {sum(len(b['widths']) for b in lut['blocks']) + 2} entries in {lut['seconds']:.0f} s; "
        "held-out within +-10%: "
        f"p50 {100 * v['within_tolerance_p50']:.0f}%, p90 {100 * v['within_tolerance_p90']:.0f}%"
    )

    p90 = {r["manifest"]["graph"]: r["stats"]["p90_ms"] for r in ort1 if r["manifest"]["graph"] in ("dense", "static")}
    lo, hi = min(r["stats"]["p90_ms"] for r in ort1), max(r["stats"]["p90_ms"] for r in ort1)
    target = (lo + hi) / 2
    click.echo(
        f"[7/7] pick on the recorded results (ORT, 1 thread) for p90 <= {target:.3f} ms, halfway between the fastest "
        f"({lo:.3f} ms) and the slowest ({hi:.3f} ms) graph"
    )
    cands = candidates(records, load_accuracies([out / "eval.json"]), runtime="ort", threads=1, batch=1)
    chosen, reason = pick(cands, target)
    recorded_table = table(cands, chosen, target, 90)
    plot(cands, chosen, target, 90, out / "pick.png")
    click.echo(recorded_table + f"\nchosen: {reason}")
    # the gate usage that step 4's static export recorded ranks the channels: no second calibration pass
    usage = out / "export" / "static.onnx.json"
    # a target below the recorded static graph, but one the smallest static configuration is predicted to
    # meet with the planner's 5% margin (on a fast CPU the recorded static graph can sit near that floor)
    floor = min(r["predicted_p90_ms"] for r in plan_from_manifest(lut, usage, float("inf"))["options"]) / 0.95
    new_target = max(0.9 * p90["static"], 1.1 * floor)
    click.echo(
        f"  and with the LUT, static widths never exported for p90 <= {new_target:.3f} ms (recorded static graph: "
        f"{p90['static']:.3f} ms; smallest static configuration predicted at {0.95 * floor:.3f} ms):"
    )
    planned = plan_export_measure(
        lut,
        new_target,
        out / "pick",
        usage_manifest=usage,
        data_dir=data_dir,
        protocol=Protocol(min_runs=1000, min_seconds=2.0),
        progress=False,
    )
    plot_plan(planned, lut, out / "pick-lut.png")
    c = planned["chosen"]
    click.echo(
        f"  planned widths {c['widths']} (MACs x{planned['macs_ratio']:.3f}), "
        f"predicted p90 {c['predicted_p90_ms']:.3f} ms; "
        f"measured p90 {planned['measured']['p90_ms']:.3f} ms: "
        f"{'meets' if planned['meets_target'] else 'MISSES'} {new_target:.3f} ms"
    )
    planned = json.loads(json.dumps({k: v for k, v in planned.items() if k != "record"}))
    return lut, {
        "recorded": {
            "target_ms": target,
            "reason": reason,
            "chosen": chosen.to_dict() if chosen else None,
            "table": recorded_table,
        },
        "lut": planned,
    }


def main(argv: list[str] | None = None) -> None:
    """`python -m gatekit.demo`: errors are one line on stderr (exit 2), never a traceback."""
    from gatekit.cli.runner import run_click

    run_click(demo, argv, "gatekit.demo", "gatekit demo")


if __name__ == "__main__":
    main()
