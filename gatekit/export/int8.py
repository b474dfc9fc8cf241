"""The int8 dynamic graph: gated blocks with int8 convolutions, calibrated on real training images.

Each gated block's two 3x3 convolutions (and its projection shortcut) run in int8: weights quantized per output
channel, symmetric, in [-127, 127]; the block input x and the hidden activation h quantized to unsigned 8 bits
with zero point 0 (both follow a ReLU) with one scale each per block, `x_scale` and `h_scale`. The gate, the
biases (BatchNorm folded), the residual sum, the stem and the pooled head stay in float32.

Two forms, the same quantization:
- native: one `gatekit.*Int8` node per block (`GatedBlockWithGateInt8`, `...AndShortcutInt8`, or
  `GatedBlockInt8` fed a mask by standard ops), run by the op library; int32 accumulation, only the active
  channels computed. Its PyTorch module runs the op's integer semantics exactly as written down for the op
  (integer sums in float64, which holds them exactly), so the op library can be checked against it.
- qdq: standard ops only (QuantizeLinear / DequantizeLinear around Conv, the mask as a Mul), which any ONNX
  runtime or OpenVINO runs; every channel is computed and the inactive ones zeroed. Close to the op, not
  bitwise (float accumulation).

`x_scale` and `h_scale` are MSE-optimal: per tensor, the clipping threshold t that minimises the mean squared
error of uint8 quantization with scale t / 255 over the calibration images' activations of the fp32 gated
graph (a histogram of 2048 bins up to the largest value, exact zeros left out since every scale keeps them
exact; candidate thresholds every 8 bins from 1/16 of the maximum).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gatekit.export.graphs import (
    NATIVE_GATES,
    NATIVE_SHORTCUTS,
    DeployNet,
    FoldedGate,
    GraphSpec,
    NativeGatedBlock,
    StaticBlock,
    fold_conv_bn,
    folded_gate_mask,
    skipping_blocks,
)

INT8_FORMS = ("native", "qdq")  # the int8 dynamic graph's forms: gatekit's int8 ops, or standard ops
ESTIMATOR = "mse"
HIST_BINS = 2048
CANDIDATE_STEP = 8  # bins between candidate thresholds
MIN_THRESHOLD = HIST_BINS // 16  # the smallest candidate threshold, in bins


# ---------------------------------------------------------------------------------------------------------
# Quantization arithmetic: what the op computes, written with float tensors that hold its integers exactly.


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weights, float32 scale per output channel): symmetric, round half to even, in [-127, 127]. A channel
    whose weights are all zero gets scale 1 (its int8 weights are 0)."""
    w = w.detach().float()
    amax = w.abs().flatten(1).amax(dim=1)
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    q = torch.clamp(torch.round(w / scale.view(-1, *[1] * (w.dim() - 1))), -127, 127)
    return q.to(torch.int8), scale


def quantize_u8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """round(x / scale) clamped to [0, 255] (ONNX QuantizeLinear to uint8, zero point 0), as float."""
    return torch.clamp(torch.round(x / scale), 0, 255)


