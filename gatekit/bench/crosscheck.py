"""Our latency figure against the runtime's own tool: OpenVINO's `benchmark_app` (shipped in the openvino
wheel) on the same IR, in interleaved pairs (a shared machine's noise hits both alike).

benchmark_app runs 1 stream, 1 request, a fixed thread count, f32, synchronously: what our LATENCY hint
with one stream compiles to (it takes -nthreads only with -hint none). Its median and our p50 are both
medians of single inferences, so their ratio is the harness's own per-call cost."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from gatekit.errors import GatekitError


def benchmark_app_path() -> str | None:
    tool = shutil.which("benchmark_app") or os.path.join(os.path.dirname(sys.executable), "benchmark_app")
    return tool if os.path.exists(tool) else None


def run_benchmark_app(
    ir: str | os.PathLike,
    shape: list[int],
    threads: int = 1,
    seconds: int = 2,
    extra: tuple[str, ...] = (),
    inputs: list[np.ndarray] | None = None,
) -> tuple[float, subprocess.CompletedProcess]:
    """benchmark_app on `ir` the way gatekit measures (1 stream, 1 request, synchronous, `threads` threads, f32
    pinned: quantized layers stay int8; the input float32, as gatekit feeds it: benchmark_app's default turns
    it into u8); returns its median latency in ms and the finished process.

    inputs: batches to cycle through, one per inference (written as .npy files; benchmark_app sets the next
    one between timed inferences). A graph whose work depends on its input (a dynamic gated graph) must get
    real ones: by default benchmark_app fills one random tensor and runs it every time."""
    import tempfile

    tool = benchmark_app_path()
    if tool is None:
        raise GatekitError("benchmark_app not found (it ships with the openvino wheel)")
    with tempfile.TemporaryDirectory(prefix="gatekit-bapp-") as tmp:
        feed: tuple[str, ...] = ()
        if inputs:
            for i, x in enumerate(inputs):
                np.save(Path(tmp) / f"input{i:04d}.npy", np.ascontiguousarray(x, dtype=np.float32))
            feed = ("-i", tmp, "-inference_only", "false")
        proc = subprocess.run(
            [
                tool,
                "-m",
                str(ir),
                "-d",
                "CPU",
                "-hint",
                "none",
                "-nstreams",
                "1",
                "-nireq",
                "1",
                "-api",
                "sync",
                "-nthreads",
                str(threads),
                "-infer_precision",
                "f32",
                "-ip",
                "f32",
                "-t",
                str(seconds),
                "-shape",
                "[" + ",".join(map(str, shape)) + "]",
                *feed,
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    found = re.search(r"Median:\s+([\d.]+)\s*(ms|us)", proc.stdout)  # it prints us below a millisecond
    if proc.returncode != 0 or not found:
        raise GatekitError(f"benchmark_app failed on {Path(ir).name}: {(proc.stderr or proc.stdout).strip()[-300:]}")
    return float(found.group(1)) / (1000.0 if found.group(2) == "us" else 1.0), proc


def layer_counters(
    ir: str | os.PathLike,
    shape: list[int],
    threads: int = 1,
    seconds: int = 3,
    extensions: str | os.PathLike | None = None,
    inputs: list[np.ndarray] | None = None,
) -> dict:
    """benchmark_app's median and its per-layer average counters (`-report_type average_counters`, the CSV
    form of `-pc`) for one IR or ONNX file, run as run_benchmark_app runs it (`inputs`: see there);
    `extensions`: a library with the custom ops the model needs. Returns {"median_ms", "layers": [{"name",
    "type", "exec", "ms"}]} (executed layers only, in the report's order)."""
    import csv
    import tempfile

    with tempfile.TemporaryDirectory() as rep:
        extra = ("-report_type", "average_counters", "-report_folder", rep)
        if extensions:
            extra += ("-extensions", str(extensions))
        median, _ = run_benchmark_app(ir, shape, threads, seconds, extra, inputs)
        layers = []
        with open(Path(rep) / "benchmark_average_counters_report.csv", newline="") as f:
            for row in csv.DictReader(f, delimiter=";"):
                if row.get("execStatus") != "Status.EXECUTED":
                    continue
                layers.append(
                    {
                        "name": row["layerName"],
                        "type": row["layerType"],
                        "exec": row["execType"],
                        "ms": float(row["realTime (ms)"]),
                    }
                )
    return {"layers": layers, "median_ms": median}


def counters_by_group(runs: list[dict], group_of) -> dict[str, float]:
    """layer_counters results of repeated runs of one graph: each run's layer times summed by
    `group_of(layer)`, then the median over runs (a group absent from a run counts 0 ms there)."""
    import statistics

    names = {group_of(layer) for r in runs for layer in r["layers"]}
    return {
        g: statistics.median(sum(layer["ms"] for layer in r["layers"] if group_of(layer) == g) for r in runs)
        for g in names
    }


def benchmark_app_median(ir: str | os.PathLike, shape: list[int], threads: int = 1, seconds: int = 2) -> float:
    return run_benchmark_app(ir, shape, threads, seconds)[0]


def crosscheck(ir: str | os.PathLike, threads: int = 1, pairs: int = 5, seconds: int = 2) -> dict:
    """Interleaved pairs of (our p50, benchmark_app's median); the median of the per-pair ratios."""
    from gatekit.bench.protocol import Protocol, measure
    from gatekit.runtimes import load_session

    with load_session(ir, "openvino", threads=threads) as s:
        shape = [1 if d == -1 else d for d in s.input_shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    rows = []
    for _ in range(pairs):
        with load_session(ir, "openvino", threads=threads) as s:
            ours = measure(s, [x], Protocol(warmup_runs=50, min_runs=10**7, min_seconds=seconds)).stats()["p50_ms"]
        theirs = benchmark_app_median(ir, shape, threads, seconds)
        rows.append({"ours_p50_ms": ours, "benchmark_app_median_ms": theirs, "ratio": ours / theirs})
    return {
        "ir": str(ir),
        "threads": threads,
        "pairs": rows,
        "median_ratio": float(np.median([r["ratio"] for r in rows])),
    }
