"""Evaluate an encoder on its dense and gated paths: k-NN, linear probe, FLOPs and channel usage.

Per path the train and test features are extracted once and shared by every metric. The FLOPs
statistics and the channel usage of the gated path are measured on the test set. The result is
a JSON-serialisable dict of plain Python values.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gatekit.errors import GatekitError
from gatekit.evaluate.channel_usage import channel_usage, plot_channel_usage
from gatekit.evaluate.features import PATHS, Features, extract_features
from gatekit.evaluate.flops_stats import flops_stats
from gatekit.evaluate.knn import knn_accuracy
from gatekit.evaluate.linear_probe import save_probe, train_linear_probe
from gatekit.models.flops import cost_model

CHANNEL_USAGE_PLOT = "channel_usage.png"


def _labels(labels, n: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(labels)).long().flatten()
    if t.numel() != n:
        raise GatekitError(f"{name}: {t.numel()} labels for {n} images")
    if n and int(t.min()) < 0:
        raise GatekitError(f"{name}: negative label {int(t.min())}")
    return t


def evaluate_model(
    model: nn.Module,
    train_images: np.ndarray,
    train_labels,
    test_images: np.ndarray,
    test_labels,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    paths: Sequence[str] = ("dense", "gated"),
    knn: bool = True,
    knn_k: tuple[int, int] = (20, 1),
    linear: bool = False,
    num_classes: int | None = None,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
    progress: bool = True,
    out_dir: str | Path | None = None,
) -> dict:
    """Evaluates `model` (a GatedResNet on `device`) on each of `paths`.

    `knn_k` = (k of the cosine k-NN, k of the euclidean k-NN); keys are `knn{k}_cosine` and
    `knn{k}_euclidean` (defaults: knn20_cosine, knn1_euclidean). With `linear` a probe is fitted
    (keys `linear`, `train_linear`, `linear_settings`; saved to `out_dir/probe_<path>.safetensors`
    when `out_dir` is given, key `probe_file`). The gated path adds `flops` and `channel_usage`
    (and `out_dir/channel_usage.png`, key `channel_usage_plot`). Accuracies are in [0, 1].
    """
    paths = tuple(paths)
    if not paths or any(p not in PATHS for p in paths) or len(set(paths)) != len(paths):
        raise GatekitError(f"paths must be distinct names from {', '.join(PATHS)}, got {list(paths)}")
    if len(knn_k) != 2 or min(knn_k) < 1:
        raise GatekitError(f"knn_k must be (k_cosine, k_euclidean) with k >= 1, got {knn_k}")
    n_train, n_test = int(train_images.shape[0]), int(test_images.shape[0])
    y_train = _labels(train_labels, n_train, "train labels")
    y_test = _labels(test_labels, n_test, "test labels")
    if n_test == 0:
        raise GatekitError("no test images")
    need_train = knn or linear
    if need_train and n_train == 0:
        raise GatekitError("no training images for the k-NN memory / linear probe")
    top = int(max(y_train.max() if n_train else 0, y_test.max()))
    k_classes = num_classes if num_classes is not None else top + 1
    if top >= k_classes:
        raise GatekitError(f"labels reach {top} but num_classes is {k_classes}")
    out = Path(out_dir) if out_dir is not None else None
    dev = torch.device(device)
    cfg = getattr(model, "cfg", None)

    result: dict = {"paths": {}, "n_train": n_train, "n_test": n_test, "num_classes": k_classes}
    for path in paths:
        res: dict = {}
        test = extract_features(
            model,
            test_images,
            mean,
            std,
            path,
            batch_size=batch_size,
            device=dev,
            progress=progress,
            desc=f"{path} test features",
        )
        train: Features | None = None
        if need_train:
            train = extract_features(
                model,
                train_images,
                mean,
                std,
                path,
                batch_size=batch_size,
                device=dev,
                progress=progress,
                desc=f"{path} train features",
            )
        if knn and train is not None:
            mem = train.features.to(dev)  # k-NN runs where the model does
            k_cos, k_euc = knn_k
            res[f"knn{k_cos}_cosine"] = knn_accuracy(
                mem, y_train, test.features, y_test, k=k_cos, metric="cosine", num_classes=k_classes
            )
            res[f"knn{k_euc}_euclidean"] = knn_accuracy(
                mem, y_train, test.features, y_test, k=k_euc, metric="euclidean", num_classes=k_classes
            )
            del mem
        if linear and train is not None:
            probe = train_linear_probe(
                train.features, y_train, test.features, y_test, num_classes=k_classes, device=dev
            )
            res["linear"] = probe.accuracy
            res["train_linear"] = probe.train_accuracy
            res["linear_settings"] = probe.settings
            if out is not None:
                name = f"probe_{path}.safetensors"
                save_probe(probe, out / name)
                res["probe_file"] = name
        if path == "gated":
            if cfg is None:
                raise GatekitError("FLOPs statistics need a GatedResNet (a model with a .cfg)")
            h, w = test_images.shape[1:3]
            if h != w:
                raise GatekitError(f"FLOPs accounting assumes square inputs, got {h}x{w}")
            assert test.active is not None and test.usage is not None
            res["flops"] = flops_stats(cost_model(cfg, input_size=int(h)), test.active)
            rows = channel_usage(test.usage, n_test, list(model.block_names))
            res["channel_usage"] = rows
            if out is not None:
                plot_channel_usage(
                    rows, out / CHANNEL_USAGE_PLOT, title=f"Gate channel usage on the test set ({n_test} images)"
                )
                res["channel_usage_plot"] = CHANNEL_USAGE_PLOT
        result["paths"][path] = res
    return result


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100.0 * x:.2f}"


def format_results_table(result: dict) -> str:
    """A short Markdown table, one row per path: k-NN accuracies, linear probe (%) and FLOPs kept."""
    per_path: dict = result["paths"]
    knn_keys: list[str] = []
    for res in per_path.values():
        knn_keys += [k for k in res if k.startswith("knn") and k not in knn_keys]
    has_linear = any("linear" in r for r in per_path.values())

    def title(key: str) -> str:
        k, metric = key[3:].split("_", 1)
        return f"k-NN k={k} {'cos' if metric == 'cosine' else 'euc'} (%)"

    header = ["path"] + [title(k) for k in knn_keys] + (["linear (%)"] if has_linear else []) + ["FLOPs kept"]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for path, res in per_path.items():
        cells = [path] + [_pct(res.get(k)) for k in knn_keys]
        if has_linear:
            cells.append(_pct(res.get("linear")))
        if "flops" in res:
            f = res["flops"]
            cells.append(f"{f['flops_kept']:.3f} (p90 {f['flops_kept_p90']:.3f})")
        else:
            cells.append("1.000" if path == "dense" else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
