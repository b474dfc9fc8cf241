"""ONNX graphs of gated ResNets at chosen inner widths, built with `onnx` alone (torch-free, for devices).

A static gatekit graph is a ResNet whose blocks keep `w_b` of their `planes` inner channels, with every
BN folded into a conv bias. `gatekit profile` times the pieces of such graphs (the stem, each block at
each inner width, the head) on the target device, and checks its predictions on whole networks built
here. Weights are random (Kaiming-scaled): the latency of a dense float32 conv does not depend on them.

Native (dynamic) networks can choose each input's active channels from the input itself, at fixed widths, as
a trained network's gates do: channel 0 of every activation is a selector (the stem copies the image's first
channel into it, offset to stay positive; every block passes it on unchanged), and each block's gate maps
its pooled value to one of several random channel sets of the same size. Consecutive images then run
different channels, and the cache sees what a deployed dynamic graph makes it see.
"""

from __future__ import annotations

import math

import numpy as np

from gatekit import native_ops
from gatekit.models.arch import Architecture, BlockShape

OPSET = 17
NATIVE_DOMAIN = native_ops.DOMAIN
INPUT_NAME, OUTPUT_NAME = "input", "features"
# The selector (channel 0 of every activation) and the range of its pooled value that the gates spread
# their channel sets over: the stem adds SELECTOR_OFFSET to the normalised image's first channel.
SELECTOR_OFFSET = 3.0
SELECTOR_RANGE = (2.4, 3.6)
# int8 native blocks: the activation scales (uint8 steps up to about 4, past the selector's range and most of the
# post-ReLU-like activations; the latency of the int8 op does not depend on them)
INT8_X_SCALE = INT8_H_SCALE = 4.0 / 255


