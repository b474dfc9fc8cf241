"""Micro-benchmark of one GatedBlock on ONNX Runtime or OpenVINO (not a test).

For the four ResNet-18 stages (stride 1) and the three stride-2 transitions, at 25/50/100% random active
channels, times at batch 1:
  gated   the fused gatekit::GatedBlock op (mask fed as an input; the gate itself is not included)
  static  standard Conv ops holding only the active channels (Conv, Relu, Conv, Add, Relu)
  dense   the same block with all channels
The residual is a graph input for all three (the shortcut is outside the op).  Variants are interleaved call
by call: a round is --calls cycles, each running every variant once in a shuffled order, so that a slower
stretch of a shared host lands on all variants alike; each round records the median of its calls per variant,
and the table shows the median of the round medians.

With --precision int8 the gated variant is gatekit::GatedBlockInt8 (per-channel int8 weights, x_scale and h_scale
calibrated on the block's own input), and static and dense are QDQ blocks (QuantizeLinear / DequantizeLinear
around each Conv, int32 biases, uint8 activations, conv2's output quantized to int8 before the residual add),
which ONNX Runtime fuses into its integer convolutions and OpenVINO runs on its int8 kernels.  --width scales the
channel counts (0.25: the x0.25 network's 16-128 channels).

    python native/bench_block.py [--runtime ort|openvino] [--threads 1] [--rounds 9] [--calls 30] [--lib LIB]
                                 [--size 32] [--precision fp32|int8] [--width 1.0]

OpenVINO runs each model with f32 inference precision, one stream and --threads threads (the static and dense
blocks then run oneDNN's convolutions, the gated one the extension's kernel through the plugin's Reference node).
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FRACTIONS = (0.25, 0.5, 1.0)


def resnet18_blocks(size: int, width: float = 1.0) -> list[tuple]:
    """(name, Cin, C, Cout, H, stride) of ResNet-18's four stride-1 stages and three stride-2 transitions, the
    first stage's maps size x size (32: the power-of-two maps; 34: what the paper's CIFAR stem, padding 2, gives
    a 32 px image: 34, 17, 9, 5), channels scaled by `width`."""
    maps = [size]
    for _ in range(3):
        maps.append((maps[-1] - 1) // 2 + 1)
    widths = tuple(max(1, int(round(w * width))) for w in (64, 128, 256, 512))
    out = [(f"{w}@{m}x{m}", w, w, w, m, 1) for w, m in zip(widths, maps)]
    out += [
        (f"{widths[i]}->{widths[i + 1]}@{maps[i + 1]} s2", widths[i], widths[i + 1], widths[i + 1], maps[i], 2)
        for i in range(3)
    ]
    return out


def conv_block_model(w1, b1, w2, b2, cin, h, stride, gated):
    from onnx import TensorProto, helper, numpy_helper

    c, cout = w1.shape[0], w2.shape[0]
    ho = (h - 1) // stride + 1
    inits = [numpy_helper.from_array(a, n) for a, n in zip((w1, b1, w2, b2), ("W1", "b1", "W2", "b2"))]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, h, h]),
        helper.make_tensor_value_info("residual", TensorProto.FLOAT, [1, cout, ho, ho]),
    ]
    if gated:
        inputs.insert(1, helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, c]))
        nodes = [
            helper.make_node(
                "GatedBlock", ["x", "mask", "W1", "b1", "W2", "b2", "residual"], ["y"], domain="gatekit", stride=stride
            )
        ]
    else:
        nodes = [
            helper.make_node("Conv", ["x", "W1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[stride, stride]),
            helper.make_node("Relu", ["c1"], ["h"]),
            helper.make_node("Conv", ["h", "W2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
            helper.make_node("Add", ["c2", "residual"], ["s"]),
            helper.make_node("Relu", ["s"], ["y"]),
        ]
    graph = helper.make_graph(
        nodes, "block", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, ho, ho])], inits
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("gatekit", 1)] if gated else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model.SerializeToString()


def conv3x3(x, w, stride):
    """3x3 convolution, padding 1, float64 (calibrating the int8 blocks' scales)."""
    _, _, h, wd = x.shape
    ho, wo = (h - 1) // stride + 1, (wd - 1) // stride + 1
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((x.shape[0], w.shape[0], ho, wo))
    for i in range(3):
        for j in range(3):
            patch = xp[:, :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j].astype(np.float64))
    return out


