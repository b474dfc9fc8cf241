"""Benchmark many artifacts under one protocol: each on its own runtime (plus the torch reference when
asked), at each thread count. Deploy side: no torch, no export."""

from __future__ import annotations

import sys
from pathlib import Path

from gatekit import native_ops
from gatekit.artifacts import FALLBACK, load_inputs, open_artifact, runtime_name
from gatekit.bench.protocol import Protocol
from gatekit.bench.run import bench_one
from gatekit.errors import GatekitError


def bench_manifests(
    manifest_paths: list[str | Path],
    threads: list[int],
    protocol: Protocol,
    *,
    batch: int = 1,
    n_inputs: int = 256,
    data_dir: str | None = None,
    runtimes: list[str] | None = None,
    progress: bool = True,
    ops: str = "auto",
) -> list[dict]:
    """Benchmarks artifacts on their own runtime (plus the torch reference when asked), at each thread count."""
    from tqdm import tqdm

    from gatekit.sysinfo import machine_info

    machine = machine_info()
    wanted = [runtime_name(r) for r in runtimes] if runtimes else None
    jobs, seen_torch = [], set()
    for path in manifest_paths:
        art = open_artifact(path)
        if not isinstance(art.manifest.get("input"), dict):
            raise GatekitError(
                f"{art.manifest_path}: no 'input' (dataset, shape, normalisation): its test images are unknown"
            )
        own = art.runtime
        for rt in wanted or [own]:
            if rt not in (own, "torch"):
                continue
            if rt == "torch":  # one torch run per distinct graph, whatever its formats
                key = (art.manifest["checkpoint_sha256"], art.manifest["graph"], str(art.manifest["channels"]))
                if key in seen_torch:
                    continue
                seen_torch.add(key)
            jobs += [(art, rt, t) for t in threads]
    records, cache, noted = [], {}, set()
    bar = tqdm(jobs, desc="bench", disable=not progress, dynamic_ncols=True)
    for art, rt, t in bar:
        bar.set_postfix_str(f"{art.file.name} {rt} {t}T")
        spec = art.manifest["input"]
        key = (spec["dataset"], spec["shape"][-1], str(spec["mean"]), str(spec["std"]))
        if key not in cache:
            cache[key] = load_inputs(art.manifest, n_inputs, data_dir)
        rec = bench_one(art, rt, t, batch, protocol, *cache[key], describe_machine=machine, ops=ops)
        records.append(rec)
        if ops == "auto" and rec["runtime"].get("ops") == FALLBACK and rt not in noted:  # the op library is missing
            noted.add(rt)
            bar.write(native_ops.fallback_note(rt, art.file.name), file=sys.stderr)
        s = rec["stats"]
        path = f" ({rec['runtime']['ops']})" if rec["runtime"].get("ops") else ""
        bar.write(
            f"{art.file.name:22s}{path} t_d={art.manifest.get('budget')} {rt:8s} {t}T b{batch}  "
            f"p50 {s['p50_ms']:.3f} ms  "
            f"p90 {s['p90_ms']:.3f} ms  ({s['runs']} runs, std {s['std_ms']:.3f})"
        )
    return records