class _Builder:
    """Collects nodes and initialisers of one graph."""

    def __init__(self, seed: int = 0):
        self.nodes, self.inits, self.rng, self.n = [], [], np.random.default_rng(seed), 0
        self.native = False

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n}"

    def const(self, array: np.ndarray, prefix: str) -> str:
        from onnx import numpy_helper

        name = self.name(prefix)
        array = np.asarray(array, np.float32)  # a scalar stays one (shape [])
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array) if array.ndim else array, name))
        return name

    def conv(
        self,
        x: str,
        c_in: int,
        c_out: int,
        k: int,
        stride: int,
        pad: int,
        relu: bool,
        selector_bias: float | None = None,
    ) -> str:
        """selector_bias: output channel 0 is input channel 0 (the kernel's centre tap) plus this bias."""
        from onnx import helper

        w = self.rng.standard_normal((c_out, c_in, k, k)).astype(np.float32) * math.sqrt(2.0 / (c_out * k * k))
        b = self.rng.standard_normal(c_out).astype(np.float32) * 0.01
        if selector_bias is not None:
            w[0] = 0.0
            w[0, 0, k // 2, k // 2] = 1.0
            b[0] = selector_bias
        y = self.name("conv")
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, self.const(w, "w"), self.const(b, "b")],
                [y],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[pad] * 4,
            )
        )
        return self.relu(y) if relu else y

    def relu(self, x: str) -> str:
        from onnx import helper

        y = self.name("relu")
        self.nodes.append(helper.make_node("Relu", [x], [y]))
        return y

    def op(self, kind: str, inputs: list[str], **attrs) -> str:
        from onnx import helper

        y = self.name(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [y], **attrs))
        return y

    def int8_const(self, w: np.ndarray, prefix: str) -> tuple[str, str]:
        """Weights quantized as `gatekit export --precision int8` quantizes a dynamic graph's: int8 per output
        channel, symmetric, in [-127, 127]; the names of the int8 tensor and of its float32 scales."""
        from onnx import numpy_helper

        amax = np.abs(w.reshape(len(w), -1)).max(axis=1)
        scale = np.where(amax > 0, amax / 127, 1.0).astype(np.float32)
        q = np.clip(np.round(w / scale.reshape(-1, *[1] * (w.ndim - 1))), -127, 127).astype(np.int8)
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(q, name))
        return name, self.const(scale, prefix + "s")

    def native_block(
        self, x: str, b: BlockShape, active: int, masks: int = 1, reduction: int = 4, int8: bool = False
    ) -> str:
        """A block as the native op with its gate inside (gatekit.GatedBlockWithGate), `active` of its planes on
        (random channels, as real masks are): the gate computes its full size. A block with a projection shortcut
        carries it inside the node (gatekit.GatedBlockWithGateAndShortcut), as `gatekit export` writes it.
        int8: the int8 op (`...Int8`: int8 weights, and activation scales INT8_X_SCALE, INT8_H_SCALE).

        masks = 1: one fixed set for every input (G1 = 0 and g1 = 1 give hidden units of 1; a G2 row of +1 turns
        its channel on, -1 off). masks > 1: up to `masks` random sets of `active` channels, chosen per input by
        the pooled selector (channel 0 of x, which the block passes on unchanged; see the module's doc)."""
        from onnx import helper

        hidden = max(b.in_channels // reduction, 1)
        g1w, g1b, g2 = selector_gate(b.in_channels, b.planes, hidden, active, masks, self.rng)
        gate = [self.const(g1w, "g1"), self.const(g1b, "gb"), self.const(g2, "g2")]
        w1 = self.rng.standard_normal((b.planes, b.in_channels, 3, 3)) * math.sqrt(2.0 / (b.planes * 9))
        w2 = self.rng.standard_normal((b.planes, b.planes, 3, 3)) * math.sqrt(2.0 / (b.planes * 9))
        b2 = np.zeros(b.planes)
        if masks > 1:
            w2[0] = 0.0  # output channel 0 = relu(residual's channel 0) = the selector, unchanged
        if int8:
            weights = [
                *self.int8_const(w1, "w1"),
                self.const(np.zeros(b.planes), "b1"),
                *self.int8_const(w2, "w2"),
                self.const(b2, "b2"),
            ]
            scales = [self.const(np.array(INT8_X_SCALE), "xs"), self.const(np.array(INT8_H_SCALE), "hs")]
        else:
            weights = [
                self.const(w1, "w1"),
                self.const(np.zeros(b.planes), "b1"),
                self.const(w2, "w2"),
                self.const(b2, "b2"),
            ]
            scales = []
        suffix = "Int8" if int8 else ""
        if b.shortcut:
            ws = self.rng.standard_normal((b.planes, b.in_channels)) * math.sqrt(2.0 / b.planes)
            bs = self.rng.standard_normal(b.planes) * 0.01
            if masks > 1:  # the shortcut copies the selector (channel 0) unchanged
                ws[0], bs[0] = 0.0, 0.0
                ws[0, 0] = 1.0
            shortcut = (
                [*self.int8_const(ws, "ws"), self.const(bs, "bs")]
                if int8
                else [self.const(ws, "ws"), self.const(bs, "bs")]
            )
            kind, inputs = "GatedBlockWithGateAndShortcut" + suffix, [x, *gate, *weights, *shortcut, *scales]
        else:
            kind, inputs = "GatedBlockWithGate" + suffix, [x, *gate, *weights, x, *scales]
        y = self.name("gated")
        self.nodes.append(helper.make_node(kind, inputs, [y], domain=NATIVE_DOMAIN, stride=b.stride))
        self.native = True
        return y

    def block(self, x: str, b: BlockShape, inner: int) -> str:
        h = self.conv(x, b.in_channels, inner, 3, b.stride, 1, relu=True)
        h = self.conv(h, inner, b.planes, 3, 1, 1, relu=False)
        s = self.conv(x, b.in_channels, b.planes, 1, b.stride, 0, relu=False) if b.shortcut else x
        return self.relu(self.op("Add", [h, s]))

    def stem(self, x: str, arch: Architecture, selector: bool = False) -> str:
        bias = SELECTOR_OFFSET if selector else None
        if arch.stem == "cifar":
            return self.conv(x, 3, arch.widths[0], 3, 1, arch.padding, relu=True, selector_bias=bias)
        y = self.conv(x, 3, arch.widths[0], 7, 2, arch.padding, relu=True, selector_bias=bias)
        return self.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])

    def head(self, x: str) -> str:
        return self.op("Flatten", [self.op("GlobalAveragePool", [x])], axis=1)

    def model(self, x: str, shape: list[int], y: str, out_shape: list, doc: str):
        from onnx import TensorProto, checker, helper

        self.nodes.append(helper.make_node("Identity", [y], [OUTPUT_NAME]))
        graph = helper.make_graph(
            self.nodes,
            "gatekit_profile",
            [helper.make_tensor_value_info(x, TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, out_shape)],
            self.inits,
        )
        opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid(NATIVE_DOMAIN, 1)] if self.native else [])
        model = helper.make_model(graph, opset_imports=opsets, producer_name="gatekit", doc_string=doc)
        model.ir_version = 8
        if not self.native:  # the checker knows no schema for the custom op
            checker.check_model(model)
        return model


def network(
    arch: Architecture,
    inner_widths: list[int],
    batch: int = 1,
    seed: int = 0,
    native: bool = False,
    masks: int = 1,
    int8: bool = False,
):
    """A whole static network (stem, blocks at `inner_widths`, pooled features) as an onnx.ModelProto.
    native: every block is the native op (gate inside) with `inner_widths` of its planes active (a dynamic
    graph's cost at those per-input widths); masks > 1: each block's active set is one of up to `masks`
    random sets of that size, chosen per input image (see the module's doc). int8 (with native): the int8 op,
    the stem and head in float32, as an int8 dynamic export writes them."""
    blocks = arch.blocks()
    if len(inner_widths) != len(blocks):
        raise ValueError(f"{arch.arch} has {len(blocks)} blocks, got {len(inner_widths)} widths")
    for b, w in zip(blocks, inner_widths):
        if not (0 if native else 1) <= w <= b.planes:
            raise ValueError(f"block {b.index}: inner width {w} is outside 1..{b.planes}")
    g = _Builder(seed)
    y = g.stem(INPUT_NAME, arch, selector=native and masks > 1)
    for b, w in zip(blocks, inner_widths):
        y = g.native_block(y, b, int(w), masks, int8=int8) if native else g.block(y, b, int(w))
    y = g.head(y)
    kind = ("native int8 active" if int8 else "native active") if native else "static"
    return g.model(
        INPUT_NAME,
        [batch, 3, arch.input_size, arch.input_size],
        y,
        [batch, arch.widths[-1]],
        f"{kind} widths {list(inner_widths)}",
    )


