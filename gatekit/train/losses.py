"""VICReg and the DGNet budget loss L_G = L_s + L_b (docs/method.md sections 3 and 5)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gatekit.models.flops import CostModel


def _off_diagonal(m: torch.Tensor) -> torch.Tensor:
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def vicreg_loss(
    z1: torch.Tensor, z2: torch.Tensor, sim_weight: float = 25.0, var_weight: float = 25.0, cov_weight: float = 1.0
) -> dict[str, torch.Tensor]:
    """VICReg on two (N, D) embeddings: 25 invariance + 25 variance + 1 covariance (solo-learn's form)."""
    z1, z2 = z1.float(), z2.float()
    n, d = z1.shape
    invariance = F.mse_loss(z1, z2)
    variance = z1.new_zeros(())
    covariance = z1.new_zeros(())
    for z in (z1, z2):
        std = torch.sqrt(z.var(dim=0) + 1e-4)
        variance = variance + torch.relu(1 - std).mean()
        zc = z - z.mean(dim=0)
        cov = (zc.T @ zc) / (n - 1)
        covariance = covariance + _off_diagonal(cov).pow(2).sum() / d
    loss = sim_weight * invariance + var_weight * variance + cov_weight * covariance
    return {"loss": loss, "invariance": invariance, "variance": variance, "covariance": covariance}


def bound_anneal(epoch: int, alpha: float) -> float:
    """p = exp(-alpha * epoch), updated once per epoch with epoch counted from 0 (DGNet's ExpAnnealing)."""
    return math.exp(-alpha * epoch)


def active_channels(masks: list[torch.Tensor]) -> torch.Tensor:
    """(N, B) active inner channels per sample and block; differentiable through the straight-through masks."""
    return torch.stack([m.float().sum(dim=1) for m in masks], dim=1)


def budget_loss(
    active: torch.Tensor,
    cost: CostModel,
    target: float,
    p: float,
    lam: float = 5.0,
    gamma: float = 1.0,
) -> dict[str, torch.Tensor]:
    """L_G = L_s + L_b for per-sample, per-block active channels `active` (N, B).

    L_s = lam (F_real / F_full - t_d)^2 with F_real the batch-mean gated MACs (stem, gates and
    shortcuts included), and L_b = gamma mean_b [relu(p sqrt(t_d) - rho_b)^2 + relu(rho_b - (1 - p (1 - sqrt(t_d))))^2]
    with rho_b the batch-mean channel density of block b.
    """
    mean_active = active.mean(dim=0)
    f_real = cost.gated_macs([mean_active[b] for b in range(active.shape[1])])
    ratio = f_real / cost.dense_macs
    flops_loss = lam * (ratio - target) ** 2
    planes = torch.tensor([b.planes for b in cost.blocks], dtype=active.dtype, device=active.device)
    rho = mean_active / planes
    t = math.sqrt(target)
    lower, upper = p * t, 1 - p * (1 - t)
    bound_loss = gamma * (torch.relu(lower - rho).pow(2) + torch.relu(rho - upper).pow(2)).mean()
    return {"loss": flops_loss + bound_loss, "flops_loss": flops_loss, "bound_loss": bound_loss, "flops_ratio": ratio}
