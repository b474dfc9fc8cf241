"""The static/hybrid channel choice (gatekit.models.channels) as the torch index tensors the deploy
modules take."""

from __future__ import annotations

import torch

from gatekit.models.channels import select_all as _select_all


def select_all(
    usage: list[torch.Tensor], n_samples: int, min_usage: float = 0.0, round_to: int = 16, min_keep: int = 1
) -> list[torch.Tensor]:
    return [
        torch.from_numpy(c)
        for c in _select_all([u.double().numpy() for u in usage], n_samples, min_usage, round_to, min_keep)
    ]
