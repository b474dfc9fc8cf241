"""Which inner channels a static or hybrid graph keeps, from gate usage on a calibration set."""

from __future__ import annotations

import math

import torch


def select_channels(usage: torch.Tensor, n_samples: int, min_usage: float = 0.0, round_to: int = 16,
                    min_keep: int = 1) -> torch.Tensor:
    """Kept channel indices (sorted) of one block.

    Keeps the channels on for more than `min_usage` of the calibration samples (the default 0 keeps
    every channel that was ever on), then rounds the count up to a multiple of `round_to` (1
    disables), adding the most used of the removed channels. At least `min_keep` channels are kept
    (a grouped gate passes its group size, so that a block whose gates were never on keeps one group).
    """
    if n_samples < 1:
        raise ValueError("no calibration samples")
    freq = usage.double() / n_samples
    keep = freq > min_usage
    planes = usage.numel()
    k = int(keep.sum())
    step = max(int(round_to), 1)
    target = min(planes, max(step * math.ceil(k / step), step, min_keep, 1))
    # order: kept first, then by usage (descending), then by index
    order = sorted(range(planes), key=lambda j: (not bool(keep[j]), -float(freq[j]), j))
    return torch.tensor(sorted(order[:target]), dtype=torch.long)


def select_all(usage: list[torch.Tensor], n_samples: int, min_usage: float = 0.0, round_to: int = 16,
               min_keep: int = 1) -> list[torch.Tensor]:
    return [select_channels(u, n_samples, min_usage, round_to, min_keep) for u in usage]
