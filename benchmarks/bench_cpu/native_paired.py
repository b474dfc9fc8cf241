"""The native dynamic graph against the static network at its per-block mean active widths and against the same
checkpoint's static graph, timed call by call in alternation: ratios that hold on a host whose speed swings by
up to 2x for seconds at a time, where per-job medians (native_dynamic.py) do not.

Each (t_d, runtime, threads) runs `--cycles` cycles after a warm-up cycle; a cycle runs the three graphs in a
shuffled order, each for a burst of `--burst` calls on consecutive test images (of 32, the same ones for all
three, so that the native graph's gates vary as they do in use), and keeps the median of each burst without
its first 2 calls (a session's thread pool and caches are cold after another session ran; call-by-call
alternation made 2-thread sessions slower than 1-thread ones). The figures are the medians over cycles of each
graph's burst medians and of the per-cycle ratios. Deploy side only (no torch). Uses the artifacts of the
set's last native_dynamic.py run (runs/native_dynamic/{set}/).

    python benchmarks/bench_cpu/native_paired.py --set full32 [--threads 1,2] [--cycles 150] [--burst 12]

Writes benchmarks/bench_cpu/native-paired-{set}.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

IMAGES = 32


def quarter_medians(values: list[float]) -> list[float]:
    """The median of each of four consecutive quarters (of time) of the cycles' values: the host's speed phases
    (a shared VM's cores can run slower for tens of seconds, both graphs at once, and the ratio with them) show
    as quarters that disagree."""
    k = len(values)
    return [statistics.median(values[i * k // 4 : (i + 1) * k // 4]) for i in range(4)]


def main() -> int:
    from interleaved import last_run_items

    from gatekit.artifacts import load_inputs, open_artifact
    from gatekit.atomic import write_json, write_text
    from gatekit.runtimes import load_artifact, load_session
    from gatekit.sysinfo import machine_info

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--set", dest="name", default="full32", help="x0.25, full32 or full96 (after native_dynamic.py --set NAME)"
    )
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--cycles", type=int, default=150)
    ap.add_argument("--burst", type=int, default=12, help="calls per graph per cycle (the first 2 are not counted)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args()
    if args.cycles < 4:
        sys.exit(f"--cycles: at least 4 (the table gives the ratio by quarter of the cycles), got {args.cycles}")
    items = last_run_items(args.name)
    threads = [int(t) for t in args.threads.split(",")]
    rng = random.Random(args.seed)

    def artifact(budget, graph, runtime):
        for it in items:
            if it["kind"] == "artifact" and it["budget"] == budget and it["graph"] == graph:
                art = open_artifact(it["manifest"])
                if art.runtime == runtime:
                    return art
        return None

    rows = []
    load_start = os.getloadavg()
    for budget in sorted({it["budget"] for it in items}):
        mean = next(it for it in items if it["kind"] == "synthetic" and it["budget"] == budget)
        for rt in ("ort", "openvino"):
            native, static = artifact(budget, "dynamic", rt), artifact(budget, "static", rt)
            x, _ = load_inputs(native.manifest, IMAGES)
            images = [x[k : k + 1] for k in range(min(IMAGES, len(x)))]
            for t in threads:
                sessions = {
                    "native": load_artifact(native, rt, ops="native", threads=t),
                    "static at mean widths": load_session(mean["onnx"], rt, threads=t),
                    "static": load_artifact(static, rt, threads=t),
                }
                ran = sessions["native"].info.ops
                runners = {k: [s.runner(img) for img in images] for k, s in sessions.items()}
                times = {k: [] for k in sessions}
                order = list(sessions)
                for c in range(-1, args.cycles):  # cycle -1 warms up
                    rng.shuffle(order)
                    for k in order:
                        burst = []
                        for j in range(args.burst):
                            call = runners[k][(c * args.burst + j) % len(images)]
                            a = time.perf_counter()
                            call()
                            burst.append(time.perf_counter() - a)
                        if c >= 0:
                            times[k].append(statistics.median(burst[2:]))
                for s in sessions.values():
                    s.close()
                nat = times["native"]
                over_static = [a / b for a, b in zip(nat, times["static"])]
                row = {
                    "budget": budget,
                    "runtime": rt,
                    "threads": t,
                    "native_ran": ran,
                    "cycles": args.cycles,
                    "mean_widths": mean["widths"],
                    "mean_widths_macs_ratio": mean["macs_ratio"],
                    **{f"{k.replace(' ', '_')}_p50_ms": statistics.median(v) * 1e3 for k, v in times.items()},
                    "native_over_mean_widths": statistics.median(
                        a / b for a, b in zip(nat, times["static at mean widths"])
                    ),
                    "native_over_static": statistics.median(over_static),
                    "native_over_static_by_quarter": quarter_medians(over_static),
                    "static_p50_ms_by_quarter": [q * 1e3 for q in quarter_medians(times["static"])],
                }
                rows.append(row)
                print(
                    f"t_d {budget} {rt} {t}T: native {row['native_p50_ms']:.3f} ms, at mean widths "
                    f"{row['static_at_mean_widths_p50_ms']:.3f}, static {row['static_p50_ms']:.3f}; "
                    "native / mean widths "
                    f"{row['native_over_mean_widths']:.2f}, native / static {row['native_over_static']:.2f}",
                    flush=True,
                )
    load_end = os.getloadavg()
    command = (
        f"python benchmarks/bench_cpu/native_paired.py --set {args.name} --threads {args.threads} "
        f"--cycles {args.cycles} --burst {args.burst}"
    )
    result = {
        "set": args.name,
        "machine": machine_info(),
        "command": command,
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "rows": rows,
    }
    lines = [
        f"Set {args.name}: {result['machine'].get('cpu', '')}; the three graphs alternated in bursts of "
        f"{args.burst} calls, {args.cycles} cycles per row (medians over cycles of each burst's median without its "
        f"first 2 calls; ratios are medians of per-cycle ratios); load {load_start[0]:.2f} -> {load_end[0]:.2f}.",
        f"Re-run: `{command}`",
        "",
        "| t_d | runtime | threads | native ms | static at mean widths ms | static ms | native / mean widths "
        "| native / static | by quarter | static ms by quarter | ran |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['budget']} | {r['runtime']} | {r['threads']} | {r['native_p50_ms']:.3f} | "
            f"{r['static_at_mean_widths_p50_ms']:.3f} | {r['static_p50_ms']:.3f} | "
            f"{r['native_over_mean_widths']:.2f} | "
            f"{r['native_over_static']:.2f} | {' '.join(f'{q:.2f}' for q in r['native_over_static_by_quarter'])} | "
            f"{' '.join(f'{q:.2f}' for q in r['static_p50_ms_by_quarter'])} | {r['native_ran']} |"
        )
    out = Path(args.out)
    write_json(out / f"native-paired-{args.name}.json", result)
    write_text(out / f"native-paired-{args.name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
