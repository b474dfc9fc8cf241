"""One latency protocol for every runtime (torch-free).

Pin the threads (the backend does, at load), warm up for at least `warmup_runs` runs and
`warmup_seconds`, then time single `run()` calls with perf_counter_ns until `min_runs` runs or
`min_seconds` have passed, whichever comes first (never fewer than `floor_runs`). Inputs are real
images cycled in order, so per-input latencies can be paired with per-input FLOPs.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Protocol:
    warmup_runs: int = 50
    warmup_seconds: float = 0.2
    min_runs: int = 1000
    min_seconds: float = 10.0
    floor_runs: int = 50

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Measurement:
    latencies_ns: np.ndarray  # one per timed run
    input_index: np.ndarray  # which input batch each run used
    batch: int

    def stats(self) -> dict:
        return latency_stats(self.latencies_ns, self.batch)


def latency_stats(latencies_ns: np.ndarray, batch: int) -> dict:
    ms = np.asarray(latencies_ns, dtype=np.float64) / 1e6
    return {
        "runs": int(ms.size),
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std()),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "throughput_per_s": float(batch * 1e3 / ms.mean()),
    }


def measure(session, batches: list[np.ndarray], protocol: Protocol, progress=None) -> Measurement:
    """Times `session.run` over `batches` (cycled) under `protocol`; `progress(done)` is called now and then."""
    if not batches:
        raise ValueError("no input batches")
    batches = [np.ascontiguousarray(b, dtype=np.float32) for b in batches]
    n = len(batches)
    # one prepared call per input: the session's own fast path where it has one (Session.runner)
    calls = (
        [session.runner(b) for b in batches]
        if hasattr(session, "runner")
        else [(lambda b=b: session.run(b)) for b in batches]
    )
    i = 0
    start = time.perf_counter()
    while i < protocol.warmup_runs or time.perf_counter() - start < protocol.warmup_seconds:
        calls[i % n]()
        i += 1
    latencies, indices = [], []
    clock = time.perf_counter_ns
    begin = clock()
    deadline = begin + int(protocol.min_seconds * 1e9)
    j = 0
    while True:
        call = calls[j % n]
        t0 = clock()
        call()
        t1 = clock()
        latencies.append(t1 - t0)
        indices.append(j % n)
        j += 1
        if j >= protocol.min_runs or (t1 >= deadline and j >= protocol.floor_runs):
            break
        if progress is not None and j % 100 == 0:
            progress(j)
    return Measurement(np.asarray(latencies, np.int64), np.asarray(indices, np.int64), int(batches[0].shape[0]))


def per_input_stats(m: Measurement) -> dict[int, dict]:
    """latency_stats of each input index's runs (inputs cycled in order: each input's runs are interleaved
    with every other input's, so all of them span the same stretch of the machine's noise)."""
    return {int(idx): latency_stats(m.latencies_ns[m.input_index == idx], m.batch) for idx in np.unique(m.input_index)}


def per_input_latency(m: Measurement) -> dict[int, float]:
    """Median latency (ms) per input index."""
    return {idx: s["p50_ms"] for idx, s in per_input_stats(m).items()}
