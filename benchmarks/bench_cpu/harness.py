"""How much of our latency figure is the harness: `gatekit bench`'s p50 against OpenVINO's benchmark_app on
the same IRs (1 thread, f32, synchronous), timing the prepared call the protocol uses (Session.runner: input
bound once, no per-call dict, no output copy) and a plain session.run, in interleaved rounds.

    python benchmarks/bench_cpu/harness.py      # after native_dynamic.py --set x0.25 / full32 (their IRs)

Writes benchmarks/bench_cpu/harness.{json,md}.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

IRS = {  # the smallest recorded models first
    "x0.25 t_d 0.3 static": "runs/native_dynamic/x0.25/td0.3/static.xml",
    "x0.25 dense": "runs/native_dynamic/x0.25/td0.3/dense.xml",
    "full width t_d 0.3 static": "runs/native_dynamic/full32/td0.3/static.xml",
    "full width dense": "runs/native_dynamic/full32/td0.3/dense.xml",
}


class CallsRun:
    """The plain form: the protocol times session.run(x) (feeds dict, conversion, output copy)."""

    def __init__(self, session):
        self.session = session

    def run(self, x):
        return self.session.run(x)


def main() -> None:
    import numpy as np

    from gatekit.atomic import write_json, write_text
    from gatekit.bench.crosscheck import benchmark_app_median
    from gatekit.bench.protocol import Protocol, measure
    from gatekit.runtimes import load_session
    from gatekit.sysinfo import machine_info

    rows = []
    for name, rel in IRS.items():
        ir = ROOT / rel
        if not ir.is_file():
            print(f"skipping {name}: no {rel}")
            continue
        with load_session(ir, "openvino", threads=1) as s:
            shape = [1 if d == -1 else d for d in s.input_shape]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        proto = Protocol(warmup_runs=50, min_runs=10**7, min_seconds=2)
        pairs = []
        for _ in range(5):
            with load_session(ir, "openvino", threads=1) as s:
                new = measure(s, [x], proto).stats()["p50_ms"]
                old = measure(CallsRun(s), [x], proto).stats()["p50_ms"]
            tool = benchmark_app_median(ir, shape, 1, 2)
            pairs.append({"ours_p50_ms": new, "ours_before_p50_ms": old, "benchmark_app_median_ms": tool})
        row = {
            "model": name,
            "ir": rel,
            "pairs": pairs,
            "ratio_now": statistics.median(p["ours_p50_ms"] / p["benchmark_app_median_ms"] for p in pairs),
            "ratio_before": statistics.median(p["ours_before_p50_ms"] / p["benchmark_app_median_ms"] for p in pairs),
            "benchmark_app_median_ms": statistics.median(p["benchmark_app_median_ms"] for p in pairs),
        }
        rows.append(row)
        print(
            f"{name}: benchmark_app {row['benchmark_app_median_ms']:.3f} ms; ours/theirs prepared "
            f"{row['ratio_now']:.3f}, session.run {row['ratio_before']:.3f}",
            flush=True,
        )
    m = machine_info()
    write_json(HERE / "harness.json", {"machine": m, "rows": rows, "command": "python benchmarks/bench_cpu/harness.py"})
    lines = [
        f"OpenVINO {m['packages'].get('openvino')}, 1 thread, f32, batch 1, on {m['cpu']} ({m['cores']} cores); "
        "5 interleaved rounds of (ours prepared, ours session.run, benchmark_app -hint none -nthreads 1 "
        "-nstreams 1 -nireq 1 -api sync -infer_precision f32 -t 2); medians of the per-round ratios.",
        "",
        "Re-run: `python benchmarks/bench_cpu/harness.py`",
        "",
        "| IR | benchmark_app median ms | our p50 / theirs (prepared call) | our p50 / theirs (session.run) |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['model']} | {r['benchmark_app_median_ms']:.3f} | {r['ratio_now']:.3f} | {r['ratio_before']:.3f} |"
        for r in rows
    ]
    write_text(HERE / "harness.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
