"""What an export measures on real training images before it builds a graph.

- Gate usage: per block and channel, on how many calibration images (the first --calib of the training set) the
  gate turned the channel on. Static and hybrid graphs keep the channels used often enough
  (gatekit.export.channel_selection); the native dynamic graph removes the channels no image used; a dynamic
  graph's MACs are counted from each image's active widths.
- int8: the images that calibrate quantization (the first --quant-calib of the training set), the parts
  --quant-exclude keeps in float, and the int8 dynamic graph's per-block scales (gatekit.export.int8), calibrated
  once and shared by its forms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from gatekit import __version__
from gatekit.errors import GatekitError
from gatekit.export import int8
from gatekit.export.channel_selection import select_all


@dataclass
class GateUsage:
    """Per block, per channel: on how many of `images` calibration images the gate turned the channel on, and
    (when measured in this export, not read from a manifest) each image's active width per block."""

    counts: list[torch.Tensor]
    images: int
    active: torch.Tensor | None = None

    @classmethod
    def measure(cls, model, images: np.ndarray, mean, std, progress: bool = True) -> GateUsage:
        """One pass of the gated path over uint8 NHWC `images`."""
        from gatekit.evaluate.features import extract_features

        feats = extract_features(model, images, mean, std, "gated", progress=progress, desc="calibration")
        return cls(feats.usage, len(images), feats.active)

    @classmethod
    def from_record(cls, record: dict, model) -> GateUsage:
        """The usage an earlier export manifest recorded (its `gate_usage`) for the same checkpoint."""
        usage = cls([torch.tensor(c, dtype=torch.float32) for c in record["counts"]], int(record["images"]))
        if [len(u) for u in usage.counts] != [b.planes for b in model.blocks]:
            raise GatekitError("the recorded gate usage does not fit this checkpoint's blocks")
        return usage

    def record(self, dataset: str) -> dict:
        """The manifest's `gate_usage`: what `gatekit pick --lut` plans static widths from
        (gatekit.models.channels), without torch."""
        return {
            "dataset": dataset,
            "split": "train",
            "images": int(self.images),
            "counts": [[int(v) for v in u.round().long().tolist()] for u in self.counts],
        }

    def channels(self, min_usage: float, round_to: int, gate_group: int) -> list[torch.Tensor]:
        """Per block, the channels on for more than `min_usage` of the calibration images (rounded up to a multiple
        of `round_to`, whole gate groups)."""
        return select_all(self.counts, self.images, min_usage, round_to, gate_group)

    def used_channels(self, gate_group: int) -> list[torch.Tensor]:
        """Per block, the channels some calibration image turned on (the native dynamic graph removes the others)."""
        return select_all(self.counts, self.images, 0.0, 1, gate_group)


class Int8Calibration:
    """int8: the real training images that calibrate quantization, loaded once; the parts kept in float; the int8
    dynamic graph's scales, calibrated on the first form built and set on every later one, and each form's gate
    agreement with the fp32 gated graph on the same images.

    `opts` (gatekit.export.exporter.ExportOptions) is read when used: --quant-calib, --quant-exclude and the batch
    are those of the call. `load(n)` gives the first n training images, normalized, NCHW float32."""

    def __init__(self, opts, n_blocks: int, dataset: str, load: Callable[[int], np.ndarray]):
        self.opts = opts
        self.n_blocks = n_blocks
        self.dataset = dataset
        self._load = load
        self._batches: list[np.ndarray] | None = None
        self.scales: list[dict | None] | None = None  # per block x_scale / h_scale; None for a block kept in float
        self.agreement: dict[str, dict] = {}  # per int8 form

    def batches(self) -> list[np.ndarray]:
        """The first --quant-calib training images, one input batch each (a last partial batch is left out)."""
        if self._batches is None:
            n = self.opts.quant_calib
            if n < 1:
                raise GatekitError("--quant-calib must be at least 1")
            x = self._load(n)
            b = self.opts.batch
            self._batches = [x[i : i + b] for i in range(0, len(x) - b + 1, b)]
        return self._batches

    def images_record(self) -> dict:
        """Which images calibrated the quantizer, for the manifest."""
        return {
            "dataset": self.dataset,
            "split": "train",
            "images": int(sum(len(x) for x in self.batches())),
            "first": True,
        }

    def exclude_patterns(self) -> list[str]:
        """--quant-exclude as the node-name patterns the runtimes' quantizers keep in float."""
        from gatekit.runtimes.quantize import exclude_patterns

        return exclude_patterns(list(self.opts.quant_exclude), self.n_blocks)

    def float_blocks(self) -> frozenset[int]:
        """int8 dynamic graph: the blocks --quant-exclude keeps in float32 (blockN, last). The stem and the head are
        float32 in that graph whatever is asked."""
        names = list(self.opts.quant_exclude)
        self.exclude_patterns()  # one line for an unknown name
        n = self.n_blocks
        return frozenset(
            n - 1 if name == "last" else int(name[5:]) for name in names if name == "last" or name.startswith("block")
        )

    def calibrate(self, net, form: str) -> None:
        """Sets the scales of an int8 dynamic graph `net` (those of the first form calibrated: every form shares
        them) and measures its gate agreement with the fp32 gated graph, both on the calibration images."""
        x = np.concatenate(self.batches())
        batches = [x[i : i + 64] for i in range(0, len(x), 64)]
        if self.scales is None:
            self.scales = int8.calibrate(net, batches)
        else:
            for block, record in zip(net.blocks, self.scales, strict=True):
                if record is not None:
                    block.set_scales(record["x_scale"], record["h_scale"])
        self.agreement[form] = int8.gate_agreement(net, batches)

    def record(self, form: str) -> dict:
        """What the manifest records of a calibrated int8 dynamic graph: how it was quantized, its scales, the
        calibration set, the blocks kept in float32 and the gate agreement with the fp32 gated graph on the
        calibration images."""
        float_blocks = sorted(self.float_blocks())
        return {
            "tool": "gatekit",
            "version": __version__,
            "format": "gatekit int8 ops" if form == "native" else "QDQ (QuantizeLinear / DequantizeLinear)",
            "weights": "int8, per output channel, symmetric, [-127, 127]",
            "activations": "uint8, zero point 0: per block x_scale (block input) and h_scale (hidden activation)",
            "accumulation": (
                "int32" if form == "native" else "the runtime's (float convolutions over dequantized values)"
            ),
            "estimator": int8.ESTIMATOR,
            "estimator_detail": f"MSE-optimal clipping threshold / 255 over a {int8.HIST_BINS}-bin histogram of "
            "the fp32 gated graph's nonzero activations on the calibration images",
            "float32": ["stem", "gates", "biases", "residual sums", "pooling", "head"]
            + [f"block{i}" for i in float_blocks],
            "float_blocks": float_blocks,
            "scales": [r for r in self.scales if r is not None],
            "gate_agreement": self.agreement[form],
            "calibration": self.images_record(),
        }
