"""`gatekit train`, `gatekit eval` and `gatekit prune`: the training side, whose commands import torch when
they run."""

from __future__ import annotations

import json
from pathlib import Path

import click

from gatekit.cli.options import write_json_if_asked
from gatekit.clitypes import DEVICE, FRACTION, NON_NEGATIVE, POSITIVE, WIDTH, FiniteFloatRange, count
from gatekit.errors import GatekitError
from gatekit.paths import check_outputs


@click.command("train")
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
def train_cmd(
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
        write_json_if_asked(json_path, summary)


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


@click.command("eval")
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
    write_json_if_asked(json_path, result)


@click.command("prune")
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
    write_json_if_asked(json_path, dict(record, out=str(out)))