def _fma(acc: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """fmaf((float)acc, scale, bias) per channel (dim 1) of an integer-valued float64 tensor."""
    shape = (1, -1, 1, 1)
    a = acc.float().double()
    return (a * scale.double().view(shape) + bias.double().view(shape)).float()


def int8_block(
    x,
    mask,
    w1,
    w1_scale,
    b1,
    w2,
    w2_scale,
    b2,
    residual,
    x_scale,
    h_scale,
    stride: int,
    ws=None,
    ws_scale=None,
    bs=None,
) -> torch.Tensor:
    """The int8 gated block's semantics (the `gatekit.*Int8` ops): integer sums over the active channels,
    dequantized with the products of scales computed in float32. `residual` None: the projection shortcut
    (ws, ws_scale, bs) on the quantized input at the block's stride."""
    qx = quantize_u8(x, x_scale).double()
    acc1 = F.conv2d(qx, w1.double(), None, stride, 1)
    h = _fma(acc1, x_scale * w1_scale, b1)
    qh = quantize_u8(h, h_scale).double() * (mask != 0).double()[:, :, None, None]  # 0: off, any other value: on
    acc2 = F.conv2d(qh, w2.double(), None, 1, 1)
    if residual is None:
        accs = F.conv2d(qx, ws.double().reshape(ws.shape[0], -1, 1, 1), None, stride)
        residual = _fma(accs, x_scale * ws_scale, bs)
    return torch.relu(_fma(acc2, h_scale * w2_scale, b2) + residual)


# ---------------------------------------------------------------------------------------------------------
# ONNX: the native int8 ops, and QuantizeLinear / DequantizeLinear for the standard-ops form.


def _op_output(out, like):
    out.setType(like.type())
    return out


class GatedBlockInt8Op(torch.autograd.Function):
    """`gatekit.GatedBlockInt8(x, mask, W1, w1_scale, b1, W2, w2_scale, b2, residual, x_scale, h_scale; stride)`."""

    @staticmethod
    def forward(ctx, x, mask, w1, w1s, b1, w2, w2s, b2, residual, xs, hs, stride: int):
        return int8_block(x, mask, w1, w1s, b1, w2, w2s, b2, residual, xs, hs, stride)

    @staticmethod
    def symbolic(g, x, mask, w1, w1s, b1, w2, w2s, b2, residual, xs, hs, stride: int):
        return _op_output(
            g.op("gatekit::GatedBlockInt8", x, mask, w1, w1s, b1, w2, w2s, b2, residual, xs, hs, stride_i=stride),
            residual,
        )


class GatedBlockWithGateInt8Op(torch.autograd.Function):
    """`gatekit.GatedBlockWithGateInt8(x, G1, g1, G2, W1, w1_scale, b1, W2, w2_scale, b2, residual, x_scale,
    h_scale; stride)`: the gate in float32 on the float input, inside the node."""

    @staticmethod
    def forward(ctx, x, g1, gb1, g2, w1, w1s, b1, w2, w2s, b2, residual, xs, hs, stride: int):
        return int8_block(x, folded_gate_mask(x, g1, gb1, g2), w1, w1s, b1, w2, w2s, b2, residual, xs, hs, stride)

    @staticmethod
    def symbolic(g, x, g1, gb1, g2, w1, w1s, b1, w2, w2s, b2, residual, xs, hs, stride: int):
        return _op_output(
            g.op(
                "gatekit::GatedBlockWithGateInt8",
                x,
                g1,
                gb1,
                g2,
                w1,
                w1s,
                b1,
                w2,
                w2s,
                b2,
                residual,
                xs,
                hs,
                stride_i=stride,
            ),
            residual,
        )


class GatedBlockWithGateAndShortcutInt8Op(torch.autograd.Function):
    """`gatekit.GatedBlockWithGateAndShortcutInt8(x, G1, g1, G2, W1, w1_scale, b1, W2, w2_scale, b2, Ws, ws_scale,
    bs, x_scale, h_scale; stride)`: the projection shortcut in int8 inside the node too."""

    @staticmethod
    def forward(ctx, x, g1, gb1, g2, w1, w1s, b1, w2, w2s, b2, ws, wss, bs, xs, hs, stride: int):
        return int8_block(
            x, folded_gate_mask(x, g1, gb1, g2), w1, w1s, b1, w2, w2s, b2, None, xs, hs, stride, ws, wss, bs
        )

    @staticmethod
    def symbolic(g, x, g1, gb1, g2, w1, w1s, b1, w2, w2s, b2, ws, wss, bs, xs, hs, stride: int):
        out = g.op(
            "gatekit::GatedBlockWithGateAndShortcutInt8",
            x,
            g1,
            gb1,
            g2,
            w1,
            w1s,
            b1,
            w2,
            w2s,
            b2,
            ws,
            wss,
            bs,
            xs,
            hs,
            stride_i=stride,
        )
        n, _, h, w = x.type().varyingSizes()
        cout = w2.type().varyingSizes()[0]
        out.setType(
            x.type().with_sizes(
                [n, cout, None if h is None else (h - 1) // stride + 1, None if w is None else (w - 1) // stride + 1]
            )
        )
        return out


class QuantDequant(torch.autograd.Function):
    """DequantizeLinear(QuantizeLinear(x, scale, uint8 0), scale, uint8 0): x rounded onto the uint8 grid."""

    @staticmethod
    def forward(ctx, x, scale):
        return quantize_u8(x, scale) * scale

    @staticmethod
    def symbolic(g, x, scale):
        zero = g.op("Constant", value_t=torch.tensor(0, dtype=torch.uint8))
        q = g.op("QuantizeLinear", x, scale, zero)
        return _op_output(g.op("DequantizeLinear", q, scale, zero), x)


class DequantWeight(torch.autograd.Function):
    """DequantizeLinear(W int8, scale per output channel, axis 0): the int8 weights stay int8 in the file."""

    @staticmethod
    def forward(ctx, w, scale):
        return w.float() * scale.view(-1, *[1] * (w.dim() - 1))

    @staticmethod
    def symbolic(g, w, scale):
        zero = g.op("Constant", value_t=torch.zeros(w.type().varyingSizes()[0], dtype=torch.int8))
        out = g.op("DequantizeLinear", w, scale, zero, axis_i=0)
        out.setType(w.type().with_dtype(torch.float32))
        return out


# ---------------------------------------------------------------------------------------------------------
# The block.


class Int8GatedBlock(nn.Module):
    """A gated BasicBlock in int8 over its used `channels` (those some calibration image turned on).

    form "native": one gatekit int8 node (its gate inside with gate "op", its projection shortcut too with
    shortcut "op"; otherwise the gate, or the shortcut, in standard ops before the node). form "qdq": standard
    ops, whole convolutions with the inactive channels zeroed. The float weights are kept beside the int8 ones
    (not exported): `hidden` and `float_forward` are the fp32 block the scales are calibrated on."""

    def __init__(self, block, channels: torch.Tensor, form: str = "native", gate: str = "op", shortcut: str = "op"):
        super().__init__()
        if form not in INT8_FORMS:
            raise ValueError(f"unknown int8 block form {form!r}: choose one of {', '.join(INT8_FORMS)}")
        if gate not in NATIVE_GATES or shortcut not in NATIVE_SHORTCUTS:
            raise ValueError(f"unknown gate/shortcut placement {gate!r}/{shortcut!r}")
        self.form, self.stride = form, block.stride
        w1, b1 = fold_conv_bn(block.conv1, block.bn1.gated)
        w2, b2 = fold_conv_bn(block.conv2, block.bn2.gated)
        self.float_weights = (w1[channels].contiguous(), b1[channels].contiguous(), w2[:, channels].contiguous(), b2)
        q1, s1 = quantize_weight(self.float_weights[0])
        q2, s2 = quantize_weight(self.float_weights[2])
        for name, t in (
            ("w1", q1),
            ("w1_scale", s1),
            ("b1", self.float_weights[1]),
            ("w2", q2),
            ("w2_scale", s2),
            ("b2", b2),
            ("x_scale", torch.tensor(1.0)),
            ("h_scale", torch.tensor(1.0)),
        ):
            self.register_buffer(name, t.clone())
        self.shortcut_float = None
        self.has_shortcut = block.downsample is not None
        if self.has_shortcut:
            conv, bn = block.downsample[0], block.downsample[1]
            ws, bs = fold_conv_bn(conv, bn)
            if tuple(conv.stride) != (self.stride, self.stride) or tuple(conv.kernel_size) != (1, 1):
                raise ValueError("the int8 block's projection shortcut is a 1x1 conv with the block's stride")
            self.shortcut_float = (ws, bs)
            qs, ss = quantize_weight(ws)
            self.register_buffer("ws", qs)
            self.register_buffer("ws_scale", ss)
            self.register_buffer("bs", bs.clone())
        self.gate_in_op = form == "native" and gate == "op"
        self.shortcut_in_op = self.gate_in_op and shortcut == "op" and self.has_shortcut
        self.gate = FoldedGate(block.gate, channels)

    @property
    def op_type(self) -> str | None:
        """The gatekit op this block exports to (None: standard ops)."""
        if self.form != "native":
            return None
        return (
            "GatedBlockWithGateAndShortcutInt8"
            if self.shortcut_in_op
            else "GatedBlockWithGateInt8"
            if self.gate_in_op
            else "GatedBlockInt8"
        )

    def set_scales(self, x_scale: float, h_scale: float) -> None:
        self.x_scale.fill_(float(x_scale))
        self.h_scale.fill_(float(h_scale))

    # the fp32 block (calibration and gate agreement)
    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        w1, b1, _, _ = self.float_weights
        return torch.relu(F.conv2d(x, w1, b1, self.stride, 1)) * self.gate(x)[:, :, None, None]

    def float_forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, w2, b2 = self.float_weights
        res = x if self.shortcut_float is None else F.conv2d(x, *self.shortcut_float, self.stride)
        return torch.relu(F.conv2d(self.hidden(x), w2, b2, 1, 1) + res)

    # the int8 block
    def _qdq_residual(self, x, xd=None):
        if not self.has_shortcut:
            return x
        xd = QuantDequant.apply(x, self.x_scale) if xd is None else xd
        return F.conv2d(xd, DequantWeight.apply(self.ws, self.ws_scale), self.bs, self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "qdq":
            xd = QuantDequant.apply(x, self.x_scale)
            h = torch.relu(F.conv2d(xd, DequantWeight.apply(self.w1, self.w1_scale), self.b1, self.stride, 1))
            # h onto its grid, masked, and onto the grid again (exact: a masked grid value is a grid value): the Q/DQ
            # pairs on both sides of the Mul let the runtimes run conv1 (ORT, OpenVINO) and conv2 (OpenVINO) in int8
            h = QuantDequant.apply(h, self.h_scale) * self.gate(x)[:, :, None, None]
            h = QuantDequant.apply(h, self.h_scale)
            out = F.conv2d(h, DequantWeight.apply(self.w2, self.w2_scale), self.b2, 1, 1)
            return torch.relu(out + self._qdq_residual(x, xd))
        q = (self.w1, self.w1_scale, self.b1, self.w2, self.w2_scale, self.b2)
        g = self.gate
        if self.shortcut_in_op:
            return GatedBlockWithGateAndShortcutInt8Op.apply(
                x,
                g.fc1.weight,
                g.fc1.bias,
                g.fc2.weight,
                *q,
                self.ws,
                self.ws_scale,
                self.bs,
                self.x_scale,
                self.h_scale,
                self.stride,
            )
        if self.gate_in_op:
            return GatedBlockWithGateInt8Op.apply(
                x,
                g.fc1.weight,
                g.fc1.bias,
                g.fc2.weight,
                *q,
                self._qdq_residual(x),
                self.x_scale,
                self.h_scale,
                self.stride,
            )
        return GatedBlockInt8Op.apply(x, g(x), *q, self._qdq_residual(x), self.x_scale, self.h_scale, self.stride)


def int8_op_types(net: nn.Module) -> list[str]:
    """The gatekit int8 op types a deploy module exports to, in block order, each once."""
    types = []
    for m in net.modules():
        t = m.op_type if isinstance(m, (Int8GatedBlock, NativeGatedBlock)) else None
        if t and t not in types:
            types.append(t)
    return types


def build_int8_graph(
    model,
    channels: list[torch.Tensor],
    head: nn.Linear | None,
    form: str,
    *,
    min_size: int = 0,
    native_gate: str = "op",
    native_shortcut: str = "op",
    float_blocks: frozenset[int] = frozenset(),
) -> tuple[DeployNet, GraphSpec]:
    """The int8 dynamic graph over the used `channels` of each block, scales unset (1.0: `calibrate` sets them).

    form "native": blocks whose output is at least `min_size` px a side are gatekit int8 ops (they skip inactive
    channels), the others standard-ops int8 blocks; "qdq": every block in standard ops. Blocks in `float_blocks`
    stay float32 (the fp32 native op, or a masked float block in the qdq form)."""
    if form not in INT8_FORMS:
        raise ValueError(f"unknown int8 form {form!r}")
    if len(channels) != len(model.blocks):
        raise ValueError(f"the int8 dynamic graph needs the used channels of each of the {len(model.blocks)} blocks")
    model = model.eval()
    skip = skipping_blocks(model, min_size) if form == "native" else [False] * len(model.blocks)
    with torch.no_grad():
        blocks: list[nn.Module] = []
        for i, (b, ch, s) in enumerate(zip(model.blocks, channels, skip)):
            if i in float_blocks:
                blocks.append(
                    NativeGatedBlock(b, ch, native_gate, native_shortcut)
                    if s
                    else StaticBlock(b, "gated", ch, gated=True)
                )
            else:
                blocks.append(Int8GatedBlock(b, ch, "native" if s else "qdq", native_gate, native_shortcut))
        net = DeployNet(model, blocks, head).eval()
    return net, GraphSpec("dynamic", [len(c) for c in channels], [c.tolist() for c in channels], skip)


# ---------------------------------------------------------------------------------------------------------
# Calibration and the gate agreement.


def _walk(net: DeployNet, x: torch.Tensor, int8: bool):
    """Yields (block index, block, block input) through the net: int8 blocks as built (int8) or as their fp32
    twin (not int8); float blocks as they are."""
    x = torch.relu(net.stem(x))
    if net.pool is not None:
        x = net.pool(x)
    for i, block in enumerate(net.blocks):
        yield i, block, x
        x = block(x) if int8 or not isinstance(block, Int8GatedBlock) else block.float_forward(x)


def mse_threshold(hist: np.ndarray, amax: float, levels: int = 255) -> float:
    """The clipping threshold t minimising sum(count * (v - q_t(v))^2) over a histogram of positive values on
    [0, amax], q_t rounding onto `levels` steps of t / levels and clipping at t (bin centres stand for values)."""
    bins = len(hist)
    if amax <= 0 or not hist.any():
        return 1.0
    centres = (np.arange(bins) + 0.5) * (amax / bins)
    ks = np.arange(min(MIN_THRESHOLD, bins), bins + 1, CANDIDATE_STEP)
    if ks[-1] != bins:
        ks = np.append(ks, bins)
    t = ks * (amax / bins)
    step = (t / levels)[:, None]
    q = np.clip(np.round(centres[None, :] / step), 0, levels) * step
    err = (hist[None, :] * (centres[None, :] - q) ** 2).sum(axis=1)
    return float(t[int(np.argmin(err))])


def calibrate(net: DeployNet, batches: list[np.ndarray]) -> list[dict | None]:
    """Sets every int8 block's x_scale and h_scale from the fp32 activations of the calibration batches (real
    training images): MSE-optimal thresholds (mse_threshold) / 255. Returns per block its record (None for a
    float block): scales, the largest value seen and the share of nonzero values the threshold clips."""
    blocks = [i for i, b in enumerate(net.blocks) if isinstance(b, Int8GatedBlock)]
    amax = {i: [0.0, 0.0] for i in blocks}

    def activations():
        with torch.inference_mode():
            for xb in batches:
                for i, block, x in _walk(net, torch.from_numpy(xb), int8=False):
                    if i in amax:
                        yield i, x, block.hidden(x)

    for i, x, h in activations():
        amax[i] = [max(amax[i][0], float(x.max())), max(amax[i][1], float(h.max()))]
    hists = {i: [np.zeros(HIST_BINS), np.zeros(HIST_BINS)] for i in blocks}
    for i, x, h in activations():
        for k, t in enumerate((x, h)):
            v = t[t > 0].numpy()
            if amax[i][k] > 0 and v.size:
                hists[i][k] += np.histogram(v, bins=HIST_BINS, range=(0.0, amax[i][k]))[0]
    records: list[dict | None] = [None] * len(net.blocks)
    for i in blocks:
        ts = [mse_threshold(hists[i][k], amax[i][k]) for k in range(2)]
        net.blocks[i].set_scales(ts[0] / 255, ts[1] / 255)
        edges = [np.linspace(0, amax[i][k], HIST_BINS + 1) for k in range(2)]
        clipped = [float(hists[i][k][edges[k][:-1] >= ts[k]].sum() / max(hists[i][k].sum(), 1)) for k in range(2)]
        records[i] = {
            "block": i,
            "x_scale": float(net.blocks[i].x_scale),
            "h_scale": float(net.blocks[i].h_scale),
            "x_max": amax[i][0],
            "h_max": amax[i][1],
            "x_clipped": clipped[0],
            "h_clipped": clipped[1],
        }
    return records


def gate_agreement(net: DeployNet, batches: list[np.ndarray]) -> dict:
    """How often the int8 graph's gate decisions equal the fp32 gated graph's on the same images: per block,
    over all decisions (images x used channels), and the share of images whose every decision agrees. The fp32
    graph is the int8 blocks' float twins (the same used channels; the gate reads each graph's own input)."""
    n_blocks = len(net.blocks)
    agree, total, per_image = np.zeros(n_blocks), np.zeros(n_blocks), []
    with torch.inference_mode():
        for xb in batches:
            x = torch.from_numpy(xb)
            masks = {}
            for int8 in (False, True):
                for i, block, bx in _walk(net, x, int8):
                    masks.setdefault(i, []).append(block.gate(bx))
            same = torch.ones(len(xb), dtype=torch.bool)
            for i, (mf, mq) in masks.items():
                eq = mf == mq
                agree[i] += float(eq.sum())
                total[i] += eq.numel()
                same &= eq.all(dim=1)
            per_image.append(same)
    images = torch.cat(per_image)
    return {
        "images": int(len(images)),
        "decisions": float(agree.sum() / max(total.sum(), 1)),
        "per_block": [float(a / t) if t else 1.0 for a, t in zip(agree, total)],
        "images_all_agree": float(images.float().mean()) if len(images) else 1.0,
    }
