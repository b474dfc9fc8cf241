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