def quantize_weights(w):
    """Per output channel, symmetric int8: (int8 weights, float32 scales)."""
    scale = np.maximum(np.abs(w).reshape(w.shape[0], -1).max(axis=1), 1e-12) / 127.0
    q = np.clip(np.rint(w / scale[:, None, None, None]), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def int8_scales(x, w1, b1, w2, b2, stride):
    """x_scale, h_scale (uint8, zero point 0) and the scale of conv2's output (int8, symmetric) on this input."""
    h = np.maximum(conv3x3(x, w1, stride) + b1[None, :, None, None], 0)
    c2 = conv3x3(h, w2, 1) + b2[None, :, None, None]
    return (
        np.float32(max(x.max(), 1e-6) / 255),
        np.float32(max(h.max(), 1e-6) / 255),
        np.float32(max(np.abs(c2).max(), 1e-6) / 127),
    )


def int8_block_model(q, cin, h, stride, gated):
    """GatedBlockInt8, or a QDQ block (see the module docstring) of q: w1q, w1s, b1, w2q, w2s, b2, xs, hs, ys."""
    from onnx import TensorProto, helper, numpy_helper

    w1q, w1s, b1, w2q, w2s, b2, xs, hs, ys = q
    c, cout = w1q.shape[0], w2q.shape[0]
    ho = (h - 1) // stride + 1
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, h, h]),
        helper.make_tensor_value_info("residual", TensorProto.FLOAT, [1, cout, ho, ho]),
    ]
    scalar = lambda v: np.asarray(v, np.float32).reshape(())  # noqa: E731
    if gated:
        inputs.insert(1, helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, c]))
        arrays = {
            "W1": w1q,
            "w1_scale": w1s,
            "b1": b1,
            "W2": w2q,
            "w2_scale": w2s,
            "b2": b2,
            "x_scale": scalar(xs),
            "h_scale": scalar(hs),
        }
        nodes = [
            helper.make_node(
                "GatedBlockInt8",
                ["x", "mask", "W1", "w1_scale", "b1", "W2", "w2_scale", "b2", "residual", "x_scale", "h_scale"],
                ["y"],
                domain="gatekit",
                stride=stride,
            )
        ]
    else:
        b1q = np.rint(b1 / (xs * w1s)).astype(np.int32)
        b2q = np.rint(b2 / (hs * w2s)).astype(np.int32)
        arrays = {
            "W1": w1q,
            "w1_scale": w1s,
            "b1q": b1q,
            "b1_scale": (xs * w1s).astype(np.float32),
            "W2": w2q,
            "w2_scale": w2s,
            "b2q": b2q,
            "b2_scale": (hs * w2s).astype(np.float32),
            "xs": scalar(xs),
            "hs": scalar(hs),
            "ys": scalar(ys),
            "zu": np.zeros((), np.uint8),
            "zs": np.zeros((), np.int8),
            "zw1": np.zeros(c, np.int8),
            "zw2": np.zeros(cout, np.int8),
            "zb1": np.zeros(c, np.int32),
            "zb2": np.zeros(cout, np.int32),
        }
        dq = lambda i, sc, zp, o, **kw: helper.make_node("DequantizeLinear", [i, sc, zp], [o], **kw)  # noqa: E731
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "xs", "zu"], ["xq"]),
            dq("xq", "xs", "zu", "xd"),
            dq("W1", "w1_scale", "zw1", "w1d", axis=0),
            dq("b1q", "b1_scale", "zb1", "b1d", axis=0),
            helper.make_node("Conv", ["xd", "w1d", "b1d"], ["c1"], pads=[1, 1, 1, 1], strides=[stride, stride]),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("QuantizeLinear", ["r1", "hs", "zu"], ["hq"]),
            dq("hq", "hs", "zu", "hd"),
            dq("W2", "w2_scale", "zw2", "w2d", axis=0),
            dq("b2q", "b2_scale", "zb2", "b2d", axis=0),
            helper.make_node("Conv", ["hd", "w2d", "b2d"], ["c2"], pads=[1, 1, 1, 1]),
            helper.make_node("QuantizeLinear", ["c2", "ys", "zs"], ["c2q"]),
            dq("c2q", "ys", "zs", "c2d"),
            helper.make_node("Add", ["c2d", "residual"], ["s"]),
            helper.make_node("Relu", ["s"], ["y"]),
        ]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in arrays.items()]
    graph = helper.make_graph(
        nodes, "block", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, ho, ho])], inits
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("gatekit", 1)] if gated else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model.SerializeToString()


