"""FLOPs accounting exactly as the paper counts it (docs/method.md section 3).

Counted: multiply-accumulates (MACs) of convolutions only, i.e. the stem, both 3x3 convs of each
block, the 1x1 downsample convs and the two FC layers of each gate. Per gated block with c active
inner channels and output resolution H_b x W_b (used for both convs):

    F_b(c) = 9 c C_in H_b W_b + 9 c C_out H_b W_b + F_ds        F_full = F_b(C_out)

The gated cost of a sample is the stem, plus every gate, plus each block at its active width.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gatekit.models.config import ModelConfig


@dataclass(frozen=True)
class BlockCost:
    name: str
    in_channels: int
    planes: int
    out_hw: int  # H_b * W_b after the block's stride
    downsample: bool
    gate_macs: int

    @property
    def downsample_macs(self) -> int:
        return self.out_hw * self.planes * self.in_channels if self.downsample else 0

    @property
    def macs_per_channel(self) -> int:
        """MACs that one active inner channel costs: its conv1 filter plus its conv2 input slice."""
        return 9 * self.out_hw * (self.in_channels + self.planes)

    def macs(self, active_channels):
        """MACs of the block at `active_channels` inner channels (int, float or tensor)."""
        return self.macs_per_channel * active_channels + self.downsample_macs

    @property
    def full_macs(self) -> int:
        return self.macs(self.planes)


@dataclass(frozen=True)
class CostModel:
    """The MAC costs of one architecture at one input size."""

    stem_macs: int
    blocks: tuple[BlockCost, ...]

    @property
    def dense_macs(self) -> int:
        return self.stem_macs + sum(b.full_macs for b in self.blocks)

    @property
    def gate_macs(self) -> int:
        return sum(b.gate_macs for b in self.blocks)

    def gated_macs(self, active_per_block):
        """MACs of the gated path for per-block active channel counts.

        `active_per_block` is a sequence with one entry per block; each entry is an int, float or
        tensor (for example per-sample counts of shape (N,)); the result has the same shape.
        """
        total = self.stem_macs + self.gate_macs
        for block, c in zip(self.blocks, active_per_block, strict=True):
            total = total + block.macs(c)
        return total

    def static_macs(self, widths) -> int:
        """MACs of a statically pruned network with the given inner widths and no gates."""
        return self.stem_macs + sum(b.macs(w) for b, w in zip(self.blocks, widths, strict=True))


def cost_model(cfg: ModelConfig, input_size: int | None = None) -> CostModel:
    """Analytic MAC costs of `cfg` at `input_size` (default cfg.input_size), from its Architecture."""
    arch = cfg.architecture
    if input_size:
        arch = dataclasses.replace(arch, input_size=input_size)
    blocks = []
    for b in arch.blocks():
        hidden = max(b.in_channels // cfg.gate_reduction, 1)
        gate = b.in_channels * hidden + hidden * (b.planes // cfg.gate_group)
        blocks.append(BlockCost(b.name, b.in_channels, b.planes, b.out_hw, b.shortcut, gate))
    return CostModel(arch.stem_macs, tuple(blocks))
