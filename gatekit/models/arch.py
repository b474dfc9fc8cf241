"""The one torch-free description of a gated ResNet's structure: stages, block strides, feature-map
sizes, widths and MACs per block.

Every consumer asks this module: the PyTorch model (`models/resnet.py`), the FLOPs count
(`models/flops.py`), the exporter's choice of skipping blocks (`export/graphs.py`) and the latency
table's synthetic ONNX graphs (`pick/synth.py`). It imports nothing but the standard library, so the
deploy side (a device with numpy and its runtime) reads it too.
"""

from __future__ import annotations

from dataclasses import dataclass

ARCH_LAYERS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}  # BasicBlocks per stage
BASE_WIDTHS = (64, 128, 256, 512)  # stage widths at width multiplier 1
STEMS = ("cifar", "imagenet")  # cifar: 3x3/1 conv, no max-pool; imagenet: 7x7/2 conv + 3x3/2 max-pool


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def stage_widths(width: float) -> tuple[int, ...]:
    """Stage widths at a width multiplier (at least one channel each)."""
    return tuple(max(1, int(round(c * width))) for c in BASE_WIDTHS)


@dataclass(frozen=True)
class BlockShape:
    """One BasicBlock: conv1 (3x3, stride) -> inner channels -> conv2 (3x3) -> planes, plus the shortcut."""

    index: int
    name: str  # layer{stage}.{i}, as the model's block_names
    in_channels: int
    planes: int
    stride: int
    size_in: int  # input height = width
    shortcut: bool  # a 1x1 conv (stride) on the shortcut

    @property
    def size_out(self) -> int:
        return conv_out(self.size_in, 3, self.stride, 1)

    @property
    def out_hw(self) -> int:
        return self.size_out**2

    @property
    def macs_per_channel(self) -> int:
        """MACs of one inner channel: its conv1 filter plus its conv2 input slice."""
        return 9 * self.out_hw * (self.in_channels + self.planes)

    @property
    def shortcut_macs(self) -> int:
        return self.out_hw * self.in_channels * self.planes if self.shortcut else 0

    def macs(self, inner):
        """MACs at `inner` active inner channels (int, float, array or tensor)."""
        return self.macs_per_channel * inner + self.shortcut_macs

    def grid(self, step: int) -> list[int]:
        """Inner widths a static graph can have with round-to `step`: multiples of step, and planes."""
        step = max(1, int(step))
        return sorted({*range(step, self.planes + 1, step), self.planes})


@dataclass(frozen=True)
class Architecture:
    """The shapes of a gated ResNet at one input size (what an artifact's model_config or a LUT describes)."""

    arch: str = "resnet18"
    width: float = 1.0
    stem: str = "cifar"
    stem_padding: int | None = None  # None: 2 for the cifar stem (the paper's), 3 for imagenet
    input_size: int = 32

    def __post_init__(self) -> None:
        if self.arch not in ARCH_LAYERS:
            raise ValueError(f"unknown architecture {self.arch!r}: choose one of {', '.join(ARCH_LAYERS)}")
        if self.stem not in STEMS:
            raise ValueError(f"unknown stem {self.stem!r}: choose one of {', '.join(STEMS)}")

    @classmethod
    def from_model_config(cls, cfg) -> Architecture:
        """From a ModelConfig or its dict (an artifact's `model_config`, a LUT's `arch`)."""
        d = cfg if isinstance(cfg, dict) else cfg.to_dict()
        return cls(d["arch"], float(d["width"]), d["stem"], d.get("stem_padding"), int(d["input_size"]))

    def to_dict(self) -> dict:
        return {
            "arch": self.arch,
            "width": self.width,
            "stem": self.stem,
            "stem_padding": self.stem_padding,
            "input_size": self.input_size,
        }

    def same_as(self, cfg) -> bool:
        return self.to_dict() == Architecture.from_model_config(cfg).to_dict()

    @property
    def layers(self) -> tuple[int, ...]:
        return ARCH_LAYERS[self.arch]

    @property
    def widths(self) -> tuple[int, ...]:
        return stage_widths(self.width)

    @property
    def padding(self) -> int:
        if self.stem_padding is not None:
            return self.stem_padding
        return 2 if self.stem == "cifar" else 3

    @property
    def stem_kernel(self) -> int:
        return 3 if self.stem == "cifar" else 7

    @property
    def stem_stride(self) -> int:
        return 1 if self.stem == "cifar" else 2

    @property
    def stem_pool(self) -> bool:
        return self.stem == "imagenet"

    @property
    def stem_conv_size(self) -> int:
        """Height of the stem conv's output."""
        return conv_out(self.input_size, self.stem_kernel, self.stem_stride, self.padding)

    @property
    def stem_size(self) -> int:
        """Height of the stem's output (after the max-pool of the imagenet stem): the first block's input."""
        s = self.stem_conv_size
        return conv_out(s, 3, 2, 1) if self.stem_pool else s

    @property
    def stem_macs(self) -> int:
        return self.stem_kernel**2 * self.stem_conv_size**2 * 3 * self.widths[0]

    def blocks(self) -> list[BlockShape]:
        out, in_ch, size = [], self.widths[0], self.stem_size
        for stage, (n, planes) in enumerate(zip(self.layers, self.widths)):
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                b = BlockShape(
                    len(out), f"layer{stage + 1}.{i}", in_ch, planes, stride, size, stride != 1 or in_ch != planes
                )
                out.append(b)
                in_ch, size = planes, b.size_out
        return out

    def macs(self, inner_widths) -> int:
        """MACs of a static network (no gates) with these inner widths."""
        blocks = self.blocks()
        if len(inner_widths) != len(blocks):
            raise ValueError(f"{self.arch} has {len(blocks)} blocks, got {len(inner_widths)} widths")
        return self.stem_macs + sum(b.macs(w) for b, w in zip(blocks, inner_widths))

    def skipping_blocks(self, min_size: int) -> list[bool]:
        """Which blocks of a dynamic graph skip inactive channels: those whose output is at least
        `min_size` pixels a side (0: every block). See export/graphs.py."""
        return [b.size_out >= min_size for b in self.blocks()]
