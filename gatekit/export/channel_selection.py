"""Which channels a static or hybrid graph keeps: the torch-free choice of gatekit.models.channels (from the gate
usage over the calibration images) as the torch index tensors the deploy modules take."""

from __future__ import annotations

import torch

from gatekit.models.channels import select_all as _select_all


def select_all(
    usage: list[torch.Tensor], n_samples: int, min_usage: float = 0.0, round_to: int = 16, min_keep: int = 1
) -> list[torch.Tensor]:
    """Per block, the indices of the channels kept (gatekit.models.channels.select_all) from per-channel on-counts
    over `n_samples` calibration images."""
    return [
        torch.from_numpy(c)
        for c in _select_all([u.double().numpy() for u in usage], n_samples, min_usage, round_to, min_keep)
    ]
