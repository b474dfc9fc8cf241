"""Deterministic feature extraction from a frozen encoder, on its dense or gated path.

Images are uint8 (N, H, W, 3) RGB arrays; each batch becomes float NCHW in [0, 1], is normalised
with the dataset mean/std and goes through the model in eval mode under `torch.inference_mode()`.
No augmentation. On the gated path the per-sample active-channel counts of every block and the
per-channel on-counts (how many samples switched each channel on) are collected as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from gatekit.errors import GatekitError

PATHS = ("dense", "gated")


@dataclass
class Features:
    """Features of N samples; `active` and `usage` only on the gated path."""

    features: torch.Tensor  # (N, D) float32, cpu
    active: torch.Tensor | None = None  # (N, B) float32: active inner channels per block per sample
    usage: list[torch.Tensor] | None = None  # per block (planes_b,) float32: samples with the channel on

    def __len__(self) -> int:
        return self.features.shape[0]


def _check_images(images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray):
        raise GatekitError(f"images must be a numpy array, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise GatekitError(f"images must have shape (N, H, W, 3), got {images.shape}")
    if images.dtype != np.uint8:
        raise GatekitError(f"images must be uint8, got {images.dtype}")
    if images.shape[0] == 0:
        raise GatekitError("no images to extract features from")


def _channel_stats(values: Sequence[float], name: str, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float32, device=device).flatten()
    if t.numel() != 3:
        raise GatekitError(f"{name} must have 3 values (one per RGB channel), got {t.numel()}")
    return t.view(1, 3, 1, 1)


def extract_features(
    model: nn.Module,
    images: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    path: str,
    *,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str | None = None,
) -> Features:
    """Runs `images` through `model` (already on `device`) on `path` and collects the features.

    `mean`/`std` are per-channel RGB statistics in [0, 1] units. The train/eval flags of the
    model and of all its submodules are restored afterwards.
    """
    if path not in PATHS:
        raise GatekitError(f"path must be one of {', '.join(PATHS)}, got {path!r}")
    if batch_size < 1:
        raise GatekitError(f"batch_size must be >= 1, got {batch_size}")
    _check_images(images)
    dev = torch.device(device)
    mean_t = _channel_stats(mean, "mean", dev)
    std_t = _channel_stats(std, "std", dev)
    if bool((std_t <= 0).any()):
        raise GatekitError(f"std must be positive, got {list(std)}")

    n = images.shape[0]
    feats: list[torch.Tensor] = []
    active: list[torch.Tensor] = []
    usage: list[torch.Tensor] | None = None
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with (
            torch.inference_mode(),
            tqdm(total=n, desc=desc or f"features ({path})", unit="img", disable=not progress, leave=False) as bar,
        ):
            for start in range(0, n, batch_size):
                # copy the slice: the source may be a read-only (memory-mapped) array
                batch = torch.from_numpy(np.array(images[start : start + batch_size], copy=True)).to(dev)
                x = (batch.permute(0, 3, 1, 2).float().div_(255.0) - mean_t) / std_t
                out = model(x, path=path)
                feats.append(out.features.float().cpu())
                if path == "gated":
                    if not out.masks:
                        raise GatekitError("the model returned no gate masks on the gated path")
                    masks = [m.float() for m in out.masks]
                    active.append(torch.stack([m.sum(dim=1) for m in masks], dim=1).cpu())
                    counts = [m.sum(dim=0).cpu() for m in masks]
                    usage = counts if usage is None else [u + c for u, c in zip(usage, counts, strict=True)]
                bar.update(x.shape[0])
    finally:
        for module, mode in modes:
            module.training = mode

    if path == "dense":
        return Features(torch.cat(feats))
    return Features(torch.cat(feats), torch.cat(active), usage)
