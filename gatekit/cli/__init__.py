"""The `gatekit` command line. Heavy imports (torch) happen inside the commands that need them, so the
deploy-side commands start on a device that carries only numpy and its runtime."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click

from gatekit import __version__
from gatekit.clitypes import DEVICE, FRACTION, NON_NEGATIVE, POSITIVE, UNIT, WIDTH, FiniteFloatRange, IntList, count
from gatekit.errors import GatekitError
from gatekit.paths import check_outputs


def _write_json(path: str | None, data: dict) -> None:
    if path:
        from gatekit.atomic import write_json

        write_json(path, data)


def trust_edited_option(f):
    """--trust-edited: read artifacts whose files differ from their manifest (edited on purpose)."""
    return click.option(
        "--trust-edited",
        is_flag=True,
        help="Read artifacts whose files differ from the sha256 (or the names) in their manifest, "
        "e.g. edited on purpose; bench records say so. Default: refuse them.",
    )(f)


def _trust_edited(trust: bool) -> None:
    """Artifacts opened by this command are checked against their manifests unless --trust-edited."""
    from gatekit.artifacts import set_file_verification

    set_file_verification(not trust)
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(lambda: set_file_verification(True))


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
@click.option(
    "--recipe",
    help="Recipe name (cifar10, cifar100, stl10, imagenet100, cpu-small) or a .toml path; flags override it.",
)
@click.option("--dataset", help="cifar10, cifar100, stl10, imagenet100, imagefolder or npz.")
@click.option(
    "--data-dir",
    type=click.Path(),
    help="Directory with the data (default: $GATEKIT_DATA, then ~/.cache/gatekit/data).",
)
@click.option("--split", help="Training split (stl10's paper recipe uses 'unlabeled').")
@click.option("--limit", type=count(), help="Train on the first N images only.")
@click.option("--arch", help="resnet18 or resnet34.")
@click.option("--width", type=WIDTH, help="Width multiplier, e.g. 0.25 for CPU-scale runs.")
@click.option(
    "--stem",
    type=click.Choice(["cifar", "imagenet"]),
    help="Stem (default per dataset: cifar at 32 px, imagenet at 96/224 px).",
)
@click.option(
    "--input-size", type=count(8), help="Training crop size (default per dataset); smaller images are upscaled."
)
@click.option("--stem-padding", type=count(0), help="Stem conv padding (the paper's CIFAR stem uses 2).")
@click.option("--gate-group", type=count(), help="Channels per gate decision (1 = the paper).")
@click.option("--method", type=click.Choice(["vicreg-dual", "vicreg", "vicreg-gating"]), help="Training method.")
@click.option("--budget", type=FRACTION, help="t_d: target fraction of backbone FLOPs kept by the gated path.")
@click.option("--epochs", type=count(), help="Number of epochs.")
@click.option("--batch-size", type=count(2), help="Batch per process.")
@click.option("--lr", type=POSITIVE, help="Base learning rate per 256 images (scaled by global batch / 256).")
@click.option("--warmup-epochs", type=NON_NEGATIVE, help="Linear warm-up epochs.")
@click.option("--proj-dim", type=count(), help="Projector hidden and output width (2048 in the paper).")
@click.option("--seed", type=int, help="Random seed.")
@click.option("--device", type=DEVICE, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--threads", type=count(), help="CPU threads for torch.")
@click.option(
    "--init",
    "init",
    type=click.Path(),
    help="Fine-tune: start the encoder from this checkpoint (its architecture is "
    "used; a pruned checkpoint's removed channels stay removed).",
)
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Run directory for checkpoints and logs.")
@click.option("--resume", is_flag=True, help="Continue exactly from OUT/checkpoint.pt.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Start over in an OUT that holds another run (its model.safetensors, "
    "checkpoint.pt and metrics.jsonl are removed). Default: refuse such an OUT.",
)
@click.option("--json", "json_path", type=click.Path(), help="Write the training summary as JSON here.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(
    recipe,
    dataset,
    data_dir,
    split,
    limit,
    arch,
    width,
    stem,
    input_size,
    stem_padding,
    gate_group,
    method,
    budget,
    epochs,
    batch_size,
    lr,
    warmup_epochs,
    proj_dim,
    seed,
    device,
    threads,
    init,
    out_dir,
    resume,
    overwrite,
    json_path,
    quiet,
):
    """Train an encoder self-supervised (VICReg-Dual-Gating by default).

    \b
    Example (CPU, under a minute):
      gatekit train --dataset cifar10 --arch resnet18 --width 0.125 --budget 0.3 \\
          --epochs 1 --limit 2000 --out runs/tiny --json runs/tiny/summary.json
    Under torchrun, training runs in several processes with synchronised BN:
      torchrun --nproc-per-node 2 -m gatekit train --recipe cifar10 --out runs/c10
    """
    check_outputs(files={"--json": json_path}, dirs={"--out": out_dir})
    from gatekit.train.config import build_config
    from gatekit.train.trainer import check_run_dir
    from gatekit.train.trainer import train as run_training

    check_run_dir(out_dir, resume, overwrite)  # another run in --out: one line before any work

    overrides = dict(
        dataset=dataset,
        data_dir=data_dir,
        split=split,
        limit=limit,
        arch=arch,
        width=width,
        stem=stem,
        input_size=input_size,
        stem_padding=stem_padding,
        gate_group=gate_group,
        method=method,
        budget=budget,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        warmup_epochs=warmup_epochs,
        seed=seed,
        device=device,
        threads=threads,
        proj_hidden=proj_dim,
        proj_out=proj_dim,
        init=init,
    )
    if init:  # the architecture is the checkpoint's
        from gatekit.checkpoint import load_model

        arch_of_init = load_model(init)[0].cfg
        for k in ("arch", "width", "stem", "stem_padding", "input_size", "gate_group"):
            if overrides[k] is None:
                overrides[k] = getattr(arch_of_init, k)
    if resume and recipe is None and Path(out_dir, "checkpoint.pt").is_file():
        cfg = _resume_config(out_dir, overrides)
    else:
        cfg = build_config(recipe, overrides)
    result = run_training(cfg, out_dir, resume=resume, overwrite=overwrite, progress=not quiet)
    summary = dict(result.summary, config=cfg.to_dict())
    if _is_main_process():
        click.echo(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
        _write_json(json_path, summary)


def _resume_config(out_dir: str, overrides: dict):
    from gatekit.checkpoint import load_state
    from gatekit.train.config import TrainConfig

    path = Path(out_dir) / "checkpoint.pt"
    state = load_state(path)
    try:
        saved = json.loads(state["config"])
    except (KeyError, TypeError, IndexError, json.JSONDecodeError):
        saved = None
    if not isinstance(saved, dict):
        raise GatekitError(f"corrupt training state {path}: no readable 'config' (not a gatekit checkpoint.pt?)")
    if overrides.get("epochs"):
        saved["epochs"] = overrides["epochs"]
    try:
        return TrainConfig.from_dict(saved)
    except GatekitError as e:
        raise GatekitError(f"training state {path}: {e}") from None


def _is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


@cli.command("eval")
@click.argument("checkpoint", type=click.Path())
@click.option(
    "--path",
    "paths",
    type=click.Choice(["auto", "dense", "gated", "both"]),
    default="auto",
    show_default=True,
    help="auto: the paths the method trained (vicreg: dense; vicreg-gating: gated; vicreg-dual: both).",
)
@click.option(
    "--knn/--no-knn",
    default=True,
    show_default=True,
    help="k-NN top-1: k=20 cosine-weighted and k=1 Euclidean (the paper's).",
)
@click.option(
    "--linear", is_flag=True, help="Also train a linear probe on frozen features (saved beside the checkpoint)."
)
@click.option("--dataset", help="Evaluate on this dataset instead of the training one.")
@click.option(
    "--data-dir",
    type=click.Path(),
    help="Directory with the data (default: the training one, then $GATEKIT_DATA, then ~/.cache/gatekit/data).",
)
@click.option(
    "--limit-train", type=count(), help="Use only the first N training images as the k-NN memory / probe set."
)
@click.option(
    "--random-init", is_flag=True, help="Evaluate the same architecture at random initialisation (a baseline)."
)
@click.option("--device", default="auto", show_default=True, type=DEVICE, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--threads", type=count(), help="CPU threads for torch.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(),
    help="Where the probe and channel-usage PNG go (default: the checkpoint's directory).",
)
@click.option("--json", "json_path", type=click.Path(), help="Write the results as JSON here.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def eval_cmd(
    checkpoint,
    paths,
    knn,
    linear,
    dataset,
    data_dir,
    limit_train,
    random_init,
    device,
    threads,
    out_dir,
    json_path,
    quiet,
):
    """Evaluate a checkpoint on its dense and gated paths: k-NN, linear probe, FLOPs and channel usage.

    \b
    Example:
      gatekit eval runs/dual --knn --linear --json runs/dual/eval.json
    """
    check_outputs(files={"--json": json_path}, dirs={"--out": out_dir})
    from gatekit.evaluate.run import evaluate_checkpoint

    result = evaluate_checkpoint(
        checkpoint,
        paths={"auto": None, "both": ("dense", "gated")}.get(paths, (paths,)),
        knn=knn,
        linear=linear,
        dataset=dataset,
        data_dir=data_dir,
        limit_train=limit_train,
        random_init=random_init,
        device=device,
        threads=threads,
        out_dir=out_dir,
        progress=not quiet,
    )
    click.echo(result["table"])
    if "channel_usage_table" in result:
        click.echo("\nChannel usage of the gated path on the test set (the paper's Figure 1):")
        click.echo(result["channel_usage_table"])
    _write_json(json_path, result)


@cli.command("export")
@click.argument("checkpoint", type=click.Path())
@click.option(
    "--graph",
    "graphs",
    default="dense",
    show_default=True,
    help="dense, static, hybrid, dynamic, a comma list, or all.",
)
@click.option(
    "--format",
    "formats",
    default="onnx",
    show_default=True,
    help="onnx, openvino, tensorrt, a comma list, or all (the formats available on this machine).",
)
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Directory for the artifacts and manifests.")
@click.option(
    "--calib",
    default=2000,
    show_default=True,
    type=count(),
    help="Training images whose gate usage decides the static/hybrid channels.",
)
@click.option(
    "--min-usage",
    default=0.0,
    show_default=True,
    type=UNIT,
    help="Remove channels on for at most this fraction of calibration images.",
)
@click.option(
    "--round-to",
    default=16,
    show_default=True,
    type=count(),
    help="Round kept widths up to a multiple of this (1 disables).",
)
@click.option(
    "--probe", type=click.Path(), help="A linear probe from `gatekit eval --linear`: the graph outputs logits."
)
@click.option("--batch", default=1, show_default=True, type=count(), help="Batch size of the exported graph.")
@click.option("--dynamic-batch", is_flag=True, help="A dynamic batch axis (verified at --batch and at 8).")
@click.option(
    "--precision",
    "precisions",
    default="fp32",
    show_default=True,
    help="fp32, fp16, bf16, int8 or a comma list. int8: post-training quantization calibrated on real training "
    "images (ONNX Runtime QDQ; NNCF for OpenVINO; dynamic graphs: gatekit's int8 ops, or Q/DQ standard "
    "ops, for ONNX and OpenVINO); fp16 and bf16: OpenVINO's inference precision (fp16 "
    "also compresses the IR's weights) or a TensorRT fp16 engine. Reduced precisions are verified by "
    "feature cosine and k-NN against fp32 and refused past --min-cosine / --max-knn-drop.",
)
@click.option("--fp16", is_flag=True, help="The same as --precision fp16.")
@click.option(
    "--quant-calib",
    default=300,
    show_default=True,
    type=click.IntRange(min=1),
    help="int8: training images (the first of the calibration set) that calibrate the quantizer.",
)
@click.option(
    "--quant-exclude",
    default="",
    help="int8: parts kept in float, comma list of stem, last, head, blockN "
    "(an int8 dynamic graph keeps its stem, gates and head in float always).",
)
@click.option(
    "--knn-test",
    default=10000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Reduced precision: test images of the k-NN check (memory: --knn-train training images).",
)
@click.option(
    "--min-cosine",
    default=0.99,
    show_default=True,
    type=UNIT,
    help="Reduced precision: refuse when the mean feature cosine to fp32 is below this.",
)
@click.option(
    "--max-knn-drop",
    default=1.0,
    show_default=True,
    type=NON_NEGATIVE,
    help="Reduced precision: refuse when k-NN top-1 is this many points below fp32.",
)
@click.option(
    "--verify-images",
    default=64,
    show_default=True,
    type=count(32),
    help="Held-out real images for verification (at least 32).",
)
@click.option(
    "--knn-train",
    default=10000,
    show_default=True,
    type=count(),
    help="Training images used as k-NN memory for the static agreement check.",
)
@click.option(
    "--record-inputs",
    default=1000,
    show_default=True,
    type=count(0),
    help="dynamic: record per-input MACs of the first N test images.",
)
@click.option(
    "--dynamic-form",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "native", "conv", "matmul", "qdq"]),
    help="dynamic: native = one gatekit custom op per block (its form: --native-gate; run by the op library that "
    "`gatekit ops build` builds; a standard-ops fallback is written beside it); conv (NonZero + Gather + "
    "Conv) or matmul (im2col + MatMul, for OpenVINO) in standard ops; qdq (int8: Q/DQ around whole "
    "convs, the mask a Mul) in standard ops; auto = native where its library is built for the format's "
    "runtime (with the int8 ops for --precision int8).",
)
@click.option(
    "--native-gate",
    default="op",
    show_default=True,
    type=click.Choice(["op", "graph"]),
    help="dynamic, native form: each block's gate inside its node (op: gatekit.GatedBlockWithGate) or in "
    "standard ops that feed gatekit.GatedBlock its mask (graph: the earlier form).",
)
@click.option(
    "--native-shortcut",
    default="op",
    show_default=True,
    type=click.Choice(["op", "graph"]),
    help="dynamic, native form with --native-gate op: each projection shortcut (1x1 conv) inside its block's "
    "node (op: gatekit.GatedBlockWithGateAndShortcut) or a Conv node before it (graph: the earlier form).",
)
@click.option(
    "--dynamic-min-size",
    type=click.IntRange(min=0),
    help="dynamic: only blocks whose output is at least this many pixels a side skip channels; the others "
    "run whole convs and zero the inactive channels (0: every block skips, the paper's form). "
    "Default: 0 for the native form, 8 for the standard-ops forms.",
)
@click.option(
    "--data-dir", type=click.Path(), help="Default: the training one, then $GATEKIT_DATA, then ~/.cache/gatekit/data."
)
@click.option("--threads", type=count(), help="Runtime threads during verification.")
@click.option("--json", "json_path", type=click.Path(), help="Write all manifests as JSON here.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def export_cmd(
    checkpoint,
    graphs,
    formats,
    out_dir,
    calib,
    min_usage,
    round_to,
    probe,
    batch,
    dynamic_batch,
    precisions,
    fp16,
    quant_calib,
    quant_exclude,
    knn_test,
    min_cosine,
    max_knn_drop,
    verify_images,
    knn_train,
    record_inputs,
    dynamic_form,
    native_gate,
    native_shortcut,
    dynamic_min_size,
    data_dir,
    threads,
    json_path,
    quiet,
):
    """Export a checkpoint's graphs, each verified in its runtime against PyTorch before it is written.

    \b
    Example:
      gatekit export runs/dual --graph static,hybrid --format onnx,openvino --out artifacts/dual
      gatekit export runs/dual --graph all --format all --out artifacts/dual --json artifacts/dual/export.json
    """
    check_outputs(files={"--json": json_path}, dirs={"--out": out_dir})
    from gatekit.artifacts import FORMATS
    from gatekit.export.exporter import PRECISIONS
    from gatekit.export.graphs import GRAPHS
    from gatekit.export.sweep import export_all
    from gatekit.runtimes import available_formats

    graph_list = _choices(graphs, GRAPHS, "graph")
    format_list = available_formats() if formats == "all" else _choices(formats, tuple(FORMATS), "format")
    precision_list = ["fp16"] if fp16 else _choices(precisions, PRECISIONS, "precision")
    explicit = graphs != "all" and formats != "all" and len(precision_list) == 1

    def show(m):
        v = m["verification"]
        check = (
            f"max rel err {max(v['relative_error'].values()):.2e}"
            if m["precision"] == "fp32"
            else f"cosine to fp32 {v['cosine_to_fp32']['mean']:.4f}, k-NN {v['knn_delta_points']:+.2f} points"
        )
        if "gate_agreement" in v:
            check += f", gate decisions {100 * v['gate_agreement']['decisions']:.2f}% as fp32"
        click.echo(
            f"{m['graph']:8s} {m['format']:9s} {m['precision']:5s} widths {m['widths']}  MACs "
            f"x{m['macs']['ratio_to_dense']:.3f}  {check}  -> {Path(out_dir) / next(iter(m['files'].values()))}"
        )
        if "agreement" in m:
            a = m["agreement"]
            click.echo(
                f"{'':19s}k-NN k=20: static {100 * a['knn20_static']:.2f} vs gated {100 * a['knn20_gated']:.2f} "
                f"({a['knn20_difference_points']:+.2f} points)"
            )
            if not a["within_1_point"]:
                closing = a.get("min_usage_that_closes_it")
                click.echo(
                    f"{'':19s}more than 1 point off: "
                    + (
                        f"--min-usage {closing} closes it"
                        if closing is not None
                        else "no lower --min-usage closes it; ship the hybrid graph for the gated accuracy"
                    )
                )

    results, failures = export_all(
        checkpoint,
        out_dir,
        graphs=graph_list,
        formats=format_list,
        precisions=precision_list,
        strict=explicit,
        on_result=show,
        quant_calib=quant_calib,
        quant_exclude=tuple(x.strip() for x in quant_exclude.split(",") if x.strip()),
        knn_test=knn_test,
        min_cosine=min_cosine,
        max_knn_drop=max_knn_drop,
        on_failure=lambda g, f, e: click.echo(f"{g:8s} {f:9s} NOT EXPORTED: {e}", err=True),
        progress=not quiet,
        calib=calib,
        min_usage=min_usage,
        round_to=round_to,
        probe=probe,
        batch=batch,
        dynamic_batch=dynamic_batch,
        verify_images=verify_images,
        knn_train=knn_train,
        record_inputs=record_inputs,
        dynamic_form=dynamic_form,
        native_gate=native_gate,
        native_shortcut=native_shortcut,
        dynamic_min_size=dynamic_min_size,
        data_dir=data_dir,
        threads=threads,
    )
    for m in results:
        m.pop("manifest_path", None)
    _write_json(json_path, {"artifacts": results, "not_exported": failures})


@cli.command("bench")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path())
@click.option(
    "--runtime",
    "runtimes",
    default="auto",
    show_default=True,
    help="torch, ort, openvino, tensorrt, a comma list, or auto (each artifact's own runtime).",
)
@click.option("--threads", default="1,2", show_default=True, type=IntList(1), help="Thread counts, comma-separated.")
@click.option("--batch", default=1, show_default=True, type=count())
@click.option(
    "--inputs", "n_inputs", default=256, show_default=True, type=count(), help="Real test images cycled as inputs."
)
@click.option("--data-dir", type=click.Path(), help="Default: $GATEKIT_DATA, then ~/.cache/gatekit/data.")
@click.option("--warmup-runs", default=50, show_default=True, type=count(0))
@click.option("--warmup-seconds", default=0.2, show_default=True, type=NON_NEGATIVE)
@click.option("--min-runs", default=1000, show_default=True, type=count(), help="Stop after this many timed runs ...")
@click.option(
    "--min-seconds",
    default=10.0,
    show_default=True,
    type=NON_NEGATIVE,
    help="... or after this many seconds, whichever comes first.",
)
@click.option(
    "--ops",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "native", "fallback"]),
    help="Graphs with native custom ops: run them on the op library (native), on their standard-ops "
    "fallback, or on the library where it is built (auto). Records say which ran.",
)
@click.option(
    "--sweep",
    is_flag=True,
    help="ARTIFACTS are checkpoints: export every graph to every available format into --out, then benchmark them all.",
)
@click.option("--out", "out_dir", type=click.Path(), help="With --sweep: artifacts go to OUT/<checkpoint name>/.")
@click.option(
    "--json", "json_path", type=click.Path(), help="Append the records (JSON lines, schema gatekit.bench/1) here."
)
@click.option(
    "--table",
    "table_path",
    type=click.Path(),
    help="Write the Markdown table here (a row per network and "
    "graph; latency ratios to the same network's dense graph, which needs the dense graph benchmarked too).",
)
@click.option("--plot", "plot_path", type=click.Path(), help="Write latency ratio against FLOPs ratio (PNG) here.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@trust_edited_option
def bench_cmd(
    artifacts,
    runtimes,
    threads,
    batch,
    n_inputs,
    data_dir,
    warmup_runs,
    warmup_seconds,
    min_runs,
    min_seconds,
    ops,
    sweep,
    out_dir,
    json_path,
    table_path,
    plot_path,
    quiet,
    trust_edited,
):
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
    check_outputs(
        files={"--json": json_path, "--table": table_path, "--plot": plot_path},
        dirs={"--out": out_dir if sweep else None},
    )
    _trust_edited(trust_edited)
    from gatekit.bench.protocol import Protocol
    from gatekit.bench.run import write_jsonl
    from gatekit.bench.sweep import bench_manifests
    from gatekit.bench.tables import markdown_table, plot_latency_vs_flops, plot_per_input
    from gatekit.runtimes import get_backend
    from gatekit.sysinfo import machine_info

    thread_list = list(threads)  # IntList: integers >= 1
    wanted = None if runtimes == "auto" else [r.strip() for r in runtimes.split(",") if r.strip()]
    for r in wanted or []:
        get_backend(r)  # unknown or missing runtimes fail before any measurement
    protocol = Protocol(warmup_runs, warmup_seconds, min_runs, min_seconds)
    paths = list(artifacts)
    if sweep:
        if not out_dir:
            raise GatekitError("--sweep needs --out DIR for the exported artifacts")
        from gatekit.export.sweep import export_all

        paths = []
        for ckpt in artifacts:
            name = Path(ckpt).stem if Path(ckpt).suffix else Path(ckpt).name
            manifests, _ = export_all(
                ckpt,
                Path(out_dir) / name,
                data_dir=data_dir,
                progress=not quiet,
                batch=batch,
                on_result=_echo_exported(ckpt),
                on_failure=_echo_refused(ckpt),
            )
            paths += [m["manifest_path"] for m in manifests]
    records = bench_manifests(
        paths,
        thread_list,
        protocol,
        batch=batch,
        n_inputs=n_inputs,
        data_dir=data_dir,
        runtimes=wanted,
        progress=not quiet,
        ops=ops,
    )
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


def _echo_exported(checkpoint):
    def echo(m):
        err = max(m["verification"]["relative_error"].values())
        click.echo(
            f"  {Path(checkpoint).name} t_d={m['budget']} {m['graph']:8s} {m['format']:9s} "
            f"MACs x{m['macs']['ratio_to_dense']:.3f}  max rel err {err:.1e}"
        )

    return echo


def _echo_refused(checkpoint):
    return lambda graph, fmt, e: click.echo(
        f"  {Path(checkpoint).name} {graph:8s} {fmt:9s} NOT EXPORTED: {e}", err=True
    )


@cli.command("report")
@click.argument("results", nargs=-1, required=True, type=click.Path())
@click.option("--out", "out_path", required=True, type=click.Path(), help="The Markdown page.")
@click.option("--html", "html_path", type=click.Path(), help="Also write the page as HTML here.")
@click.option("--plots-dir", type=click.Path(), help="Where the PNGs go (default: beside --out, in OUT-plots/).")
@click.option(
    "--json", "json_path", type=click.Path(), help="Write the targets, their tables and plot paths as JSON here."
)
@trust_edited_option
def report_cmd(results, out_path, html_path, plots_dir, json_path, trust_edited):
    """Merge benchmark results from several devices into one page: a section per target.

    A target is the machine a record was measured on (CPU model and cores, GPU, Jetson board and power
    mode). Each has the table of `gatekit bench` (a row per network and graph, a network being one checkpoint
    of one architecture, width, input size and gate group; FLOPs ratio; p50 / p90 and the latency ratio to
    that network's own dense graph per runtime, precision, threads and batch) and a PNG of latency ratio
    against FLOPs ratio, a marker per network. A record whose network has no dense graph measured shows
    its latency without a ratio, and the page says why.

    \b
    Example:
      gatekit report benchmarks/bench_cpu/*.jsonl jetson-orin.jsonl h100.jsonl \\
          --out report/edge.md --html report/edge.html --json report/edge.json
    """
    check_outputs(files={"--out": out_path, "--html": html_path, "--json": json_path}, dirs={"--plots-dir": plots_dir})
    from gatekit.bench.report import build_report

    summary = build_report(list(results), out_path, plots_dir=plots_dir, html_path=html_path, trust_edited=trust_edited)
    for t in summary["targets"]:
        click.echo(f"{t['records']:4d} records  {t['target']}  -> {t['plot']}")
    click.echo(f"page: {summary['page']}" + (f"  html: {summary['html']}" if summary["html"] else ""))
    _write_json(json_path, summary)


@cli.command("pick")
@click.option("--target-ms", required=True, type=POSITIVE, help="The latency the device must meet.")
@click.option(
    "--percentile", default=90, show_default=True, type=click.Choice(["50", "90", "99"]), help="Latency percentile."
)
@click.option(
    "--results",
    "results",
    multiple=True,
    type=click.Path(),
    help="Benchmark records (JSON lines from `gatekit bench --json`); repeatable.",
)
@click.option(
    "--accuracy",
    "accuracy_files",
    multiple=True,
    type=click.Path(),
    help="`gatekit eval --json` outputs of the checkpoints; repeatable.",
)
@click.option("--metric", default="knn", show_default=True, type=click.Choice(["knn", "linear"]))
@click.option("--runtime", help="Only results of this runtime (ort, openvino, tensorrt, torch).")
@click.option("--threads", type=count(), help="Only results at this thread count.")
@click.option("--batch", type=count(), help="Only results at this batch size.")
@click.option(
    "--lut",
    "lut_path",
    type=click.Path(),
    help="A device LUT (`gatekit profile`): plan static widths for --checkpoint.",
)
@click.option(
    "--checkpoint", type=click.Path(), help="With --lut: the checkpoint whose channel-usage ranking gives the widths."
)
@click.option(
    "--usage",
    "usage_manifest",
    type=click.Path(),
    help="With --lut: an export manifest of the checkpoint (static, hybrid or dynamic) whose recorded gate "
    "usage ranks the channels: plans without torch and without a calibration pass.",
)
@click.option(
    "--export-to",
    type=click.Path(),
    help="With --lut: export the planned static graph here and measure it "
    "(needs the training side); without it, only the plan is printed.",
)
@click.option(
    "--margin",
    default=0.05,
    show_default=True,
    type=FiniteFloatRange(0, 1, max_open=True),
    help="With --lut: plan for the target less this fraction (predictor error).",
)
@click.option(
    "--accuracy-check/--no-accuracy-check",
    default=True,
    show_default=True,
    help="With --lut: measure the planned static graph's k-NN beside the gated path (minutes at full width).",
)
@click.option(
    "--data-dir",
    type=click.Path(),
    help="With --lut: default: the checkpoint's, then $GATEKIT_DATA, then ~/.cache/gatekit/data.",
)
@click.option("--plot", "plot_path", type=click.Path(), help="Accuracy against latency with the target (PNG).")
@click.option("--json", "json_path", type=click.Path(), help="Write the choice and the candidates as JSON here.")
@trust_edited_option
def pick_cmd(
    target_ms,
    percentile,
    results,
    accuracy_files,
    metric,
    runtime,
    threads,
    batch,
    lut_path,
    checkpoint,
    usage_manifest,
    export_to,
    margin,
    accuracy_check,
    data_dir,
    plot_path,
    json_path,
    trust_edited,
):
    """Pick the most accurate option whose latency meets a target on this device.

    With --results: the most accurate recorded artifact whose measured latency meets the target. It
    exits with status 1 when nothing does, naming the fastest option and the margin.

    With --lut: static widths for a budget never exported. The checkpoint's channel usage (recorded in
    an export manifest, --usage, or measured from --checkpoint) ranks the channels; the smallest
    --min-usage whose *predicted* latency meets the target is planned. With --export-to it is exported
    (verified like every export), then *measured*; exit 1 if the measurement misses.

    \b
    Examples:
      gatekit pick --target-ms 0.35 --results bench.jsonl --accuracy runs/dual/eval.json --threads 1
      gatekit pick --target-ms 0.30 --lut lut-ort-1t.json --usage artifacts/dual/static.onnx.json
      gatekit pick --target-ms 0.30 --lut lut-ort-1t.json --checkpoint runs/dual --export-to artifacts/pick
    """
    check_outputs(files={"--plot": plot_path, "--json": json_path}, dirs={"--export-to": export_to})
    _trust_edited(trust_edited)
    pct = int(percentile)
    if lut_path:
        return _pick_with_lut(
            target_ms,
            pct,
            lut_path,
            checkpoint,
            usage_manifest,
            export_to,
            margin,
            accuracy_check,
            data_dir,
            plot_path,
            json_path,
        )
    if not results:
        raise GatekitError("pick needs --results BENCH.jsonl (recorded results) or --lut LUT.json with --checkpoint")
    from gatekit.bench.run import read_jsonl
    from gatekit.pick.select import RECORD_FIELDS, candidates, fallback_note, load_accuracies, pick, plot, table

    cands = candidates(
        read_jsonl(results, RECORD_FIELDS, edited_ok=trust_edited),
        load_accuracies(accuracy_files),
        metric=metric,
        percentile=pct,
        runtime=runtime,
        threads=threads,
        batch=batch,
    )
    note = fallback_note(cands)
    if note:
        click.echo(note, err=True)
    chosen, reason = pick(cands, target_ms)
    click.echo(table(cands, chosen, target_ms, pct))
    if plot_path:
        plot(cands, chosen, target_ms, pct, plot_path)
    _write_json(
        json_path,
        {
            "target_ms": target_ms,
            "percentile": pct,
            "metric": metric,
            "reason": reason,
            "chosen": chosen.to_dict() if chosen else None,
            "candidates": [c.to_dict() for c in cands],
        },
    )
    if chosen is None:
        click.echo(f"gatekit: {reason}", err=True)
        sys.exit(1)
    click.echo(f"\nchosen: {reason}")


def _pick_with_lut(
    target_ms,
    pct,
    lut_path,
    checkpoint,
    usage_manifest,
    export_to,
    margin,
    accuracy_check,
    data_dir,
    plot_path,
    json_path,
):
    from gatekit.pick.plan import plan_from_manifest, plot_plan
    from gatekit.pick.profile import load_lut

    if not checkpoint and not usage_manifest:
        raise GatekitError(
            "--lut needs --usage MANIFEST (an export manifest) or --checkpoint CKPT with --export-to DIR"
        )
    if not usage_manifest and not export_to:
        raise GatekitError(
            "--lut with --checkpoint needs --export-to DIR (or plan from --usage MANIFEST without torch)"
        )
    lut = load_lut(lut_path)
    key = f"p{pct}_ms"
    if not export_to:  # plan only: torch-free
        out = plan_from_manifest(lut, usage_manifest, target_ms, percentile=pct, margin=margin)
        c = out["chosen"]
        click.echo(
            f"planned static widths {c['widths']} (--min-usage {c['min_usage']:.4f}): predicted p{pct} "
            f"{c['predicted_' + key]:.3f} ms (LUT {lut['runtime']['name']} {lut['threads']}T), target {target_ms:g} ms\n"
            f"export it with: gatekit export {out['checkpoint']} --graph static --format {out['format']} "
            f"--min-usage {c['min_usage']:.6g} --round-to {lut['round_to']} --out DIR"
        )
        _write_json(json_path, out)
        if plot_path:
            plot_plan(out, lut, plot_path)
        return
    from gatekit.chains import plan_export_measure

    out = plan_export_measure(
        lut,
        target_ms,
        export_to,
        checkpoint=checkpoint,
        usage_manifest=usage_manifest,
        percentile=pct,
        margin=margin,
        data_dir=data_dir,
        accuracy=accuracy_check,
    )
    c = out["chosen"]
    click.echo(
        f"planned static widths {c['widths']} (--min-usage {c['min_usage']:.4f}, MACs x{out['macs_ratio']:.3f}): "
        f"predicted p{pct} {c['predicted_' + key]:.3f} ms (LUT {lut['runtime']['name']} {lut['threads']}T)"
    )
    agreement = out.get("agreement") or {}
    if "knn20_static" in agreement:
        click.echo(
            f"k-NN20 of the static graph {100 * agreement['knn20_static']:.2f}% "
            f"(gated path {100 * agreement['knn20_gated']:.2f}%)"
        )
    verdict = "meets" if out["meets_target"] else "MISSES"
    click.echo(
        f"measured p{pct} {out['measured'][key]:.3f} ms ({out['measured']['runs']} runs): {verdict} the target "
        f"{target_ms:g} ms; prediction error {100 * out['prediction_error']:+.1f}%\nartifact: {out['artifact']}"
    )
    _write_json(json_path, out)
    if plot_path:
        plot_plan(out, lut, plot_path)
    if not out["meets_target"]:
        sys.exit(1)


@cli.command("engine")
@click.argument("artifact", type=click.Path())
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Where the engine and its manifest go.")
@click.option(
    "--precision",
    default="fp32",
    show_default=True,
    type=click.Choice(["fp32", "fp16", "int8"]),
    help="int8: from an int8 (QDQ) ONNX artifact, with the scales it was calibrated with.",
)
@click.option(
    "--data-dir",
    type=click.Path(),
    help="Real images for the check (default: the manifest's, then $GATEKIT_DATA, then ~/.cache/gatekit/data).",
)
@click.option("--json", "json_path", type=click.Path(), help="Write the engine's manifest as JSON here too.")
@trust_edited_option
def engine_cmd(artifact, out_dir, precision, data_dir, json_path, trust_edited):
    """Build a TensorRT engine on this device from an exported ONNX artifact (no torch needed).

    Engines are tied to their GPU and TensorRT version, so build them where they run (a Jetson, say)
    from the ONNX artifacts that `gatekit export` wrote and verified elsewhere. The engine is checked
    against ONNX Runtime on the same real images before it is written.

    \b
    Example (on the Jetson):
      gatekit engine artifacts/td0.3/static.onnx.json --precision fp16 --out artifacts/td0.3-trt
    """
    check_outputs(files={"--json": json_path}, dirs={"--out": out_dir})
    _trust_edited(trust_edited)
    from gatekit.runtimes.tensorrt_build import engine_from_artifact

    m = engine_from_artifact(artifact, out_dir, precision=precision, data_dir=data_dir)
    err = m["verification"]["relative_error"]
    click.echo(
        f"{Path(out_dir) / m['files']['engine']}: {m['graph']} t_d={m.get('budget')} {precision}, "
        f"relative error against ONNX Runtime {max(err.values()):.1e}"
    )
    _write_json(json_path, m)


@cli.group("ops")
def ops_group() -> None:
    """gatekit's native custom ops (the fused gated blocks of dynamic graphs) for ONNX Runtime and OpenVINO.

    \b
    Example:
      gatekit ops build     # CMake + a C++17 compiler; cached per runtime version and CPU
      gatekit ops status    # what was built, where, for which runtime versions, and why not
    """


@ops_group.command("build")
@click.option("--force", is_flag=True, help="Rebuild even when a current build exists.")
@click.option("--jobs", default=2, show_default=True, type=click.IntRange(min=1), help="Parallel compile jobs.")
@click.option("--verbose", is_flag=True, help="Show CMake's and the compiler's output.")
@click.option("--json", "json_path", type=click.Path(), help="Write the build record as JSON here.")
def ops_build(force, jobs, verbose, json_path):
    """Build the op libraries for the installed runtimes (exit 1 when nothing could be built)."""
    check_outputs(files={"--json": json_path})
    from gatekit import native_ops

    info = native_ops.build(force=force, jobs=jobs, verbose=verbose)
    _write_json(json_path, info)
    if info.get("status") != "ok" and not info.get("libraries"):  # nothing compiled: a tool or the sources missing
        click.echo(
            f"gatekit: error: cannot build the native ops: {info.get('reason')}; dynamic graphs run their "
            "standard-ops fallback meanwhile",
            err=True,
        )
        sys.exit(1)
    click.echo(native_ops._summary_build(info))
    if info.get("status") != "ok":
        sys.exit(1)


@ops_group.command("status")
@click.option("--json", "json_path", type=click.Path(), help="Write the status as JSON here.")
def ops_status(json_path):
    """What is built, where, and whether it fits the installed runtimes."""
    check_outputs(files={"--json": json_path})
    from gatekit import native_ops

    st = native_ops.status()
    click.echo(native_ops._summary_status(st))
    _write_json(json_path, st)


@cli.command("profile")
@click.option("--runtime", default="ort", show_default=True, help="ort, openvino or tensorrt.")
@click.option("--arch", default="resnet18", show_default=True, type=click.Choice(["resnet18", "resnet34"]))
@click.option(
    "--width", default=1.0, show_default=True, type=WIDTH, help="Width multiplier of the checkpoints it will predict."
)
@click.option(
    "--input",
    "input_size",
    default=32,
    show_default=True,
    type=count(8),
    help="Input size: 32 (CIFAR stem), 96 (STL-10 stem), 224.",
)
@click.option("--stem", type=click.Choice(["cifar", "imagenet"]), help="Default: cifar at 32 px, imagenet otherwise.")
@click.option("--stem-padding", type=count(0), help="Default: 2 for the cifar stem (the paper's), 3 for imagenet.")
@click.option(
    "--threads", default=1, show_default=True, type=count(), help="Runtime threads (one LUT per thread count)."
)
@click.option(
    "--round-to", default=16, show_default=True, type=count(), help="Width step of the table (export's --round-to)."
)
@click.option(
    "--precision",
    default="fp32",
    show_default=True,
    type=click.Choice(["fp32", "fp16", "bf16", "int8"]),
    help="int8: every graph quantized as `gatekit export --precision int8` does (ORT QDQ; NNCF for OpenVINO; "
    "with --native, gatekit's int8 op, as int8 dynamic graphs run it).",
)
@click.option("--device", help="Runtime device (OpenVINO: CPU or GPU; default CPU / the first GPU).")
@click.option(
    "--check",
    default=20,
    show_default=True,
    type=count(0),
    help="Held-out random width configurations to predict and measure.",
)
@click.option(
    "--native/--no-native",
    default=None,
    help="Also time the native gated-block op (gate inside; --precision int8: the int8 op) at active widths, "
    "so the LUT predicts native dynamic graphs of that precision per input (default: when `gatekit ops "
    "build` has built its library, with the int8 ops for int8, for the runtime).",
)
@click.option(
    "--native-masks",
    default=2,
    show_default=True,
    type=count(),
    help="Random channel sets of each active width that the native op's timings rotate through, one per input (the "
    "weights a deployed dynamic graph reads change call to call); 1: one fixed set.",
)
@click.option(
    "--dataset", default="cifar10", show_default=True, help="Real test images for whole networks (resized to --input)."
)
@click.option("--data-dir", type=click.Path(), help="Default: $GATEKIT_DATA, then ~/.cache/gatekit/data.")
@click.option(
    "--min-runs",
    default=400,
    show_default=True,
    type=count(),
    help="Table entries: stop after this many timed runs ...",
)
@click.option(
    "--min-seconds",
    default=1.5,
    show_default=True,
    type=NON_NEGATIVE,
    help="... or after this many seconds, whichever comes first.",
)
@click.option("--seed", default=0, show_default=True, type=count(0))
@click.option("--out", "out_path", required=True, type=click.Path(), help="Where the LUT (JSON) goes.")
@click.option(
    "--plot", "plot_path", type=click.Path(), help="Predicted against measured latency of the held-out networks (PNG)."
)
@click.option(
    "--json", "json_path", type=click.Path(), help="Write a summary (validation shares, timings) as JSON here."
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def profile_cmd(
    runtime,
    arch,
    width,
    input_size,
    stem,
    stem_padding,
    threads,
    round_to,
    precision,
    device,
    check,
    native,
    native_masks,
    dataset,
    data_dir,
    min_runs,
    min_seconds,
    seed,
    out_path,
    plot_path,
    json_path,
    quiet,
):
    """Build this device's latency table (LUT) of a gated ResNet, and check its predictions.

    Times the stem, the head and every block at every inner width (steps of --round-to) with the
    protocol of `gatekit bench`, calibrates the sum against whole networks, then predicts --check
    held-out width configurations and measures them (share within +-10% of p50 and p90). Minutes,
    not hours; torch is not needed.

    \b
    Example (ResNet-18 at 32 px, ONNX Runtime, 1 thread):
      gatekit profile --runtime ort --arch resnet18 --input 32 --threads 1 --out lut-ort-1t.json \\
          --plot lut-ort-1t.png
    """
    check_outputs(files={"--out": out_path, "--plot": plot_path, "--json": json_path})
    from gatekit.atomic import write_text
    from gatekit.bench.protocol import Protocol
    from gatekit.models.arch import Architecture
    from gatekit.pick.profile import PROFILE_PROTOCOL, ProfileOptions, plot_validation, profile, real_inputs
    from gatekit.runtimes import get_backend

    backend = get_backend(runtime)  # unknown or missing runtime: one line before any work
    if input_size < 8:
        raise GatekitError(f"--input must be at least 8, got {input_size}")
    shape = Architecture(arch, width, stem or ("cifar" if input_size <= 64 else "imagenet"), stem_padding, input_size)
    images = real_inputs(dataset, data_dir, input_size)
    protocol = Protocol(PROFILE_PROTOCOL.warmup_runs, PROFILE_PROTOCOL.warmup_seconds, min_runs, min_seconds)
    opts = ProfileOptions(
        runtime=backend.name,
        threads=threads,
        round_to=round_to,
        precision=precision,
        device=device,
        protocol=protocol,
        check=check,
        seed=seed,
        native=native,
        native_masks=native_masks,
    )
    bar = None if quiet else _progress_bar("profile")

    def progress(done, total, what):
        if bar is not None:
            bar.total = total
            bar.set_postfix_str(what)
            bar.update(done - bar.n)

    try:
        lut = profile(shape, opts, images, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    write_text(out_path, json.dumps(lut, indent=1) + "\n")
    v = lut["validation"]
    summary = {
        "lut": str(out_path),
        "runtime": lut["runtime"],
        "threads": threads,
        "arch": lut["arch"],
        "entries": sum(len(b["widths"]) for b in lut["blocks"]) + 2,
        "seconds": lut["seconds"],
        "calibration_fit": lut["calibration"]["fit"],
        **{k: v[k] for k in v if k != "configs"},
    }
    if v["count"]:
        click.echo(
            f"LUT: {summary['entries']} entries in {lut['seconds']:.0f} s -> {out_path}\n"
            f"held-out check: {v['count']} configurations, within +-10%: p50 {100 * v['within_tolerance_p50']:.0f}%, "
            f"p90 {100 * v['within_tolerance_p90']:.0f}% (median |error| p50 {100 * v['median_abs_error_p50']:.1f}%, "
            f"p90 {100 * v['median_abs_error_p90']:.1f}%)"
        )
    if "native" in lut:
        nv = lut["native"]["validation"]
        entries = sum(len(b["widths"]) for b in lut["native"]["blocks"])
        click.echo(
            f"native {lut['native']['precision']} op table: {entries} entries; held-out native "
            f"networks within +-10%: p50 {100 * nv['within_tolerance_p50']:.0f}%, p90 {100 * nv['within_tolerance_p90']:.0f}%"
        )
    if plot_path and v["count"]:
        plot_validation(lut, plot_path)
    _write_json(json_path, summary)


@cli.command("accuracy")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path())
@click.option(
    "--runtime",
    "runtimes",
    default="auto",
    show_default=True,
    help="ort, openvino, tensorrt, a comma list, or auto (each artifact's own runtime).",
)
@click.option("--threads", type=count(), help="Runtime threads (default: the runtime's).")
@click.option(
    "--ops",
    type=click.Choice(["auto", "native", "fallback"]),
    default="auto",
    show_default=True,
    help="A graph with native ops: the op library, its standard-ops fallback, or the library where built.",
)
@click.option(
    "--train-images", type=count(), help="The first N training images as the memory / probe set (default: all)."
)
@click.option("--test-images", type=count(), help="The first N test images (default: all).")
@click.option(
    "--linear/--no-linear",
    default=True,
    show_default=True,
    help="Also fit the linear probe on the artifact's features.",
)
@click.option(
    "--data-dir", type=click.Path(), help="Directory with the data (default: the manifest's, then $GATEKIT_DATA)."
)
@click.option(
    "--out", "out_path", required=True, type=click.Path(), help="Append one JSON line per artifact and runtime here."
)
@trust_edited_option
def accuracy_cmd(
    artifacts, runtimes, threads, ops, train_images, test_images, linear, data_dir, out_path, trust_edited
):
    """Accuracy of exported artifacts on their own outputs, in their runtime (no torch).

    k-NN top-1 (k=20, cosine) of the test images against the training images as memory, and a
    linear probe on the same features: what `gatekit compare` and `gatekit pick` read beside latency.

    \b
    Example:
      gatekit accuracy runs/td0.3/static.onnx.manifest.json --threads 2 --out runs/accuracy.jsonl
    """
    from gatekit.artifacts import RUNTIMES, open_artifact
    from gatekit.bench.accuracy import measure_accuracy
    from gatekit.bench.run import write_jsonl

    check_outputs(files={"--out": out_path})
    _trust_edited(trust_edited)

    for path in artifacts:
        art = open_artifact(path)
        for rt in [art.runtime] if runtimes == "auto" else _choices(runtimes, tuple(RUNTIMES), "runtime"):
            rec = measure_accuracy(
                art,
                rt,
                threads=threads,
                ops=ops,
                train_images=train_images,
                test_images=test_images,
                data_dir=data_dir,
                linear=linear,
            )
            write_jsonl(out_path, [rec])
            lin = f", linear {100 * rec['linear']['top1']:.2f}%" if "linear" in rec else ""
            click.echo(
                f"{rec['artifact']} on {rt}: k-NN {100 * rec['knn']['top1']:.2f}%{lin} "
                f"({rec['train_images']} train / {rec['test_images']} test images, {rec['embed_seconds']} s)"
            )


@cli.command("compare")
@click.option("--results", multiple=True, required=True, type=click.Path(), help="`gatekit bench` JSONL (repeatable).")
@click.option(
    "--accuracy",
    "accuracy_files",
    multiple=True,
    required=True,
    type=click.Path(),
    help="`gatekit accuracy` JSONL (repeatable): accuracy measured on the artifacts themselves.",
)
@click.option("--metric", type=click.Choice(["knn", "linear"]), default="knn", show_default=True)
@click.option("--percentile", type=click.Choice(["50", "90", "99"]), default="90", show_default=True)
@click.option(
    "--budget",
    type=FRACTION,
    default=0.3,
    show_default=True,
    help="t_d of the gatekit reference artifact (the fastest fp32 gatekit graph of that budget).",
)
@click.option(
    "--gate-group",
    type=count(),
    default=1,
    show_default=True,
    help="Gate group of the gatekit reference artifact (1: the paper's per-channel gates).",
)
@click.option("--name", default="compare", show_default=True, help="Stem of the files written.")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Writes NAME.json, NAME.md and one PNG per runtime and thread count here.",
)
@trust_edited_option
def compare_cmd(results, accuracy_files, metric, percentile, budget, gate_group, name, out_dir, trust_edited):
    """Accuracy against measured latency for every family: gatekit, Torch-Pruning, dense, dense int8.

    Each family's Pareto front, and the headline per precision: the accuracy each alternative reaches on
    its front at the latency of gatekit's fastest t_d --budget artifact in fp32 (and in int8).

    \b
    Example:
      gatekit compare --results bench.jsonl --accuracy accuracy.jsonl --out runs/compare
    """
    from gatekit.atomic import write_json, write_text
    from gatekit.bench.accuracy import SCHEMA as ACCURACY_SCHEMA
    from gatekit.bench.run import read_jsonl
    from gatekit.pick.compare import compare, markdown, plot
    from gatekit.pick.select import ACCURACY_FIELDS, RECORD_FIELDS

    check_outputs(dirs={"--out": out_dir})
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise GatekitError(f"--name must be a plain file stem (letters, digits, '_', '.', '-'), got {name!r}")
    result = compare(
        read_jsonl(results, RECORD_FIELDS, edited_ok=trust_edited),
        read_jsonl(accuracy_files, ACCURACY_FIELDS, ACCURACY_SCHEMA),
        metric=metric,
        percentile=int(percentile),
        budget=budget,
        gate_group=gate_group,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(result)
    write_json(out / f"{name}.json", result)
    write_text(out / f"{name}.md", md + "\n")
    for g in result["groups"]:
        plot(g, result, out / f"{name}-{g['runtime']}-{g['threads']}t-b{g['batch']}.png")
    click.echo(md)


@cli.command("prune")
@click.argument("checkpoint", type=click.Path())
@click.option(
    "--ratio",
    required=True,
    type=FiniteFloatRange(0.0, 1.0, max_open=True),
    help="Fraction of every block's inner channels to remove (the kept width is rounded up).",
)
@click.option(
    "--round-to",
    default=16,
    show_default=True,
    type=count(),
    help="Round kept widths up to a multiple of this, like gatekit's static graphs.",
)
@click.option(
    "--importance",
    type=click.Choice(["l2", "l1"]),
    default="l2",
    show_default=True,
    help="Torch-Pruning's group magnitude importance (norm of each channel's group).",
)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(),
    help="The pruned checkpoint: a .safetensors file, or a run directory (OUT/model.safetensors).",
)
@click.option("--json", "json_path", type=click.Path(), help="Write the pruning record as JSON here.")
def prune_cmd(checkpoint, ratio, round_to, importance, out_path, json_path):
    """Prune a dense encoder with Torch-Pruning: the baseline a gated model must beat.

    Removes the lowest-magnitude inner channels of every block (Torch-Pruning's dependency groups:
    conv1's filters, BN1, conv2's input slices), keeps the residual streams whole, and writes a
    checkpoint whose dense graph `gatekit export` builds with only the kept channels.

    \b
    Example (then fine-tune briefly and export both):
      gatekit prune benchmarks/train_cifar10/checkpoints/vicreg.safetensors --ratio 0.5 --out runs/tp/r0.5
      gatekit train --init runs/tp/r0.5 --recipe cpu-small --method vicreg --epochs 1 --out runs/tp/r0.5-ft
      gatekit export runs/tp/r0.5 --graph dense --format onnx,openvino --out runs/tp/r0.5/artifacts
    """
    from gatekit.checkpoint import MODEL_FILE, load_model, save_model
    from gatekit.train.torch_pruning import PRUNED_KEY, prune

    check_outputs(files={"--json": json_path})
    if Path(out_path).suffix == ".safetensors":
        check_outputs(files={"--out": out_path})
    else:
        check_outputs(dirs={"--out": out_path})
    model, meta = load_model(checkpoint)
    if isinstance(meta.get(PRUNED_KEY), dict):
        raise GatekitError(f"{checkpoint} is already pruned: prune the dense checkpoint it came from")
    out = Path(out_path)
    if out.suffix != ".safetensors":
        out = out / MODEL_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    pruned, record = prune(model, ratio, round_to, importance)
    record["from"] = {"checkpoint": str(checkpoint), "sha256": meta["sha256"]}
    keep = {k: meta[k] for k in ("train_config", "method", "budget", "epoch") if k in meta}
    save_model(out, pruned, dict(keep, **{PRUNED_KEY: record}))
    full = [b.planes for b in model.blocks]
    click.echo(
        f"pruned {checkpoint} with Torch-Pruning {record['version']} ({record['importance']}, ratio {ratio}): "
        f"widths {record['widths']} of {full} -> {out}"
    )
    _write_json(json_path, dict(record, out=str(out)))


def _progress_bar(desc: str):
    from tqdm import tqdm

    return tqdm(total=1, desc=desc, unit="graph", leave=False)


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
    from gatekit.cli.runner import run_click

    run_click(cli, argv, "gatekit", "gatekit")

