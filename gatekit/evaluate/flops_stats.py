"""Per-sample MACs of the gated path and their summary (the paper's `flops_per`).

A sample's MACs are `cost.gated_macs` of its per-block active-channel counts (stem + gates +
every block at its active width). `flops_kept` = mean MACs over samples / dense MACs, i.e. the
paper's flops_per / 100; `flops_reduction` = 1 - flops_kept. Sums are in float64.
"""

from __future__ import annotations

import torch

from gatekit.errors import GatekitError
from gatekit.models.flops import CostModel


def per_sample_macs(cost: CostModel, active) -> torch.Tensor:
    """MACs of each sample, shape (N,) float64, from active counts of shape (N, B)."""
    a = torch.as_tensor(active).to(torch.float64)
    if a.ndim != 2 or a.shape[1] != len(cost.blocks):
        raise GatekitError(
            f"active must have shape (N, {len(cost.blocks)}) (one column per block), got {tuple(a.shape)}"
        )
    if a.shape[0] == 0:
        raise GatekitError("no samples to compute FLOPs statistics on")
    planes = torch.tensor([b.planes for b in cost.blocks], dtype=torch.float64)
    if bool((a < 0).any()) or bool((a > planes).any()):
        raise GatekitError("active channel counts must lie in [0, planes] for every block")
    return cost.gated_macs([a[:, b] for b in range(a.shape[1])])


def flops_stats(cost: CostModel, active) -> dict:
    """Mean/median/p90 MACs of the gated path and their fraction of the dense MACs (plain floats)."""
    macs = per_sample_macs(cost, active)
    dense = float(cost.dense_macs)
    mean = float(macs.mean())
    p50, p90 = (float(q) for q in torch.quantile(macs, torch.tensor([0.5, 0.9], dtype=torch.float64)))
    return {
        "dense_macs": int(cost.dense_macs),
        "mean_macs": mean,
        "p50_macs": p50,
        "p90_macs": p90,
        "flops_kept": mean / dense,
        "flops_reduction": 1.0 - mean / dense,
        "flops_kept_p50": p50 / dense,
        "flops_kept_p90": p90 / dense,
        "n": int(macs.shape[0]),
    }