class OpenVINOBlock:
    """One compiled OpenVINO model with `run(None, feeds)` like an ORT session (inputs bound once per feeds)."""

    def __init__(self, model_bytes, threads, lib=None):
        import tempfile

        import openvino as ov

        core = ov.Core()
        if lib:
            core.add_extension(str(lib))
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "block.onnx"
            path.write_bytes(model_bytes)
            model = core.read_model(str(path))
        from gatekit.runtimes.openvino_backend import compile_config

        self.compiled = core.compile_model(model, "CPU", compile_config("fp32", threads))  # as gatekit bench runs it
        self.request = self.compiled.create_infer_request()
        self._bound = None

    def run(self, _outputs, feeds):
        if self._bound is not feeds:
            import openvino as ov

            for name, value in feeds.items():
                self.request.set_tensor(name, ov.Tensor(value, shared_memory=True))
            self._bound = feeds
        self.request.infer()
        return [self.request.get_output_tensor(0).data]


def block_model(weights, act, gated, cin, h, stride, scales=None):
    """The block of `weights` (w1, b1, w2, b2) with inner channels `act` (all for the gated op and dense): fp32, or
    int8 (GatedBlockInt8 or QDQ) with the activation scales of `int8_scales` when `scales` is given."""
    w1, b1, w2, b2 = weights
    a1, a2, ab = np.ascontiguousarray(w1[act]), np.ascontiguousarray(w2[:, act]), b1[act]
    if scales is None:
        return conv_block_model(a1, ab, a2, b2, cin, h, stride, gated)
    (q1, s1), (q2, s2) = quantize_weights(a1), quantize_weights(a2)
    return int8_block_model((q1, s1, ab, q2, s2, b2, *scales), cin, h, stride, gated)