def piece(
    arch: Architecture,
    part: str,
    inner: int | None = None,
    block: int | None = None,
    batch: int = 1,
    seed: int = 0,
    masks: int = 1,
    int8: bool = False,
):
    """One piece of the network as its own graph: part 'stem', 'head', 'block' (index `block`, inner width
    `inner`) or 'native' (that block as the native op, `inner` active, from up to `masks` sets chosen by the
    input's selector: feed it selector_activations; int8: the int8 op). Its input is the activation that piece
    sees inside the network."""
    g = _Builder(seed)
    blocks = arch.blocks()
    if part == "stem":
        y = g.stem(INPUT_NAME, arch)
        shape = [batch, 3, arch.input_size, arch.input_size]
        out = [batch, arch.widths[0], arch.stem_size, arch.stem_size]
    elif part == "head":
        last = blocks[-1]
        y = g.head(INPUT_NAME)
        shape, out = [batch, last.planes, last.size_out, last.size_out], [batch, last.planes]
    elif part in ("block", "native"):
        b = blocks[block]
        y = (
            g.block(INPUT_NAME, b, int(inner))
            if part == "block"
            else g.native_block(INPUT_NAME, b, int(inner), masks, int8=int8)
        )
        shape, out = [batch, b.in_channels, b.size_in, b.size_in], [batch, b.planes, b.size_out, b.size_out]
    else:
        raise ValueError(f"unknown piece {part!r}")
    return g.model(INPUT_NAME, shape, y, out, f"{part} {block if block is not None else ''} {inner or ''}".strip())


def input_shape(arch: Architecture, part: str, block: int | None = None, batch: int = 1) -> list[int]:
    if part in ("stem", "network"):
        return [batch, 3, arch.input_size, arch.input_size]
    blocks = arch.blocks()
    if part == "head":
        return [batch, blocks[-1].planes, blocks[-1].size_out, blocks[-1].size_out]
    b = blocks[block]
    return [batch, b.in_channels, b.size_in, b.size_in]


def selector_gate(in_channels: int, planes: int, hidden: int, active: int, masks: int, rng: np.random.Generator):
    """Weights (G1, g1, G2) of a folded gate, decision = (G2 @ relu(G1 @ pool(x) + g1) >= 0), that turns on
    exactly `active` of `planes` channels for every input.

    masks = 1: one random set (G1 = 0, g1 = 1, G2 rows +-1). masks > 1: the hidden units read the selector
    u = 1 + (hidden - 1) * (s - lo) / (hi - lo) of the pooled channel 0 (s; SELECTOR_RANGE = (lo, hi)): unit 0
    is a constant 1, unit j >= 1 is relu(u - j), so G2 @ h is, per channel, the piecewise-linear function
    through +-1 at u = 1..hidden (+1 where the set of that point has the channel). Between two points the
    sign changes half-way, so every u selects the set of its nearest point: always `active` channels (an
    input exactly half-way, which float arithmetic all but never produces, gets the two sets' union)."""
    sets = max(1, min(int(masks), hidden))
    choice = [rng.choice(planes, size=int(active), replace=False) for _ in range(sets)]
    values = -np.ones((planes, hidden))  # the sign at u = 1..hidden, point i uses set i mod `sets`
    for i in range(hidden):
        values[choice[i % sets], i] = 1.0
    g1w, g1b = np.zeros((hidden, in_channels)), np.ones(hidden)
    if sets == 1:
        return g1w, g1b, np.repeat(values[:, :1], hidden, axis=1)
    lo, hi = SELECTOR_RANGE
    scale = (hidden - 1) / (hi - lo)
    g1w[1:, 0] = scale  # unit j: relu(u - j) = relu(scale * s + 1 - scale * lo - j)
    g1b[1:] = 1.0 - scale * lo - np.arange(1, hidden)
    slopes = np.diff(values, axis=1)  # the function's slope on [j, j + 1], j = 1..hidden-1
    g2 = np.zeros((planes, hidden))
    g2[:, 0] = values[:, 0]  # the value at u <= 1
    g2[:, 1:] = np.diff(np.concatenate([np.zeros((planes, 1)), slopes], axis=1), axis=1)  # slope changes at knots
    return g1w, g1b, g2


def selector_activations(acts: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Copies of activations for a 'native' piece with masks > 1, channel 0 set to a constant plane: a
    selector value drawn across SELECTOR_RANGE per activation, so that consecutive calls run different sets."""
    out = []
    for a in acts:
        a = a.copy()
        a[:, 0] = rng.uniform(*SELECTOR_RANGE, size=(a.shape[0], 1, 1)).astype(a.dtype)
        out.append(a)
    return out
