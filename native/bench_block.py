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

    python native/bench_block.py [--runtime ort|openvino] [--threads 1] [--rounds 9] [--calls 30] [--lib LIB] [--size 32]

OpenVINO runs each model with f32 inference precision, one stream and --threads threads (the static and dense
blocks then run oneDNN's convolutions, the gated one the extension's kernel through the plugin's Reference node).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FRACTIONS = (0.25, 0.5, 1.0)


def resnet18_blocks(size: int) -> list[tuple]:
    """(name, Cin, C, Cout, H, stride) of ResNet-18's four stride-1 stages and three stride-2 transitions, the
    first stage's maps size x size (32: the power-of-two maps; 34: what the paper's CIFAR stem, padding 2, gives
    a 32 px image: 34, 17, 9, 5)."""
    maps = [size]
    for _ in range(3):
        maps.append((maps[-1] - 1) // 2 + 1)
    widths = (64, 128, 256, 512)
    out = [(f"{w}@{m}x{m}", w, w, w, m, 1) for w, m in zip(widths, maps)]
    out += [(f"{widths[i]}->{widths[i + 1]}@{maps[i + 1]} s2", widths[i], widths[i + 1], widths[i + 1], maps[i], 2)
            for i in range(3)]
    return out


def conv_block_model(w1, b1, w2, b2, cin, h, stride, gated):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    c, cout = w1.shape[0], w2.shape[0]
    ho = (h - 1) // stride + 1
    inits = [numpy_helper.from_array(a, n) for a, n in zip((w1, b1, w2, b2), ("W1", "b1", "W2", "b2"))]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, h, h]),
              helper.make_tensor_value_info("residual", TensorProto.FLOAT, [1, cout, ho, ho])]
    if gated:
        inputs.insert(1, helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, c]))
        nodes = [helper.make_node("GatedBlock", ["x", "mask", "W1", "b1", "W2", "b2", "residual"], ["y"],
                                  domain="gatekit", stride=stride)]
    else:
        nodes = [helper.make_node("Conv", ["x", "W1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[stride, stride]),
                 helper.make_node("Relu", ["c1"], ["h"]),
                 helper.make_node("Conv", ["h", "W2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
                 helper.make_node("Add", ["c2", "residual"], ["s"]),
                 helper.make_node("Relu", ["s"], ["y"])]
    graph = helper.make_graph(nodes, "block", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, ho, ho])], inits)
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
    ap.add_argument("--lib", default=None, help="libgatekit_ort_ops.so or libgatekit_ov_ops.so (default: built by "
                    "gatekit.native_ops)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--blocks", default=None, help="comma-separated subset of block names")
    ap.add_argument("--size", type=int, default=32, help="the first stage's map size (34: the paper's CIFAR stem at 32 px)")
    ap.add_argument("--json", default=None, help="also write the rows, machine and load here (JSON)")
    args = ap.parse_args()

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
    every = resnet18_blocks(args.size)
    blocks = every if not args.blocks else [b for b in every if b[0] in args.blocks.split(",")]

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"# {args.runtime} block micro-benchmark, {args.threads} thread(s), batch 1, median of {args.rounds} rounds x "
          f"{args.calls} calls; load average at start: {load}")
    rows = []
    for name, cin, c, cout, h, stride in blocks:
        ho = (h - 1) // stride + 1
        w1 = (rng.standard_normal((c, cin, 3, 3)) * (2.0 / (cin * 9)) ** 0.5).astype(np.float32)
        b1 = (rng.standard_normal(c) * 0.1).astype(np.float32)
        w2 = (rng.standard_normal((cout, c, 3, 3)) * (2.0 / (c * 9)) ** 0.5).astype(np.float32)
        b2 = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        x = rng.standard_normal((1, cin, h, h)).astype(np.float32)
        res = rng.standard_normal((1, cout, ho, ho)).astype(np.float32)
        rt = args.runtime
        variants = {"dense": (session(conv_block_model(w1, b1, w2, b2, cin, h, stride, False), args.threads, runtime=rt),
                              {"x": x, "residual": res})}
        gated = session(conv_block_model(w1, b1, w2, b2, cin, h, stride, True), args.threads, lib, runtime=rt)
        for f in FRACTIONS:
            act = np.sort(rng.permutation(c)[: int(round(f * c))])
            mask = np.zeros((1, c), np.float32)
            mask[0, act] = 1.0
            variants[f"gated{f}"] = (gated, {"x": x, "mask": mask, "residual": res})
            if f < 1.0:
                st = session(conv_block_model(np.ascontiguousarray(w1[act]), b1[act],
                                              np.ascontiguousarray(w2[:, act]), b2, cin, h, stride, False), args.threads,
                             runtime=rt)
                variants[f"static{f}"] = (st, {"x": x, "residual": res})
        # exactness of the gated op against the static block at each fraction
        for f in FRACTIONS[:-1]:
            yg = variants[f"gated{f}"][0].run(None, variants[f"gated{f}"][1])[0]
            ys = variants[f"static{f}"][0].run(None, variants[f"static{f}"][1])[0]
            assert np.abs(yg - ys).max() <= 1e-4 * max(1.0, np.abs(ys).max()), (name, f)
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
        print(f"  done {name} (foreign load ~{foreign:.2f} cores)" if foreign is not None else f"  done {name}",
              file=sys.stderr)

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

        write_json(args.json, {
            "machine": machine_info(), "runtime": args.runtime, "threads": args.threads, "rounds": args.rounds,
            "calls": args.calls, "first_stage_size": args.size, "library": str(lib), "loadavg_start": load,
            "loadavg_end": load_end,
            "command": " ".join(["python", "native/bench_block.py", *sys.argv[1:]]),
            "rows": [{"block": name, "active": f, "dense_ms": d, "static_ms": s, "gated_ms": g,
                      "gated_over_static": g / s if s else None, "gated_over_dense": g / d, "foreign_cores": foreign}
                     for name, f, d, s, g, foreign in rows]})


if __name__ == "__main__":
    main()
