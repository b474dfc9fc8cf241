"""Where the native dynamic graph's time goes on OpenVINO, beside the static network at its per-block mean
active widths: OpenVINO's own per-layer counters (benchmark_app `-report_type average_counters`) summed by
what the layers do (the GatedBlock nodes, the other convolutions, reorders, and the standard ops of the gates
and the head), at 1 and 2 threads. Answers which part of the native graph's gap to that network
(native-dynamic-*.md) is the op and which is the rest of the graph, and which part does not scale with the
second thread; and block by block,
the op's node against the static network's convolutions of the same block (its 1x1 shortcut included).

    python benchmarks/bench_cpu/native_profile.py --set full32     # after native_dynamic.py --set full32 (its IRs)

benchmark_app: -hint none -nthreads N -nstreams 1 -nireq 1 -api sync -t 3 -infer_precision f32 -ip f32, the
native graph with `-extensions` (the built OpenVINO extension), both graphs fed the first 64 real test images
in turn (`-i`, one per inference: the native graph's work depends on its input; benchmark_app's own random
tensor would set the gates at random). The graphs are profiled in --rounds interleaved rounds; per-group
times are medians over rounds.

Writes benchmarks/bench_cpu/native-profile-{set}.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

SETS = {
    "full32": ("runs/native_dynamic/full32", [1, 3, 32, 32]),
    "x0.25": ("runs/native_dynamic/x0.25", [1, 3, 32, 32]),
    "full96": ("runs/native_dynamic/full96", [1, 3, 96, 96]),
}
GRAPHS = [("native dynamic", "dynamic.xml"), ("static at mean widths", "static-at-mean-active-widths.onnx")]
GROUP_NAMES = ["GatedBlock op", "convolution", "reorder", "gates, pooling, head"]


def group_of(layer: dict) -> str:
    if "GatedBlock" in layer["name"] and layer["type"] == "Reference":
        return "GatedBlock op"
    if layer["type"] == "Convolution":
        return "convolution"
    if layer["type"] == "Reorder":
        return "reorder"
    return "gates, pooling, head"  # the gates' pooling, FC and threshold, the final pooling


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", dest="name", choices=tuple(SETS), default="full32")
    ap.add_argument("--budget", type=float, default=0.3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args()
    from gatekit import native_ops
    from gatekit.artifacts import load_inputs, open_artifact
    from gatekit.atomic import write_json, write_text
    from gatekit.bench.crosscheck import counters_by_group, layer_counters
    from gatekit.errors import GatekitError
    from gatekit.sysinfo import machine_info

    rel, shape = SETS[args.name]
    base = ROOT / rel / f"td{args.budget}"
    missing = [f for _, f in GRAPHS if not (base / f).is_file()]
    if missing:
        sys.exit(
            f"missing {', '.join(missing)} under {base}: run `python benchmarks/bench_cpu/native_dynamic.py "
            f"--set {args.name}` first"
        )
    lib = native_ops.library_for("openvino")
    if lib is None:
        sys.exit("the OpenVINO extension is not built: run `gatekit ops build`")
    threads = [int(t) for t in args.threads.split(",")]
    manifest = open_artifact(base / "dynamic.openvino.json").manifest
    images, _ = load_inputs(manifest, 64)
    inputs = [images[i : i + 1] for i in range(len(images))]
    loads = [os.getloadavg()[0]]
    runs: dict[tuple[str, int], list[dict]] = {(g, t): [] for g, _ in GRAPHS for t in threads}
    for _ in range(args.rounds):
        for t in threads:
            for label, fname in GRAPHS:
                try:
                    runs[(label, t)].append(
                        layer_counters(
                            base / fname, shape, t, args.seconds, lib if fname.endswith(".xml") else None, inputs
                        )
                    )
                except GatekitError as e:
                    sys.exit(str(e))
        loads.append(os.getloadavg()[0])
    rows = []
    for (label, t), rs in runs.items():
        groups = counters_by_group(rs, group_of)
        rows.append(
            {
                "graph": label,
                "threads": t,
                "median_ms": statistics.median(r["median_ms"] for r in rs),
                "groups_ms": {g: groups.get(g, 0.0) for g in GROUP_NAMES},
                "layers_executed": len(rs[0]["layers"]),
            }
        )
    by = {(r["graph"], r["threads"]): r for r in rows}
    for r in rows:
        one = by.get((r["graph"], 1))
        r["speedup_over_1t"] = one["median_ms"] / r["median_ms"] if one and r["threads"] != 1 else None
        r["groups_speedup_over_1t"] = (
            {g: (one["groups_ms"][g] / v if v > 0 else None) for g, v in r["groups_ms"].items()}
            if one and r["threads"] != 1
            else None
        )
    blocks = per_block(runs, threads, manifest["model_config"])
    m = machine_info()
    command = f"python benchmarks/bench_cpu/native_profile.py --set {args.name}"
    stem = f"native-profile-{args.name}"
    write_json(
        Path(args.out) / f"{stem}.json",
        {
            "machine": m,
            "set": args.name,
            "budget": args.budget,
            "rounds": args.rounds,
            "seconds": args.seconds,
            "loadavg": loads,
            "extension": str(lib),
            "rows": rows,
            "blocks": blocks,
            "inputs": "the first 64 real test images, one per inference",
            "command": command,
        },
    )
    lines = [
        (
            f"OpenVINO {m['packages'].get('openvino')} per-layer counters "
            f"(benchmark_app -report_type average_counters), "
            f"set {args.name}, t_d {args.budget}, batch 1, f32; medians over {args.rounds} interleaved rounds of "
            f"{args.seconds} s; load average {' -> '.join(f'{x:.2f}' for x in loads)}."
        ),
        "",
        f"Re-run: `{command}`",
        "",
        "| graph | threads | median ms | x 1 thread | " + " | ".join(f"{g} ms" for g in GROUP_NAMES) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(GROUP_NAMES),
    ]
    for r in sorted(rows, key=lambda r: (r["threads"], r["graph"])):
        g, sp = r["groups_ms"], r["groups_speedup_over_1t"]
        cells = [f"{g[n]:.3f}" + (f" ({sp[n]:.2f}x)" if sp and sp.get(n) else "") for n in GROUP_NAMES]
        speed = f"{r['speedup_over_1t']:.2f}x" if r["speedup_over_1t"] else "-"
        lines.append(f"| {r['graph']} | {r['threads']} | {r['median_ms']:.3f} | {speed} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "(x) after a group's time: its speed-up over the same graph at 1 thread.",
        "",
        (
            "Block by block: the op's node against the static network's convolutions of the same block (conv1, "
            "conv2 and a 1x1 shortcut), medians over rounds, ms (op / static):"
        ),
        "",
        "| block | " + " | ".join(f"{t} thread(s)" for t in threads) + " |",
        "|---|" + "---:|" * len(threads),
    ]
    for b in blocks:
        lines.append(
            f"| {b['block']} | "
            + " | ".join(
                f"{b['op_ms'][str(t)]:.3f} / {b['static_ms'][str(t)]:.3f} "
                f"({b['op_ms'][str(t)] / b['static_ms'][str(t)]:.2f})"
                for t in threads
            )
            + " |"
        )
    write_text(Path(args.out) / f"{stem}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def per_block(runs: dict, threads: list[int], model_config: dict) -> list[dict]:
    """Per block: the native graph's op node and the static network's convolutions of that block (in the
    report's order: the stem, then each block's conv1, conv2 and, where it has one, its 1x1 shortcut), each a
    median over rounds."""
    import statistics

    from gatekit.models.arch import Architecture

    arch = Architecture.from_model_config(model_config)
    out = [
        {
            "block": f"{b.name} {b.in_channels}->{b.planes} @{b.size_out}x{b.size_out}"
            + (" s2" if b.stride == 2 else ""),
            "op_ms": {},
            "static_ms": {},
        }
        for b in arch.blocks()
    ]
    sizes = [3 if b.shortcut else 2 for b in arch.blocks()]
    for t in threads:
        ops = [
            [lay["ms"] for lay in r["layers"] if group_of(lay) == "GatedBlock op"] for r in runs[("native dynamic", t)]
        ]
        convs = [
            [lay["ms"] for lay in r["layers"] if lay["type"] == "Convolution"]
            for r in runs[("static at mean widths", t)]
        ]
        if any(len(o) != len(out) for o in ops) or any(len(c) != 1 + sum(sizes) for c in convs):
            sys.exit(
                "the counters' layers do not match the architecture's blocks (one op per block; the stem, then "
                "2 or 3 convolutions per block)"
            )
        for i, row in enumerate(out):
            start = 1 + sum(sizes[:i])
            row["op_ms"][str(t)] = statistics.median(o[i] for o in ops)
            row["static_ms"][str(t)] = statistics.median(sum(c[start : start + sizes[i]]) for c in convs)
    return out


if __name__ == "__main__":
    main()
