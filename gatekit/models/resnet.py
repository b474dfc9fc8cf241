"""ResNet-18/34 (BasicBlock) with one DGNet channel gate per block and separate dense/gated block BNs.

The same conv weights serve two paths, chosen explicitly with `model(x, path="dense"|"gated")`:
- dense: no gate is evaluated; each block uses its `dense` BNs.
- gated: each block's gate masks conv1's output channels (after BN1 and ReLU), i.e. conv2's input
  channels; each block uses its `gated` BNs.
The stem BN and the shortcut BNs are shared by both paths (docs/method.md sections 1, 2 and 4).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from gatekit.models.config import ModelConfig
from gatekit.models.gate import ChannelGate

PATHS = ("dense", "gated")


class BackboneOutput(NamedTuple):
    features: torch.Tensor  # (N, feature_dim), globally pooled
    masks: list[torch.Tensor] | None  # gated path: one (N, planes) mask per block


def _check_path(path: str) -> None:
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")


class PathBatchNorm(nn.Module):
    """Two BatchNorm2d, one per path; `forward(x, path)` picks one."""

    def __init__(self, channels: int):
        super().__init__()
        self.dense = nn.BatchNorm2d(channels)
        self.gated = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor, path: str) -> torch.Tensor:
        return self.dense(x) if path == "dense" else self.gated(x)


class GatedBasicBlock(nn.Module):
    def __init__(self, in_channels: int, planes: int, stride: int, cfg: ModelConfig):
        super().__init__()
        self.in_channels, self.planes, self.stride = in_channels, planes, stride
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride, 1, bias=False)
        self.bn1 = PathBatchNorm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = PathBatchNorm(planes)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )
        self.gate = ChannelGate(in_channels, planes, cfg.gate_group, cfg.gate_reduction, cfg.gate_tau)

    def forward(self, x: torch.Tensor, path: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        mask = self.gate(x) if path == "gated" else None
        out = torch.relu(self.bn1(self.conv1(x), path))
        if mask is not None:
            out = out * mask[:, :, None, None].to(out.dtype)
        out = self.bn2(self.conv2(out), path)
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut), mask


class GatedResNet(nn.Module):
    """The encoder: stem, four stages of gated BasicBlocks, global average pool. No classifier."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.widths
        arch = cfg.architecture
        self.stem_conv = nn.Conv2d(3, w[0], arch.stem_kernel, arch.stem_stride, arch.padding, bias=False)
        self.stem_pool: nn.Module = nn.MaxPool2d(3, 2, 1) if arch.stem_pool else nn.Identity()
        self.stem_bn = nn.BatchNorm2d(w[0])
        self.blocks = nn.ModuleList(
            GatedBasicBlock(b.in_channels, b.planes, b.stride, cfg) for b in cfg.architecture.blocks()
        )
        self.feature_dim = cfg.feature_dim
        self._init_weights()

    def _init_weights(self) -> None:
        # docs/method.md section 1: Kaiming-normal (fan_out, relu) for convs and the gates' FCs; BN gamma 1, beta 0.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def block_names(self) -> list[str]:
        return [b.name for b in self.cfg.architecture.blocks()]

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem_pool(torch.relu(self.stem_bn(self.stem_conv(x))))

    def forward(self, x: torch.Tensor, path: str = "dense") -> BackboneOutput:
        _check_path(path)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected input of shape (N, 3, H, W), got {tuple(x.shape)}")
        out = self.stem(x)
        masks: list[torch.Tensor] = []
        for block in self.blocks:
            out, mask = block(out, path)
            if mask is not None:
                masks.append(mask)
        features = out.mean(dim=(2, 3))
        return BackboneOutput(features, masks if path == "gated" else None)
