"""The three self-supervised methods as one module, so one forward computes the whole step's loss.

- vicreg-dual (the paper): view 1 through the gated path, view 2 through the dense path, one
  cross-branch VICReg term, plus L_G on the gated pass.
- vicreg (Baseline-1): both views dense, VICReg only.
- vicreg-gating (Baseline-2): both views gated, VICReg plus L_G on each view.
Every method does two full-width forward/backward passes per step.

Optional local views (Tan, Saleh and Martinez, ICLR 2023): M small crops go through the first view's
path (the gated path for vicreg-dual), each paired in VICReg with the second global view, and the loss
becomes global_weight * L_gg + (1 - global_weight) * mean_m L_gl (0.4 / 0.6 in their recipe). The
budget loss stays on the global gated views, whose resolution the FLOPs accounting is for. Without
local views the objective is the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gatekit.models import GatedResNet, ModelConfig, cost_model
from gatekit.train.losses import active_channels, budget_loss, vicreg_loss

METHODS = ("vicreg-dual", "vicreg", "vicreg-gating")
VIEW_PATHS = {"vicreg-dual": ("gated", "dense"), "vicreg": ("dense", "dense"), "vicreg-gating": ("gated", "gated")}


def projector(in_dim: int, hidden: int, out: int) -> nn.Sequential:
    """VICReg's 3-layer projector: Linear-BN-ReLU, Linear-BN-ReLU, Linear (biases on, default init)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, out),
    )


@dataclass(frozen=True)
class LossConfig:
    budget: float = 0.3  # t_d, the target fraction of backbone FLOPs kept
    lam: float = 5.0
    gamma: float = 1.0
    sim_weight: float = 25.0
    var_weight: float = 25.0
    cov_weight: float = 1.0
    global_weight: float = 0.4  # weight of the global-global term when local views are used


class SSLModel(nn.Module):
    """Backbone + shared projector + objective. `forward(view1, view2, p)` returns the loss and statistics."""

    def __init__(self, model_cfg: ModelConfig, method: str, loss_cfg: LossConfig, proj_hidden: int, proj_out: int):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
        self.method = method
        self.loss_cfg = loss_cfg
        self.backbone = GatedResNet(model_cfg)
        self.projector = projector(self.backbone.feature_dim, proj_hidden, proj_out)
        self.cost = cost_model(model_cfg)

    def forward(
        self, view1: torch.Tensor, view2: torch.Tensor, p: float, local_views: list[torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        c = self.loss_cfg
        stats: dict[str, torch.Tensor] = {}
        embeddings, budget_terms, ratios = [], [], []
        for view, path in zip((view1, view2), VIEW_PATHS[self.method]):
            out = self.backbone(view, path)
            embeddings.append(self.projector(out.features))
            if out.masks is not None:
                b = budget_loss(active_channels(out.masks), self.cost, c.budget, p, c.lam, c.gamma)
                budget_terms.append(b["loss"])
                ratios.append(b["flops_ratio"].detach())
        v = vicreg_loss(embeddings[0], embeddings[1], c.sim_weight, c.var_weight, c.cov_weight)
        loss = v["loss"]
        if local_views:
            local_path = VIEW_PATHS[self.method][0]
            local_terms = [
                vicreg_loss(
                    self.projector(self.backbone(lv, local_path).features),
                    embeddings[1],
                    c.sim_weight,
                    c.var_weight,
                    c.cov_weight,
                )["loss"]
                for lv in local_views
            ]
            loss = c.global_weight * loss + (1 - c.global_weight) * torch.stack(local_terms).mean()
        for term in budget_terms:
            loss = loss + term
        stats["vicreg"] = v["loss"].detach()  # the global-global term
        stats["budget"] = sum(t.detach() for t in budget_terms) if budget_terms else torch.zeros(())
        stats["flops_kept"] = torch.stack(ratios).mean() if ratios else torch.ones(())
        stats["loss"] = loss
        return stats
