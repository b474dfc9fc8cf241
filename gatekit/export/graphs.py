"""Deployable PyTorch modules built from an eval-mode GatedResNet, with every BN folded into its conv.

- dense:   the dense path (dense block BNs).
- static:  the gated path with channels physically removed and no gates (an approximation).
- hybrid:  the same removal, with the gates kept over the remaining channels and applied as a mask;
           it equals the gated path whenever the removed channels are off (they were never on over
           the calibration set).
- dynamic: per-input channel skipping. Native form: one `gatekit.GatedBlock` node per block, a fused op
           (native/) that skips each sample's inactive channels in weights packed once at load.
           Standard-ops forms (the fallback): each block gathers the conv1 filters and conv2 input
           slices of the active channels (the union over the batch, plus a per-sample mask), so
           inactive channels are not computed (NonZero, Gather, Conv; or im2col + MatMul).
Stem and shortcut BNs are shared by both paths and fold identically. These modules are what the
exporters trace and what verification compares the runtimes against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gatekit.models import GatedResNet
from gatekit.models.gate import ChannelGate

GRAPHS = ("dense", "static", "hybrid", "dynamic")


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias of conv followed by eval-mode BN, as one conv."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale.view(-1, 1, 1, 1)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return weight.detach().clone(), bias.detach().clone()


def folded_gate_mask(x: torch.Tensor, g1: torch.Tensor, gb1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """The eval-mode gate's decision with its BN folded into the first FC: (G2 relu(G1 mean_hw(x) + g1) >= 0)."""
    return (F.linear(torch.relu(F.linear(x.mean(dim=(2, 3)), g1, gb1)), g2) >= 0).to(x.dtype)


