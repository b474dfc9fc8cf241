"""ONNX graphs of gated ResNets at chosen inner widths, built with `onnx` alone (torch-free, for devices).

A static gatekit graph is a ResNet whose blocks keep `w_b` of their `planes` inner channels, with every
BN folded into a conv bias. `gatekit profile` times the pieces of such graphs (the stem, each block at
each inner width, the head) on the target device, and checks its predictions on whole networks built
here. Weights are random (Kaiming-scaled): the latency of a dense float32 conv does not depend on them.
"""

from __future__ import annotations

import math

import numpy as np

from gatekit.models.arch import Architecture, BlockShape

OPSET = 17
NATIVE_DOMAIN = "gatekit"  # gatekit's native gated-block ops (native/README.md)
INPUT_NAME, OUTPUT_NAME = "input", "features"


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
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
        return name

    def conv(self, x: str, c_in: int, c_out: int, k: int, stride: int, pad: int, relu: bool) -> str:
        from onnx import helper

        w = self.rng.standard_normal((c_out, c_in, k, k)).astype(np.float32) * math.sqrt(2.0 / (c_out * k * k))
        b = self.rng.standard_normal(c_out).astype(np.float32) * 0.01
        y = self.name("conv")
        self.nodes.append(helper.make_node("Conv", [x, self.const(w, "w"), self.const(b, "b")], [y],
                                           kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4))
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

    def native_block(self, x: str, b: BlockShape, active: int, reduction: int = 4) -> str:
        """A block as the native op with its gate inside (gatekit.GatedBlockWithGate), `active` of its planes on
        (random channels, as real masks are): the gate computes its full size, its weights chosen so that the
        decision is that fixed set for every input (G1 = 0 and g1 = 1 give hidden units of 1; a G2 row of +1 turns
        its channel on, -1 off)."""
        from onnx import helper

        hidden = max(b.in_channels // reduction, 1)
        sign = -np.ones(b.planes)
        sign[self.rng.choice(b.planes, size=int(active), replace=False)] = 1.0
        gate = [self.const(np.zeros((hidden, b.in_channels)), "g1"), self.const(np.ones(hidden), "gb"),
                self.const(np.repeat(sign[:, None], hidden, axis=1), "g2")]
        w1 = self.rng.standard_normal((b.planes, b.in_channels, 3, 3)) * math.sqrt(2.0 / (b.planes * 9))
        w2 = self.rng.standard_normal((b.planes, b.planes, 3, 3)) * math.sqrt(2.0 / (b.planes * 9))
        s = self.conv(x, b.in_channels, b.planes, 1, b.stride, 0, relu=False) if b.shortcut else x
        y = self.name("gated")
        self.nodes.append(helper.make_node(
            "GatedBlockWithGate", [x, *gate, self.const(w1, "w1"), self.const(np.zeros(b.planes), "b1"),
                                   self.const(w2, "w2"), self.const(np.zeros(b.planes), "b2"), s],
            [y], domain=NATIVE_DOMAIN, stride=b.stride))
        self.native = True
        return y

    def block(self, x: str, b: BlockShape, inner: int) -> str:
        h = self.conv(x, b.in_channels, inner, 3, b.stride, 1, relu=True)
        h = self.conv(h, inner, b.planes, 3, 1, 1, relu=False)
        s = self.conv(x, b.in_channels, b.planes, 1, b.stride, 0, relu=False) if b.shortcut else x
        return self.relu(self.op("Add", [h, s]))

    def stem(self, x: str, arch: Architecture) -> str:
        if arch.stem == "cifar":
            return self.conv(x, 3, arch.widths[0], 3, 1, arch.padding, relu=True)
        y = self.conv(x, 3, arch.widths[0], 7, 2, arch.padding, relu=True)
        return self.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])

    def head(self, x: str) -> str:
        return self.op("Flatten", [self.op("GlobalAveragePool", [x])], axis=1)

    def model(self, x: str, shape: list[int], y: str, out_shape: list, doc: str):
        from onnx import TensorProto, checker, helper

        self.nodes.append(helper.make_node("Identity", [y], [OUTPUT_NAME]))
        graph = helper.make_graph(self.nodes, "gatekit_profile", [helper.make_tensor_value_info(x, TensorProto.FLOAT, shape)],
                                  [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, out_shape)], self.inits)
        opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid(NATIVE_DOMAIN, 1)] if self.native else [])
        model = helper.make_model(graph, opset_imports=opsets, producer_name="gatekit", doc_string=doc)
        model.ir_version = 8
        if not self.native:  # the checker knows no schema for the custom op
            checker.check_model(model)
        return model


def network(arch: Architecture, inner_widths: list[int], batch: int = 1, seed: int = 0, native: bool = False):
    """A whole static network (stem, blocks at `inner_widths`, pooled features) as an onnx.ModelProto.
    native: every block is the native op (gate inside) with `inner_widths` of its planes active (a dynamic
    graph's cost at those per-input widths)."""
    blocks = arch.blocks()
    if len(inner_widths) != len(blocks):
        raise ValueError(f"{arch.arch} has {len(blocks)} blocks, got {len(inner_widths)} widths")
    for b, w in zip(blocks, inner_widths):
        if not (0 if native else 1) <= w <= b.planes:
            raise ValueError(f"block {b.index}: inner width {w} is outside 1..{b.planes}")
    g = _Builder(seed)
    y = g.stem(INPUT_NAME, arch)
    for b, w in zip(blocks, inner_widths):
        y = g.native_block(y, b, int(w)) if native else g.block(y, b, int(w))
    y = g.head(y)
    return g.model(INPUT_NAME, [batch, 3, arch.input_size, arch.input_size], y, [batch, arch.widths[-1]],
                   f"{'native active' if native else 'static'} widths {list(inner_widths)}")


def piece(arch: Architecture, part: str, inner: int | None = None, block: int | None = None, batch: int = 1,
          seed: int = 0):
    """One piece of the network as its own graph: part 'stem', 'head', or 'block' (index `block`, inner width
    `inner`). Its input is the activation that piece sees inside the network."""
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
        y = g.block(INPUT_NAME, b, int(inner)) if part == "block" else g.native_block(INPUT_NAME, b, int(inner))
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
