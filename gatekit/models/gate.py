"""The DGNet channel gate used by VICReg-Dual-Gating (docs/method.md section 2).

Per sample and per block: z = GAP(x); logits = W2 ReLU(BN(W1 z)). In training the mask is
1[logit + logistic noise >= 0] in the forward pass with the gradient of sigmoid((logit + noise)/tau)
(straight-through); in eval it is 1[logit >= 0] (ties count as on). With gate_group g > 1 one
decision covers g consecutive channels.
"""

from __future__ import annotations

import torch
from torch import nn


def gate_mask(logits: torch.Tensor, tau: float, training: bool) -> torch.Tensor:
    """Binary mask from gate logits: straight-through logistic-noise sampling in training, threshold in eval."""
    logits = logits.float()  # noise in fp16 underflows (1e-8), so the gate always runs in fp32
    if not training:
        return (logits >= 0).to(logits.dtype)
    u = torch.rand_like(logits)
    noise = torch.log(u + 1e-8) - torch.log(1 - u + 1e-8)
    soft = torch.sigmoid((logits + noise) / tau)
    hard = (soft >= 0.5).to(soft.dtype)
    return hard + (soft - soft.detach())  # exactly binary forward, sigmoid gradient backward


class ChannelGate(nn.Module):
    """Decides, from the block input, which of the block's `out_channels` inner channels to compute."""

    def __init__(self, in_channels: int, out_channels: int, group: int = 1, reduction: int = 4, tau: float = 2 / 3):
        super().__init__()
        if out_channels % group:
            raise ValueError(f"group {group} does not divide {out_channels} channels")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.group = group
        self.tau = tau
        self.hidden = max(in_channels // reduction, 1)
        self.fc1 = nn.Linear(in_channels, self.hidden, bias=False)
        self.bn = nn.BatchNorm1d(self.hidden)
        self.fc2 = nn.Linear(self.hidden, out_channels // group, bias=False)

    @property
    def decisions(self) -> int:
        return self.out_channels // self.group

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the two FC layers per sample, as the paper counts them."""
        return self.in_channels * self.hidden + self.hidden * self.decisions

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        z = x.mean(dim=(2, 3))
        return self.fc2(torch.relu(self.bn(self.fc1(z))))

    def expand(self, decisions: torch.Tensor) -> torch.Tensor:
        """Per-decision mask (N, out/g) to per-channel mask (N, out)."""
        return decisions if self.group == 1 else decisions.repeat_interleave(self.group, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel mask of shape (N, out_channels), values in {0, 1}."""
        return self.expand(gate_mask(self.logits(x), self.tau, self.training))