class FoldedGate(nn.Module):
    """The eval-mode gate with its BN folded into fc1, restricted to the given channels.

    Outputs one logit per kept channel (a grouped gate repeats its decision's row), and the mask
    `logit >= 0`.
    """

    def __init__(self, gate: ChannelGate, channels: torch.Tensor):
        super().__init__()
        bn = gate.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        self.fc1 = nn.Linear(gate.in_channels, gate.hidden)
        self.fc1.weight.data = (gate.fc1.weight * scale[:, None]).detach().clone()
        self.fc1.bias.data = (bn.bias - bn.running_mean * scale).detach().clone()
        self.fc2 = nn.Linear(gate.hidden, len(channels), bias=False)
        self.fc2.weight.data = gate.fc2.weight[channels // gate.group].detach().clone()

    @property
    def macs(self) -> int:
        return self.fc1.in_features * self.fc1.out_features + self.fc2.in_features * self.fc2.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return folded_gate_mask(x, self.fc1.weight, self.fc1.bias, self.fc2.weight)


class Shortcut(nn.Module):
    def __init__(self, block):
        super().__init__()
        self.conv: nn.Conv2d | None = None
        if block.downsample is not None:
            conv, bn = block.downsample[0], block.downsample[1]
            w, b = fold_conv_bn(conv, bn)
            self.conv = nn.Conv2d(conv.in_channels, conv.out_channels, 1, conv.stride, bias=True)
            self.conv.weight.data, self.conv.bias.data = w, b

    def forward(self, x):
        return x if self.conv is None else self.conv(x)


class StaticBlock(nn.Module):
    """A BasicBlock whose inner width is `channels` (a subset of conv1's filters), optionally gated."""

    def __init__(self, block, path: str, channels: torch.Tensor, gated: bool):
        super().__init__()
        bn1 = block.bn1.dense if path == "dense" else block.bn1.gated
        bn2 = block.bn2.dense if path == "dense" else block.bn2.gated
        w1, b1 = fold_conv_bn(block.conv1, bn1)
        w2, b2 = fold_conv_bn(block.conv2, bn2)
        k = len(channels)
        self.conv1 = nn.Conv2d(block.in_channels, k, 3, block.stride, 1)
        self.conv1.weight.data, self.conv1.bias.data = w1[channels].clone(), b1[channels].clone()
        self.conv2 = nn.Conv2d(k, block.planes, 3, 1, 1)
        self.conv2.weight.data, self.conv2.bias.data = w2[:, channels].clone(), b2
        self.shortcut = Shortcut(block)
        self.gate = FoldedGate(block.gate, channels) if gated else None
        self.register_buffer("channels", channels.clone(), persistent=False)

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        if self.gate is not None:
            h = h * self.gate(x)[:, :, None, None]
        return torch.relu(self.conv2(h) + self.shortcut(x))


class DynamicBlock(nn.Module):
    """Per-input channel skipping: only the active channels' conv1 filters and conv2 slices run."""

    def __init__(self, block):
        super().__init__()
        w1, b1 = fold_conv_bn(block.conv1, block.bn1.gated)
        w2, b2 = fold_conv_bn(block.conv2, block.bn2.gated)
        self.stride = block.stride
        self.register_buffer("w1", w1)
        self.register_buffer("b1", b1)
        self.register_buffer("w2", w2)
        self.register_buffer("b2", b2)
        self.shortcut = Shortcut(block)
        self.gate = FoldedGate(block.gate, torch.arange(block.planes))

    def forward(self, x):
        mask = self.gate(x)  # (N, planes)
        union = mask.amax(dim=0) > 0
        # keep the graph non-empty when no channel is on anywhere: channel 0 is computed and masked to 0
        none_on = torch.logical_not(union.any()).reshape(1)
        union = torch.cat([torch.logical_or(union[:1], none_on), union[1:]])
        idx = torch.nonzero(union).reshape(-1)
        h = torch.relu(F.conv2d(x, self.w1.index_select(0, idx), self.b1.index_select(0, idx), self.stride, 1))
        h = h * mask.index_select(1, idx)[:, :, None, None]
        out = F.conv2d(h, self.w2.index_select(1, idx), self.b2, 1, 1)
        return torch.relu(out + self.shortcut(x))


def im2col3x3(x: torch.Tensor, stride: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, 9 C, Ho Wo), tap-major: rows t*C .. t*C + C - 1 hold tap t = 3 i + j.

    Built from a pad and nine strided slices, so the channel count may be data-dependent.
    """
    n, _, h, w = x.shape
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    xp = F.pad(x, (1, 1, 1, 1))
    taps = [
        xp[:, :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
        for i in range(3)
        for j in range(3)
    ]
    return torch.cat(taps, dim=1).reshape(n, -1, ho * wo)


class DynamicMatmulBlock(nn.Module):
    """Per-input channel skipping that OpenVINO's CPU plugin compiles: each gated 3x3 conv becomes
    im2col + MatMul with gathered weight rows (conv1) or columns (conv2), because the plugin refuses a
    Conv whose weights have a data-dependent shape. Same maths and the same skipped MACs as
    DynamicBlock; the im2col copies cost extra time (measured by `gatekit bench`)."""

    def __init__(self, block):
        super().__init__()
        w1, b1 = fold_conv_bn(block.conv1, block.bn1.gated)
        w2, b2 = fold_conv_bn(block.conv2, block.bn2.gated)
        self.stride = block.stride
        self.register_buffer("w1", w1.permute(0, 2, 3, 1).reshape(w1.shape[0], -1).contiguous())  # (C, 9 Cin)
        self.register_buffer("b1", b1)
        self.register_buffer("w2", w2.permute(0, 2, 3, 1).reshape(w2.shape[0], 9, -1).contiguous())  # (Cout, 9, C)
        self.register_buffer("b2", b2)
        self.shortcut = Shortcut(block)
        self.gate = FoldedGate(block.gate, torch.arange(block.planes))

    def forward(self, x):
        n = x.shape[0]
        mask = self.gate(x)
        union = mask.amax(dim=0) > 0
        none_on = torch.logical_not(union.any()).reshape(1)
        union = torch.cat([torch.logical_or(union[:1], none_on), union[1:]])
        idx = torch.nonzero(union).reshape(-1)
        cols = im2col3x3(x, self.stride)
        ho = (x.shape[2] - 1) // self.stride + 1
        wo = (x.shape[3] - 1) // self.stride + 1
        h = torch.matmul(self.w1.index_select(0, idx), cols) + self.b1.index_select(0, idx)[:, None]
        h = torch.relu(h) * mask.index_select(1, idx)[:, :, None]
        cols2 = im2col3x3(h.reshape(n, -1, ho, wo), 1)
        w2 = self.w2.index_select(2, idx).reshape(self.w2.shape[0], -1)
        out = (torch.matmul(w2, cols2) + self.b2[:, None]).reshape(n, -1, ho, wo)
        return torch.relu(out + self.shortcut(x))


class GatedBlockOp(torch.autograd.Function):
    """`gatekit.GatedBlock(x, mask, W1, b1, W2, b2, residual; stride)`: the native fused op of native/ (its
    contract in native/README.md). Traced to ONNX as one node of domain `gatekit`; in PyTorch it runs
    the exact masked form it stands for: relu(conv2(mask * relu(conv1(x) + b1)) + b2 + residual)."""

    @staticmethod
    def forward(ctx, x, mask, w1, b1, w2, b2, residual, stride: int):
        h = torch.relu(F.conv2d(x, w1, b1, stride, 1)) * mask[:, :, None, None]
        return torch.relu(F.conv2d(h, w2, b2, 1, 1) + residual)

    @staticmethod
    def symbolic(g, x, mask, w1, b1, w2, b2, residual, stride: int):
        out = g.op("gatekit::GatedBlock", x, mask, w1, b1, w2, b2, residual, stride_i=stride)
        out.setType(residual.type())  # the output has the residual's (static) shape
        return out


class GatedBlockWithGateOp(torch.autograd.Function):
    """`gatekit.GatedBlockWithGate(x, G1, g1, G2, W1, b1, W2, b2, residual; stride)`: the native op with the block's
    gate inside (native/README.md): mask = (G2 relu(G1 mean_hw(x) + g1) >= 0), then GatedBlock. One node instead of
    the gate's seven standard ops; in PyTorch it runs the exact form it stands for."""

    @staticmethod
    def forward(ctx, x, g1, gb1, g2, w1, b1, w2, b2, residual, stride: int):
        return GatedBlockOp.forward(ctx, x, folded_gate_mask(x, g1, gb1, g2), w1, b1, w2, b2, residual, stride)

    @staticmethod
    def symbolic(g, x, g1, gb1, g2, w1, b1, w2, b2, residual, stride: int):
        out = g.op("gatekit::GatedBlockWithGate", x, g1, gb1, g2, w1, b1, w2, b2, residual, stride_i=stride)
        out.setType(residual.type())
        return out


class GatedBlockWithGateAndShortcutOp(torch.autograd.Function):
    """`gatekit.GatedBlockWithGateAndShortcut(x, G1, g1, G2, W1, b1, W2, b2, Ws, bs; stride)`: GatedBlockWithGate
    whose residual is the block's projection shortcut, a 1x1 conv with the block's stride (BatchNorm folded),
    computed inside the node (native/README.md). On OpenVINO a shortcut conv between two ops costs two layout
    reorders besides the conv; in PyTorch it runs the exact form it stands for."""

    @staticmethod
    def forward(ctx, x, g1, gb1, g2, w1, b1, w2, b2, ws, bs, stride: int):
        residual = F.conv2d(x, ws, bs, stride)
        return GatedBlockOp.forward(ctx, x, folded_gate_mask(x, g1, gb1, g2), w1, b1, w2, b2, residual, stride)

    @staticmethod
    def symbolic(g, x, g1, gb1, g2, w1, b1, w2, b2, ws, bs, stride: int):
        out = g.op("gatekit::GatedBlockWithGateAndShortcut", x, g1, gb1, g2, w1, b1, w2, b2, ws, bs, stride_i=stride)
        n, _, h, w = x.type().varyingSizes()
        cout = w2.type().varyingSizes()[0]
        out.setType(
            x.type().with_sizes(
                [n, cout, None if h is None else (h - 1) // stride + 1, None if w is None else (w - 1) // stride + 1]
            )
        )
        return out


NATIVE_GATES = ("op", "graph")  # where a native block's gate runs: inside the op, or in standard ops before it
NATIVE_SHORTCUTS = ("op", "graph")  # where a projection shortcut runs (gate "op" only): inside the op, or a Conv node


class NativeGatedBlock(nn.Module):
    """Per-input channel skipping by the native op: conv1 and conv2 of the active channels inside one node (per-sample
    masks, no union over the batch). `gate` "op": the gate runs inside the node (`gatekit.GatedBlockWithGate`);
    "graph": in standard ops that feed the mask to `gatekit.GatedBlock`. `shortcut` "op" (with the gate in the op):
    a projection shortcut runs inside the node too (`gatekit.GatedBlockWithGateAndShortcut`); "graph": a Conv node.
    Channels that no calibration image used are removed first, so the op skips only data-dependent ones."""

    def __init__(self, block, channels: torch.Tensor, gate: str = "op", shortcut: str = "op"):
        super().__init__()
        w1, b1 = fold_conv_bn(block.conv1, block.bn1.gated)
        w2, b2 = fold_conv_bn(block.conv2, block.bn2.gated)
        self.stride = block.stride
        self.register_buffer("w1", w1[channels].contiguous())
        self.register_buffer("b1", b1[channels].contiguous())
        self.register_buffer("w2", w2[:, channels].contiguous())
        self.register_buffer("b2", b2)
        self.shortcut = Shortcut(block)
        if gate not in NATIVE_GATES:
            raise ValueError(f"unknown native gate placement {gate!r}: choose one of {', '.join(NATIVE_GATES)}")
        if shortcut not in NATIVE_SHORTCUTS:
            raise ValueError(
                f"unknown native shortcut placement {shortcut!r}: choose one of {', '.join(NATIVE_SHORTCUTS)}"
            )
        self.gate_in_op = gate == "op"
        conv = self.shortcut.conv
        # the op's shortcut samples x at the block's stride, as ResNet's projection does
        self.shortcut_in_op = (
            self.gate_in_op
            and shortcut == "op"
            and conv is not None
            and tuple(conv.stride) == (self.stride, self.stride)
        )
        self.gate = FoldedGate(block.gate, channels)

    @property
    def op_type(self) -> str:
        """The gatekit op this block exports to."""
        return (
            "GatedBlockWithGateAndShortcut"
            if self.shortcut_in_op
            else "GatedBlockWithGate"
            if self.gate_in_op
            else "GatedBlock"
        )

    def forward(self, x):
        if self.shortcut_in_op:
            g, conv = self.gate, self.shortcut.conv
            return GatedBlockWithGateAndShortcutOp.apply(
                x,
                g.fc1.weight,
                g.fc1.bias,
                g.fc2.weight,
                self.w1,
                self.b1,
                self.w2,
                self.b2,
                conv.weight,
                conv.bias,
                self.stride,
            )
        if self.gate_in_op:
            g = self.gate
            return GatedBlockWithGateOp.apply(
                x,
                g.fc1.weight,
                g.fc1.bias,
                g.fc2.weight,
                self.w1,
                self.b1,
                self.w2,
                self.b2,
                self.shortcut(x),
                self.stride,
            )
        return GatedBlockOp.apply(x, self.gate(x), self.w1, self.b1, self.w2, self.b2, self.shortcut(x), self.stride)


def native_op_types(net: nn.Module) -> list[str]:
    """The gatekit op types a deploy module's native blocks export to, in block order, each once."""
    types = []
    for m in net.modules():
        if isinstance(m, NativeGatedBlock) and m.op_type not in types:
            types.append(m.op_type)
    return types


class DeployNet(nn.Module):
    """Stem, blocks, global average pool, and optionally a linear head (logits instead of features)."""

    def __init__(self, model: GatedResNet, blocks: list[nn.Module], head: nn.Linear | None = None):
        super().__init__()
        w, b = fold_conv_bn(model.stem_conv, model.stem_bn)
        c = model.stem_conv
        self.stem = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding)
        self.stem.weight.data, self.stem.bias.data = w, b
        self.pool = model.stem_pool if isinstance(model.stem_pool, nn.MaxPool2d) else None
        self.blocks = nn.ModuleList(blocks)
        self.head = head

    def forward(self, x):
        x = torch.relu(self.stem(x))
        if self.pool is not None:
            x = self.pool(x)
        for block in self.blocks:
            x = block(x)
        x = x.mean(dim=(2, 3))
        return x if self.head is None else self.head(x)


@dataclass
class GraphSpec:
    kind: str
    widths: list[int]  # inner width per block as built (dynamic: the full width, skipped per input)
    channels: list[list[int]]  # kept channel indices per block (static, hybrid)
    skipping: list[bool] | None = None  # dynamic: which blocks skip inactive channels (the others mask them)


def skipping_blocks(model: GatedResNet, min_size: int) -> list[bool]:
    """Which blocks of a dynamic graph skip inactive channels: those whose output is at least
    `min_size` pixels on a side (0: every block). Skipping copies the active channels' weights on
    every call, which pays only where each weight does enough work (large feature maps); the other
    blocks run their full convs with constant weights and zero the inactive channels (exact too)."""
    return model.cfg.architecture.skipping_blocks(min_size)


def build_graph(
    model: GatedResNet,
    kind: str,
    channels: list[torch.Tensor] | None = None,
    head: nn.Linear | None = None,
    dynamic_form: str = "conv",
    dynamic_min_size: int = 0,
    native_gate: str = "op",
    native_shortcut: str = "op",
) -> tuple[DeployNet, GraphSpec]:
    """The deploy module of graph `kind`. static and hybrid need the kept channels per block.

    `dynamic_form` picks the dynamic graph's formulation: "native" (one `gatekit.GatedBlock` node per block,
    run by the native op library; needs the used `channels`), or in standard ops "conv" (NonZero + Gather +
    Conv, for ONNX Runtime and TensorRT) or "matmul" (im2col + MatMul, which OpenVINO's CPU plugin compiles).
    `dynamic_min_size`: only blocks whose output side is at least this skip channels (skipping_blocks).
    `native_gate`: the native form's gates inside its nodes ("op") or in standard ops before them ("graph").
    `native_shortcut`: with gates in the nodes, projection shortcuts inside them too ("op") or as Conv nodes ("graph").
    """
    if kind not in GRAPHS:
        raise ValueError(f"unknown graph {kind!r}")
    model = model.eval()
    with torch.no_grad():
        if kind == "dense":  # `channels`: a pruned dense encoder's kept channels (gatekit.train.torch_pruning)
            kept = channels if channels is not None else [torch.arange(b.planes) for b in model.blocks]
            blocks = [StaticBlock(b, "dense", ch, gated=False) for b, ch in zip(model.blocks, kept)]
            spec = GraphSpec(
                kind, [len(c) for c in kept], [c.tolist() for c in channels] if channels is not None else []
            )
        elif kind == "dynamic" and dynamic_form == "native":
            if channels is None or len(channels) != len(model.blocks):
                raise ValueError(
                    f"the native dynamic graph needs the used channels of each of the {len(model.blocks)} blocks"
                )
            skip = skipping_blocks(model, dynamic_min_size)
            blocks = [
                NativeGatedBlock(b, ch, native_gate, native_shortcut) if s else StaticBlock(b, "gated", ch, gated=True)
                for b, ch, s in zip(model.blocks, channels, skip)
            ]
            spec = GraphSpec(kind, [len(c) for c in channels], [c.tolist() for c in channels], skip)
        elif kind == "dynamic":
            block_type = {"conv": DynamicBlock, "matmul": DynamicMatmulBlock}[dynamic_form]
            skip = skipping_blocks(model, dynamic_min_size)
            blocks = [
                block_type(b) if s else StaticBlock(b, "gated", torch.arange(b.planes), gated=True)
                for b, s in zip(model.blocks, skip)
            ]
            spec = GraphSpec(kind, [b.planes for b in model.blocks], [], skip)
        else:
            if channels is None or len(channels) != len(model.blocks):
                raise ValueError(f"{kind} needs kept channels for each of the {len(model.blocks)} blocks")
            blocks = [StaticBlock(b, "gated", ch, gated=kind == "hybrid") for b, ch in zip(model.blocks, channels)]
            spec = GraphSpec(kind, [len(c) for c in channels], [c.tolist() for c in channels])
        net = DeployNet(model, blocks, head).eval()
    return net, spec
