"""The `gatekit` command line. Heavy imports (torch) happen inside the commands that need them, so the
deploy-side commands start on a device that carries only numpy and its runtime."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from gatekit import __version__
from gatekit.errors import GatekitError


def _write_json(path: str | None, data: dict) -> None:
    if path:
        from gatekit.atomic import write_json

        write_json(path, data)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="gatekit")
def cli() -> None:
    """gatekit: train a dense + channel-gated encoder, export it, benchmark it, pick the budget.

    \b
    Example:
      gatekit train --recipe cpu-small --data-dir ../shared/datasets --out runs/dual
      gatekit eval runs/dual --knn --linear --json runs/dual/eval.json
    """


@cli.command()
@click.option("--recipe", help="Recipe name (cifar10, cifar100, stl10, imagenet100, cpu-small) or a .toml path; flags override it.")
@click.option("--dataset", help="cifar10, cifar100, stl10, imagenet100, imagefolder or npz.")
@click.option("--data-dir", type=click.Path(), help="Directory with the data (default: $GATEKIT_DATA).")
@click.option("--split", help="Training split (stl10's paper recipe uses 'unlabeled').")
@click.option("--limit", type=int, help="Train on the first N images only.")
@click.option("--arch", help="resnet18 or resnet34.")
@click.option("--width", type=float, help="Width multiplier, e.g. 0.25 for CPU-scale runs.")
@click.option("--stem-padding", type=int, help="Stem conv padding (the paper's CIFAR stem uses 2).")
@click.option("--gate-group", type=int, help="Channels per gate decision (1 = the paper).")
@click.option("--method", type=click.Choice(["vicreg-dual", "vicreg", "vicreg-gating"]), help="Training method.")
@click.option("--budget", type=float, help="t_d: target fraction of backbone FLOPs kept by the gated path.")
@click.option("--epochs", type=int, help="Number of epochs.")
@click.option("--batch-size", type=int, help="Batch per process.")
@click.option("--lr", type=float, help="Base learning rate per 256 images (scaled by global batch / 256).")
@click.option("--warmup-epochs", type=float, help="Linear warm-up epochs.")
@click.option("--proj-dim", type=int, help="Projector hidden and output width (2048 in the paper).")
@click.option("--seed", type=int, help="Random seed.")
@click.option("--device", help="auto, cpu or cuda.")
@click.option("--threads", type=int, help="CPU threads for torch.")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Run directory for checkpoints and logs.")
@click.option("--resume", is_flag=True, help="Continue exactly from OUT/checkpoint.pt.")
@click.option("--json", "json_path", type=click.Path(), help="Write the training summary as JSON here.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(recipe, dataset, data_dir, split, limit, arch, width, stem_padding, gate_group, method, budget, epochs,
          batch_size, lr, warmup_epochs, proj_dim, seed, device, threads, out_dir, resume, json_path, quiet):
    """Train an encoder self-supervised (VICReg-Dual-Gating by default).

    \b
    Example (CPU, under a minute):
      gatekit train --dataset cifar10 --arch resnet18 --width 0.125 --budget 0.3 \\
          --epochs 1 --limit 2000 --out runs/tiny --json runs/tiny/summary.json
    Under torchrun, training runs in several processes with synchronised BN:
      torchrun --nproc-per-node 2 -m gatekit train --recipe cifar10 --out runs/c10
    """
    from gatekit.train.config import build_config
    from gatekit.train.trainer import train as run_training

    overrides = dict(dataset=dataset, data_dir=data_dir, split=split, limit=limit, arch=arch, width=width,
                     stem_padding=stem_padding, gate_group=gate_group, method=method, budget=budget, epochs=epochs,
                     batch_size=batch_size, lr=lr, warmup_epochs=warmup_epochs, seed=seed, device=device,
                     threads=threads, proj_hidden=proj_dim, proj_out=proj_dim)
    if resume and recipe is None and Path(out_dir, "checkpoint.pt").is_file():
        cfg = _resume_config(out_dir, overrides)
    else:
        cfg = build_config(recipe, overrides)
    result = run_training(cfg, out_dir, resume=resume, progress=not quiet)
    summary = dict(result.summary, config=cfg.to_dict())
    if _is_main_process():
        click.echo(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
        _write_json(json_path, summary)


def _resume_config(out_dir: str, overrides: dict):
    from gatekit.checkpoint import load_state
    from gatekit.train.config import TrainConfig

    saved = json.loads(load_state(Path(out_dir) / "checkpoint.pt")["config"])
    if overrides.get("epochs"):
        saved["epochs"] = overrides["epochs"]
    return TrainConfig.from_dict(saved)


def _is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


@cli.command("eval")
@click.argument("checkpoint", type=click.Path())
@click.option("--path", "paths", type=click.Choice(["auto", "dense", "gated", "both"]), default="auto", show_default=True,
              help="auto: the paths the method trained (vicreg: dense; vicreg-gating: gated; vicreg-dual: both).")
@click.option("--knn/--no-knn", default=True, show_default=True, help="k-NN top-1: k=20 cosine-weighted and k=1 Euclidean (the paper's).")
@click.option("--linear", is_flag=True, help="Also train a linear probe on frozen features (saved beside the checkpoint).")
@click.option("--dataset", help="Evaluate on this dataset instead of the training one.")
@click.option("--data-dir", type=click.Path(), help="Directory with the data (default: the training one, then $GATEKIT_DATA).")
@click.option("--limit-train", type=int, help="Use only the first N training images as the k-NN memory / probe set.")
@click.option("--random-init", is_flag=True, help="Evaluate the same architecture at random initialisation (a baseline).")
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=int)
@click.option("--out", "out_dir", type=click.Path(), help="Where the probe and channel-usage PNG go (default: the checkpoint's directory).")
@click.option("--json", "json_path", type=click.Path(), help="Write the results as JSON here.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def eval_cmd(checkpoint, paths, knn, linear, dataset, data_dir, limit_train, random_init, device, threads, out_dir,
             json_path, quiet):
    """Evaluate a checkpoint on its dense and gated paths: k-NN, linear probe, FLOPs and channel usage.

    \b
    Example:
      gatekit eval runs/dual --knn --linear --json runs/dual/eval.json
    """
    from gatekit.evaluate.run import evaluate_checkpoint

    result = evaluate_checkpoint(
        checkpoint, paths={"auto": None, "both": ("dense", "gated")}.get(paths, (paths,)), knn=knn, linear=linear,
        dataset=dataset, data_dir=data_dir, limit_train=limit_train, random_init=random_init, device=device,
        threads=threads, out_dir=out_dir, progress=not quiet,
    )
    click.echo(result["table"])
    if "channel_usage_table" in result:
        click.echo("\nChannel usage of the gated path on the test set (the paper's Figure 1):")
        click.echo(result["channel_usage_table"])
    _write_json(json_path, result)


@cli.command("export")
@click.argument("checkpoint", type=click.Path())
@click.option("--graph", "graphs", default="dense", show_default=True,
              help="dense, static, hybrid, dynamic, a comma list, or all.")
@click.option("--format", "formats", default="onnx", show_default=True,
              help="onnx, openvino, tensorrt, a comma list, or all (the formats available on this machine).")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Directory for the artifacts and manifests.")
@click.option("--calib", default=2000, show_default=True, help="Training images whose gate usage decides the static/hybrid channels.")
@click.option("--min-usage", default=0.0, show_default=True, help="Remove channels on for at most this fraction of calibration images.")
@click.option("--round-to", default=16, show_default=True, help="Round kept widths up to a multiple of this (1 disables).")
@click.option("--probe", type=click.Path(), help="A linear probe from `gatekit eval --linear`: the graph outputs logits.")
@click.option("--batch", default=1, show_default=True, help="Batch size of the exported graph.")
@click.option("--dynamic-batch", is_flag=True, help="A dynamic batch axis (verified at --batch and at 8).")
@click.option("--fp16", is_flag=True, help="FP16 weights (OpenVINO) or an FP16 engine (TensorRT).")
@click.option("--verify-images", default=64, show_default=True, help="Held-out real images for verification (at least 32).")
@click.option("--knn-train", default=10000, show_default=True, help="Training images used as k-NN memory for the static agreement check.")
@click.option("--record-inputs", default=1000, show_default=True, help="dynamic: record per-input MACs of the first N test images.")
@click.option("--data-dir", type=click.Path(), help="Default: the training one, then $GATEKIT_DATA.")
@click.option("--threads", type=int, help="Runtime threads during verification.")
@click.option("--json", "json_path", type=click.Path(), help="Write all manifests as JSON here.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def export_cmd(checkpoint, graphs, formats, out_dir, calib, min_usage, round_to, probe, batch, dynamic_batch, fp16,
               verify_images, knn_train, record_inputs, data_dir, threads, json_path, quiet):
    """Export a checkpoint's graphs, each verified in its runtime against PyTorch before it is written.

    \b
    Example:
      gatekit export runs/dual --graph static,hybrid --format onnx,openvino --out artifacts/dual
      gatekit export runs/dual --graph all --format all --out artifacts/dual --json artifacts/dual/export.json
    """
    from gatekit.export.exporter import FORMATS, ExportOptions, Prepared, export
    from gatekit.export.graphs import GRAPHS
    from gatekit.runtimes import available_formats

    graph_list = _choices(graphs, GRAPHS, "graph")
    format_list = available_formats() if formats == "all" else _choices(formats, FORMATS, "format")
    explicit = graphs != "all" and formats != "all"
    results, failures = [], []
    for graph in graph_list:
        opts = ExportOptions(graph=graph, calib=calib, min_usage=min_usage, round_to=round_to, probe=probe, batch=batch,
                             dynamic_batch=dynamic_batch, fp16=fp16, verify_images=verify_images, knn_train=knn_train,
                             record_inputs=record_inputs, data_dir=data_dir, threads=threads)
        prepared = Prepared(checkpoint, opts, progress=not quiet)
        for fmt in format_list:
            opts.fmt = fmt
            try:
                m = export(checkpoint, out_dir, opts, progress=not quiet, prepared=prepared)
            except GatekitError as e:
                if explicit:
                    raise
                failures.append({"graph": graph, "format": fmt, "error": str(e)})
                click.echo(f"{graph:8s} {fmt:9s} NOT EXPORTED: {e}", err=True)
                continue
            results.append(m)
            err = max(m["verification"]["relative_error"].values())
            click.echo(f"{graph:8s} {fmt:9s} widths {m['widths']}  MACs x{m['macs']['ratio_to_dense']:.3f}  "
                       f"max rel err {err:.2e}  -> {Path(out_dir) / next(iter(m['files'].values()))}")
            if "agreement" in m:
                a = m["agreement"]
                click.echo(f"{'':19s}k-NN k=20: static {100 * a['knn20_static']:.2f} vs gated {100 * a['knn20_gated']:.2f} "
                           f"({a['knn20_difference_points']:+.2f} points)")
                if not a["within_1_point"]:
                    closing = a.get("min_usage_that_closes_it")
                    click.echo(f"{'':19s}more than 1 point off: " + (f"--min-usage {closing} closes it" if closing is not None
                               else "no lower --min-usage closes it; ship the hybrid graph for the gated accuracy"))
    _write_json(json_path, {"artifacts": results, "not_exported": failures})


@cli.command("bench")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path())
@click.option("--runtime", "runtimes", default="auto", show_default=True,
              help="torch, ort, openvino, tensorrt, a comma list, or auto (each artifact's own runtime).")
@click.option("--threads", default="1,2", show_default=True, help="Thread counts, comma-separated.")
@click.option("--batch", default=1, show_default=True)
@click.option("--inputs", "n_inputs", default=256, show_default=True, help="Real test images cycled as inputs.")
@click.option("--data-dir", type=click.Path(), help="Default: $GATEKIT_DATA.")
@click.option("--warmup-runs", default=50, show_default=True)
@click.option("--warmup-seconds", default=0.2, show_default=True)
@click.option("--min-runs", default=1000, show_default=True, help="Stop after this many timed runs ...")
@click.option("--min-seconds", default=10.0, show_default=True, help="... or after this many seconds, whichever comes first.")
@click.option("--sweep", is_flag=True, help="ARTIFACTS are checkpoints: export every graph to every available format "
              "into --out, then benchmark them all.")
@click.option("--out", "out_dir", type=click.Path(), help="With --sweep: artifacts go to OUT/<checkpoint name>/.")
@click.option("--json", "json_path", type=click.Path(), help="Append the records (JSON lines, schema gatekit.bench/1) here.")
@click.option("--table", "table_path", type=click.Path(), help="Write the Markdown table here.")
@click.option("--plot", "plot_path", type=click.Path(), help="Write latency ratio against FLOPs ratio (PNG) here.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def bench_cmd(artifacts, runtimes, threads, batch, n_inputs, data_dir, warmup_runs, warmup_seconds, min_runs, min_seconds,
              sweep, out_dir, json_path, table_path, plot_path, quiet):
    """Measure latency of exported artifacts on this device, with one protocol for every runtime.

    Warm-up (>= 50 runs and >= 0.2 s), then >= 1,000 runs or >= 10 s; p50/p90/p99, mean, std, min and
    throughput; the headline is p90 at batch 1 (MLPerf SingleStream). Dynamic graphs also record
    per-input latency against per-input FLOPs.

    \b
    Examples:
      gatekit bench artifacts/dual/*.onnx artifacts/dual/*.xml --threads 1,2 \\
          --json bench.jsonl --table bench.md --plot bench.png
      gatekit bench --sweep runs/td0.1 runs/td0.3 runs/td0.5 --out artifacts --json sweep.jsonl
    """
    from gatekit.bench.protocol import Protocol
    from gatekit.bench.report import markdown_table, plot_latency_vs_flops, plot_per_input
    from gatekit.bench.run import write_jsonl
    from gatekit.bench.sweep import bench_manifests, export_all
    from gatekit.runtimes import get_backend
    from gatekit.sysinfo import machine_info

    try:
        thread_list = [int(t) for t in threads.split(",") if t.strip()]
    except ValueError:
        raise GatekitError(f"--threads takes integers, e.g. 1,2; got {threads!r}") from None
    wanted = None if runtimes == "auto" else [r.strip() for r in runtimes.split(",") if r.strip()]
    for r in wanted or []:
        get_backend(r)  # unknown or missing runtimes fail before any measurement
    protocol = Protocol(warmup_runs, warmup_seconds, min_runs, min_seconds)
    paths = list(artifacts)
    if sweep:
        if not out_dir:
            raise GatekitError("--sweep needs --out DIR for the exported artifacts")
        paths = []
        for ckpt in artifacts:
            name = Path(ckpt).stem if Path(ckpt).suffix else Path(ckpt).name
            paths += [m["manifest_path"] for m in export_all(ckpt, Path(out_dir) / name, data_dir=data_dir,
                                                             progress=not quiet, batch=batch)]
    records = bench_manifests(paths, thread_list, protocol, batch=batch, n_inputs=n_inputs, data_dir=data_dir,
                              runtimes=wanted, progress=not quiet)
    if not records:
        raise GatekitError("nothing to run: no artifact matches the runtimes asked for")
    if json_path:
        write_jsonl(json_path, records)
    table = markdown_table(records)
    click.echo("\n" + table)
    if table_path:
        from gatekit.atomic import write_text

        write_text(table_path, table + "\n")
    if plot_path:
        plot_latency_vs_flops(records, plot_path, title=machine_info()["cpu"])
        if any(r.get("per_input") for r in records):
            plot_per_input(records, Path(plot_path).with_name(Path(plot_path).stem + "-per-input.png"))


@cli.command("pick")
@click.option("--target-ms", required=True, type=float, help="The latency the device must meet.")
@click.option("--percentile", default=90, show_default=True, type=click.Choice(["50", "90", "99"]), help="Latency percentile.")
@click.option("--results", "results", required=True, multiple=True, type=click.Path(),
              help="Benchmark records (JSON lines from `gatekit bench --json`); repeatable.")
@click.option("--accuracy", "accuracy_files", multiple=True, type=click.Path(),
              help="`gatekit eval --json` outputs of the checkpoints; repeatable.")
@click.option("--metric", default="knn", show_default=True, type=click.Choice(["knn", "linear"]))
@click.option("--runtime", help="Only results of this runtime (ort, openvino, tensorrt, torch).")
@click.option("--threads", type=int, help="Only results at this thread count.")
@click.option("--batch", type=int, help="Only results at this batch size.")
@click.option("--plot", "plot_path", type=click.Path(), help="Accuracy against latency with the target (PNG).")
@click.option("--json", "json_path", type=click.Path(), help="Write the choice and the candidates as JSON here.")
def pick_cmd(target_ms, percentile, results, accuracy_files, metric, runtime, threads, batch, plot_path, json_path):
    """Pick the most accurate artifact whose measured latency meets a target on this device.

    Reads recorded benchmark results; exits with status 1 when nothing meets the target, naming the
    fastest option and the margin.

    \b
    Example:
      gatekit pick --target-ms 0.35 --results bench.jsonl --accuracy runs/dual/eval.json --threads 1
    """
    from gatekit.bench.run import read_jsonl
    from gatekit.pick.select import candidates, load_accuracies, pick, plot, table

    pct = int(percentile)
    cands = candidates(read_jsonl(results), load_accuracies(accuracy_files), metric=metric, percentile=pct,
                       runtime=runtime, threads=threads, batch=batch)
    chosen, reason = pick(cands, target_ms)
    click.echo(table(cands, chosen, target_ms, pct))
    if plot_path:
        plot(cands, chosen, target_ms, pct, plot_path)
    _write_json(json_path, {"target_ms": target_ms, "percentile": pct, "metric": metric, "reason": reason,
                            "chosen": chosen.to_dict() if chosen else None, "candidates": [c.to_dict() for c in cands]})
    if chosen is None:
        click.echo(f"gatekit: {reason}", err=True)
        sys.exit(1)
    click.echo(f"\nchosen: {reason}")


def _choices(value: str, allowed: tuple[str, ...], what: str) -> list[str]:
    if value == "all":
        return list(allowed)
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise GatekitError(f"unknown {what} {(bad[0] if bad else value)!r}: choose from {', '.join(allowed)} or all")
    return items


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit status 2, never a traceback."""
    try:
        rv = cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except GatekitError as e:
        click.echo(f"gatekit: error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
