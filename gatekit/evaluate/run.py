"""`gatekit eval`: load a checkpoint and its data, evaluate both paths, write the report files."""

from __future__ import annotations

from pathlib import Path

import torch

from gatekit.checkpoint import load_model, resolve_model_file
from gatekit.data import load_dataset, normalization
from gatekit.data.arrays import recorded_dir
from gatekit.errors import GatekitError
from gatekit.models import GatedResNet

TRAINED_PATHS = {"vicreg": ("dense",), "vicreg-gating": ("gated",), "vicreg-dual": ("dense", "gated")}


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    paths: tuple[str, ...] | None = None,
    knn: bool = True,
    linear: bool = False,
    dataset: str | None = None,
    data_dir: str | None = None,
    limit_train: int | None = None,
    random_init: bool = False,
    device: str = "auto",
    threads: int | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Evaluates `paths` (default: those the checkpoint's method trained) of a checkpoint; see `gatekit eval`."""
    from gatekit.evaluate.channel_usage import format_usage_table
    from gatekit.evaluate.report import evaluate_model, format_results_table
    from gatekit.models.device import pick_device

    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    model, meta = load_model(checkpoint, device=str(dev))
    if random_init:
        torch.manual_seed(0)
        model = GatedResNet(model.cfg).to(dev).eval()
    train_cfg = meta.get("train_config", {})
    if paths is None:  # the paths the method trained; the other path's BNs (and gates) were never trained
        paths = TRAINED_PATHS.get(None if random_init else train_cfg.get("method"), ("dense", "gated"))
    name = dataset or train_cfg.get("dataset", "cifar10")
    root = data_dir or recorded_dir(train_cfg.get("data_dir"))  # else $GATEKIT_DATA: trained on another machine
    # labelled train split as the k-NN memory / probe set (STL-10: train 5k, test 8k, as the paper)
    size = model.cfg.input_size  # images of another size are resized (e.g. CIFAR-10 upscaled for a 96 px model)
    train = load_dataset(name, "train", root, limit=limit_train, image_size=size)
    test = load_dataset(name, "test", root, image_size=size)
    if train.labels is None or test.labels is None:
        raise GatekitError(f"dataset {name} has no labels for evaluation")
    mean, std = normalization(name)
    out = Path(out_dir) if out_dir else resolve_model_file(checkpoint).parent
    result = evaluate_model(
        model,
        train.images,
        train.labels,
        test.images,
        test.labels,
        mean,
        std,
        paths=tuple(paths),
        knn=knn,
        linear=linear,
        num_classes=int(max(train.labels.max(), test.labels.max())) + 1,
        device=str(dev),
        progress=progress,
        out_dir=out,
    )
    result.update(
        checkpoint=str(resolve_model_file(checkpoint)),
        checkpoint_sha256=meta["sha256"],
        dataset=name,
        random_init=random_init,
        method=train_cfg.get("method"),
        budget=train_cfg.get("budget"),
        epochs=meta.get("epoch"),
        model_config=model.cfg.to_dict(),
    )
    result["table"] = format_results_table(result)
    gated = result["paths"].get("gated", {})
    if "channel_usage" in gated:
        result["channel_usage_table"] = format_usage_table(gated["channel_usage"])
    return result