def session(model_bytes, threads, lib=None, runtime="ort"):
    if runtime == "openvino":
        return OpenVINOBlock(model_bytes, threads, lib)
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if lib:
        so.register_custom_ops_library(str(lib))
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def cpu_busy_seconds():
    """Whole-machine busy CPU seconds (from /proc/stat), to estimate foreign load."""
    try:
        with open("/proc/stat") as f:
            parts = [float(v) for v in f.readline().split()[1:]]
        hz = os.sysconf("SC_CLK_TCK")
        user, nice, system, _idle, _iowait, irq, softirq, steal = (parts + [0.0] * 8)[:8]
        return (user + nice + system + irq + softirq + steal) / hz  # guest time is already in user
    except (OSError, ValueError, IndexError):
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runtime", choices=("ort", "openvino"), default="ort")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument(
        "--lib",
        default=None,
        help="libgatekit_ort_ops.so or libgatekit_ov_ops.so (default: built by gatekit.native_ops)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--blocks", default=None, help="comma-separated subset of block names")
    ap.add_argument(
        "--size", type=int, default=32, help="the first stage's map size (34: the paper's CIFAR stem at 32 px)"
    )
    ap.add_argument("--json", default=None, help="also write the rows, machine and load here (JSON)")
    ap.add_argument(
        "--precision",
        choices=("fp32", "int8"),
        default="fp32",
        help="int8: gatekit::GatedBlockInt8 against QDQ static and dense blocks",
    )
    ap.add_argument("--width", type=float, default=1.0, help="channel multiplier (0.25: the x0.25 network)")
    args = ap.parse_args()
    int8 = args.precision == "int8"

    lib = args.lib
    if lib is None:
        from gatekit import native_ops

        lib = native_ops.library_for(args.runtime)
        if lib is None:
            info = native_ops.build()
            if info.get("status") != "ok":
                sys.exit(f"cannot build the native ops: {info.get('reason')}")
            lib = native_ops.library_for(args.runtime)
    rng = np.random.default_rng(args.seed)
    every = resnet18_blocks(args.size, args.width)
    blocks = every if not args.blocks else [b for b in every if b[0] in args.blocks.split(",")]

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(
        f"# {args.runtime} {args.precision} block micro-benchmark, {args.threads} thread(s), batch 1, median of "
        f"{args.rounds} rounds x {args.calls} calls; load average at start: {load}"
    )
    print(f"# Re-run: `{' '.join(['python', 'native/bench_block.py', *sys.argv[1:]])}`")
    rows = []
    for name, cin, c, cout, h, stride in blocks:
        ho = (h - 1) // stride + 1
        w1 = (rng.standard_normal((c, cin, 3, 3)) * (2.0 / (cin * 9)) ** 0.5).astype(np.float32)
        b1 = (rng.standard_normal(c) * 0.1).astype(np.float32)
        w2 = (rng.standard_normal((cout, c, 3, 3)) * (2.0 / (c * 9)) ** 0.5).astype(np.float32)
        b2 = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        x = rng.standard_normal((1, cin, h, h)).astype(np.float32)
        if int8:
            x = np.maximum(x, 0)  # a block's input is a ReLU's output
        res = rng.standard_normal((1, cout, ho, ho)).astype(np.float32)
        rt = args.runtime
        scales = int8_scales(x, w1, b1, w2, b2, stride) if int8 else None
        model = functools.partial(block_model, (w1, b1, w2, b2), cin=cin, h=h, stride=stride, scales=scales)
        every_channel = np.arange(c)
        plain = {"x": x, "residual": res}
        variants = {"dense": (session(model(every_channel, False), args.threads, runtime=rt), plain)}
        gated = session(model(every_channel, True), args.threads, lib, runtime=rt)
        for f in FRACTIONS:
            act = np.sort(rng.permutation(c)[: int(round(f * c))])
            mask = np.zeros((1, c), np.float32)
            mask[0, act] = 1.0
            variants[f"gated{f}"] = (gated, {"x": x, "mask": mask, "residual": res})
            if f < 1.0:
                variants[f"static{f}"] = (session(model(act, False), args.threads, runtime=rt), plain)
        # the gated op against the static block at each fraction: exact in fp32; in int8 within what the QDQ
        # block's own rounding (per-channel scales of the kept channels, conv2's quantized output) explains
        tol = 0.1 if int8 else 1e-4
        for f in FRACTIONS[:-1]:
            yg = variants[f"gated{f}"][0].run(None, variants[f"gated{f}"][1])[0]
            ys = variants[f"static{f}"][0].run(None, variants[f"static{f}"][1])[0]
            assert np.abs(yg - ys).max() <= tol * max(1.0, np.abs(ys).max()), (name, f, float(np.abs(yg - ys).max()))
        for sess, feeds in variants.values():  # warm-up
            for _ in range(5):
                sess.run(None, feeds)
        per_round = {k: [] for k in variants}
        busy0, t0, own0 = cpu_busy_seconds(), time.perf_counter(), time.process_time()
        for _ in range(args.rounds):
            # Call by call: each of the round's `calls` cycles runs every variant once, in a shuffled order, so
            # that a stretch when a shared VM's host is slower (often seconds long) lands on all of them alike.
            ts = {k: [] for k in variants}
            order = list(variants)
            for _ in range(args.calls):
                random.shuffle(order)
                for k in order:
                    sess, feeds = variants[k]
                    a = time.perf_counter()
                    sess.run(None, feeds)
                    ts[k].append(time.perf_counter() - a)
            for k in variants:
                per_round[k].append(statistics.median(ts[k]))
        busy1, t1 = cpu_busy_seconds(), time.perf_counter()
        med = {k: statistics.median(v) * 1e3 for k, v in per_round.items()}
        foreign = None
        if busy0 is not None and busy1 is not None:
            own = time.process_time()
            foreign = max(0.0, (busy1 - busy0 - (own - own0)) / (t1 - t0))
        for f in FRACTIONS:
            g = med[f"gated{f}"]
            s = med.get(f"static{f}")
            rows.append((name, f, med["dense"], s, g, foreign))
        print(
            f"  done {name} (foreign load ~{foreign:.2f} cores)" if foreign is not None else f"  done {name}",
            file=sys.stderr,
        )

    print()
    print("| block | active | dense ms | static ms | gated ms | gated/static | gated/dense | foreign cores |")
    print("|---|---|---|---|---|---|---|---|")
    for name, f, d, s, g, foreign in rows:
        st = f"{s:.3f}" if s is not None else "-"
        gs = f"{g / s:.2f}" if s is not None else "-"
        fl = f"{foreign:.2f}" if foreign is not None else "?"
        print(f"| {name} | {int(f * 100)}% | {d:.3f} | {st} | {g:.3f} | {gs} | {g / d:.2f} | {fl} |")
    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"\n# load average at end: {load_end}")
    if args.json:
        from gatekit.atomic import write_json
        from gatekit.sysinfo import machine_info

        write_json(
            args.json,
            {
                "machine": machine_info(),
                "runtime": args.runtime,
                "precision": args.precision,
                "width": args.width,
                "threads": args.threads,
                "rounds": args.rounds,
                "calls": args.calls,
                "first_stage_size": args.size,
                "library": str(lib),
                "loadavg_start": load,
                "loadavg_end": load_end,
                "command": " ".join(["python", "native/bench_block.py", *sys.argv[1:]]),
                "rows": [
                    {
                        "block": name,
                        "active": f,
                        "dense_ms": d,
                        "static_ms": s,
                        "gated_ms": g,
                        "gated_over_static": g / s if s else None,
                        "gated_over_dense": g / d,
                        "foreign_cores": foreign,
                    }
                    for name, f, d, s, g, foreign in rows
                ],
            },
        )


if __name__ == "__main__":
    main()
