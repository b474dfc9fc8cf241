"""`gatekit bench --sweep`: export every graph of every checkpoint to every format available here,
then benchmark every artifact under one protocol (the suite that `benchmarks/` re-runs in one line).
Exporting needs torch (imported when called); benchmarking does not."""

from __future__ import annotations

from pathlib import Path

import click

from gatekit.bench.protocol import Protocol
from gatekit.bench.run import bench_one, load_inputs, open_artifact
from gatekit.errors import GatekitError
from gatekit.runtimes import FORMAT_RUNTIME, available_formats


def export_all(checkpoint: str | Path, out: str | Path, *, data_dir: str | None = None, threads: int | None = None,
               graphs=None, formats=None, progress: bool = False, **options) -> list[dict]:
    """Every graph x every available format of one checkpoint, each verified; returns the manifests."""
    from gatekit.export.exporter import FORMATS, ExportOptions, Prepared, export
    from gatekit.export.graphs import GRAPHS
    formats = available_formats(formats or FORMATS)
    manifests = []
    for graph in graphs or GRAPHS:
        opts = ExportOptions(graph=graph, data_dir=data_dir, threads=threads, **options)
        prepared = Prepared(checkpoint, opts, progress=progress)
        for fmt in formats:
            opts.fmt = fmt
            try:
                m = export(checkpoint, out, opts, progress=progress, prepared=prepared)
            except GatekitError as e:  # one refused artifact does not stop the sweep; it is reported
                click.echo(f"  {Path(checkpoint).name} {graph:8s} {fmt:9s} NOT EXPORTED: {e}", err=True)
                continue
            m["manifest_path"] = str(Path(out) / f"{Path(next(iter(m['files'].values()))).stem}.{fmt}.json")
            err = max(m["verification"]["relative_error"].values())
            click.echo(f"  {Path(checkpoint).name} t_d={m['budget']} {graph:8s} {fmt:9s} "
                       f"MACs x{m['macs']['ratio_to_dense']:.3f}  max rel err {err:.1e}")
            manifests.append(m)
    return manifests


def bench_manifests(manifest_paths: list[str | Path], threads: list[int], protocol: Protocol, *, batch: int = 1,
                    n_inputs: int = 256, data_dir: str | None = None, runtimes: list[str] | None = None,
                    progress: bool = True) -> list[dict]:
    """Benchmarks artifacts on their own runtime (plus the torch reference when asked), at each thread count."""
    from tqdm import tqdm

    from gatekit.sysinfo import machine_info

    machine = machine_info()
    jobs, seen_torch = [], set()
    for path in manifest_paths:
        art = open_artifact(path)
        own = FORMAT_RUNTIME[art.manifest["format"]]
        for rt in runtimes or [own]:
            if rt not in (own, "torch"):
                continue
            if rt == "torch":  # one torch run per distinct graph, whatever its formats
                key = (art.manifest["checkpoint_sha256"], art.manifest["graph"], str(art.manifest["channels"]))
                if key in seen_torch:
                    continue
                seen_torch.add(key)
            jobs += [(art, rt, t) for t in threads]
    records, cache = [], {}
    bar = tqdm(jobs, desc="bench", disable=not progress, dynamic_ncols=True)
    for art, rt, t in bar:
        bar.set_postfix_str(f"{art.file.name} {rt} {t}T")
        spec = art.manifest["input"]
        key = (spec["dataset"], spec["shape"][-1], str(spec["mean"]), str(spec["std"]))
        if key not in cache:
            cache[key] = load_inputs(art.manifest, n_inputs, data_dir)
        rec = bench_one(art, rt, t, batch, protocol, *cache[key], describe_machine=machine)
        records.append(rec)
        s = rec["stats"]
        bar.write(f"{art.file.name:22s} t_d={art.manifest.get('budget')} {rt:8s} {t}T b{batch}  p50 {s['p50_ms']:.3f} ms  "
                  f"p90 {s['p90_ms']:.3f} ms  ({s['runs']} runs, std {s['std_ms']:.3f})")
    return records
