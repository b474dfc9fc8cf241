"""Which inner channels a static or hybrid graph keeps, from gate usage on a calibration set.

numpy only: the exporter applies it to the usage it measures, and `gatekit pick --lut` plans widths
from the usage that an export manifest recorded, on a device without torch.
"""

from __future__ import annotations

import math

import numpy as np


def select_channels(usage, n_samples: int, min_usage: float = 0.0, round_to: int = 16, min_keep: int = 1) -> np.ndarray:
    """Kept channel indices (sorted, int64) of one block, from its per-channel on-counts `usage`.

    Keeps the channels on for more than `min_usage` of the calibration samples (the default 0 keeps
    every channel that was ever on), then rounds the count up to a multiple of `round_to` (1
    disables), adding the most used of the removed channels. At least `min_keep` channels are kept
    (a grouped gate passes its group size, so that a block whose gates were never on keeps one group).
    """
    if n_samples < 1:
        raise ValueError("no calibration samples")
    freq = np.asarray(usage, dtype=np.float64).reshape(-1) / n_samples
    keep = freq > min_usage
    planes = freq.size
    step = max(int(round_to), 1)
    target = min(planes, max(step * math.ceil(int(keep.sum()) / step), step, min_keep, 1))
    # order: kept first, then by usage (descending), then by index
    order = np.lexsort((np.arange(planes), -freq, ~keep))
    return np.sort(order[:target]).astype(np.int64)


def select_all(
    usage, n_samples: int, min_usage: float = 0.0, round_to: int = 16, min_keep: int = 1
) -> list[np.ndarray]:
    return [select_channels(u, n_samples, min_usage, round_to, min_keep) for u in usage]


def threshold_options(
    usage, n_samples: int, round_to: int, min_keep: int = 1, max_options: int = 200
) -> list[tuple[float, list[int]]]:
    """(t, widths) for usage thresholds t from 0 up, one per distinct width configuration: the static
    graphs `--min-usage t` can make of this usage."""
    freqs = np.unique(np.concatenate([np.asarray(u, dtype=np.float64).reshape(-1) / n_samples for u in usage]))
    ts = np.unique(np.concatenate([[0.0], freqs[freqs < 1.0]]))
    if len(ts) > max_options:
        ts = ts[np.unique(np.linspace(0, len(ts) - 1, max_options).round().astype(int))]
    out, seen = [], set()
    for t in ts:
        widths = [len(c) for c in select_all(usage, n_samples, float(t), round_to, min_keep)]
        if tuple(widths) not in seen:
            seen.add(tuple(widths))
            out.append((float(t), widths))
    return out
