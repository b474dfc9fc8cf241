"""End-to-end `gatekit pick --lut` on this CPU: a p90 target between two recorded budgets' static graphs,
static widths planned from the t_d 0.3 checkpoint's channel-usage ranking and this CPU's LUT, exported
(verified against PyTorch), then measured with the bench protocol.

    python benchmarks/pick_cpu/run.py      # after bench_cpu/fullwidth.py and profile_cpu/run.py

Writes benchmarks/pick_cpu/pick-{runtime}-{size}px-{threads}t.{json,png} and summary.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
from gatekit.artifacts import runtime_name  # noqa: E402

CASES = [  # (size, runtime, threads, recipe)
    (32, "ort", 1, "cpu-fullwidth"),
    (96, "openvino", 2, "cpu-fullwidth-96"),
]


def recorded_static_p90(size: int, runtime: str, threads: int) -> dict[float, float]:
    out = {}
    for line in (ROOT / "benchmarks" / "bench_cpu" / f"cifar{size}-fullwidth.jsonl").read_text().splitlines():
        r = json.loads(line)
        if (
            r["manifest"]["graph"] == "static"
            and runtime_name(r["runtime"]["name"]) == runtime
            and r["threads"] == threads
        ):
            out[r["manifest"]["budget"]] = r["stats"]["p90_ms"]
    return out


def main() -> None:
    os.environ.setdefault("GATEKIT_DATA", str(ROOT.parent / "shared" / "datasets"))
    lines = [
        "| input | runtime | threads | recorded static p90 t_d 0.1 / 0.3 (ms) | target p90 (ms) | planned widths "
        "| MACs / dense | "
        "predicted p90 | measured p90 | meets | prediction error |",
        "|---:|---|---:|---|---:|---|---:|---:|---:|---|---:|",
    ]
    for size, rt, t, recipe in CASES:
        rec = recorded_static_p90(size, rt, t)
        target = round((rec[0.1] + rec[0.3]) / 2, 3)
        stem = HERE / f"pick-{rt}-{size}px-{t}t"
        lut = ROOT / "benchmarks" / "profile_cpu" / f"lut-{rt}-{size}px-{t}t.json"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "gatekit",
                "pick",
                "--target-ms",
                str(target),
                "--lut",
                str(lut),
                "--checkpoint",
                str(ROOT / "runs" / f"{recipe}-td0.3"),
                "--export-to",
                str(ROOT / "runs" / f"pick-{rt}-{size}"),
                "--no-accuracy-check",
                "--json",
                f"{stem}.json",
                "--plot",
                f"{stem}.png",
            ],
            capture_output=True,
            text=True,
        )
        print(proc.stdout[-2000:], proc.stderr[-500:], flush=True)
        out = json.loads(Path(f"{stem}.json").read_text())
        c = out["chosen"]
        lines.append(
            f"| {size} | {rt} | {t} | {rec[0.1]:.3f} / {rec[0.3]:.3f} | {target:.3f} | {c['widths']} | "
            f"{out['macs_ratio']:.3f} | {c['predicted_p90_ms']:.3f} | {out['measured']['p90_ms']:.3f} | "
            f"{'yes' if out['meets_target'] else 'no'} | "
            f"{100 * out['prediction_error']:+.1f}% |"
        )
    (HERE / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
