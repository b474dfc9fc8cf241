"""Export every asked graph of a checkpoint to every asked format: the one loop behind `gatekit export`,
`gatekit bench --sweep` and the demo. The calibration is run once per graph and shared by its formats."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gatekit.artifacts import manifest_name
from gatekit.errors import GatekitError
from gatekit.export.exporter import ExportOptions, Prepared, export, precision_refusal
from gatekit.export.graphs import GRAPHS
from gatekit.runtimes import available_formats


def export_all(
    checkpoint: str | Path,
    out: str | Path,
    *,
    graphs=None,
    formats=None,
    precisions=("fp32",),
    strict: bool = False,
    on_result: Callable[[dict], None] | None = None,
    on_failure: Callable[[str, str, GatekitError], None] | None = None,
    progress: bool = False,
    **options,
) -> tuple[list[dict], list[dict]]:
    """Exports `graphs` (default: all) x `formats` (default: those whose runtime is installed here) x
    `precisions` (with several precisions, the pairs `precision_refusal` refuses are passed over: a format that
    cannot hold a precision, dynamic graphs in fp16 or bf16, int8 dynamic graphs as TensorRT engines).

    Returns (manifests, failures). Each manifest carries `manifest_path`. A refused artifact is a failure
    (reported through `on_failure`) unless `strict`, when it raises."""
    formats = list(formats) if formats else available_formats()
    manifests, failures = [], []

    def failed(graph, fmt, precision, e):
        failures.append({"graph": graph, "format": fmt, "precision": precision, "error": str(e)})
        if on_failure:
            on_failure(graph, fmt, e)

    for graph in graphs or GRAPHS:
        jobs = []  # (format, precision, why it is refused or None), refused pairs told before any work
        for fmt in formats:
            for precision in precisions:
                refusal = precision_refusal(graph, fmt, precision) if graph in GRAPHS else None
                if refusal and len(precisions) > 1:
                    continue
                if refusal and strict:
                    raise GatekitError(refusal)
                jobs.append((fmt, precision, refusal))
        for fmt, precision, refusal in [j for j in jobs if j[2]]:
            failed(graph, fmt, precision, GatekitError(refusal))
        jobs = [j for j in jobs if not j[2]]
        if not jobs:
            continue
        opts = ExportOptions(graph=graph, **options)
        prepared = Prepared(checkpoint, opts, progress=progress)
        for fmt, precision, _ in jobs:
            opts.fmt, opts.precision = fmt, precision
            try:
                m = export(checkpoint, out, opts, progress=progress, prepared=prepared)
            except GatekitError as e:
                if strict:
                    raise
                failed(graph, fmt, precision, e)
                continue
            m["manifest_path"] = str(Path(out) / manifest_name(Path(next(iter(m["files"].values()))).stem, fmt))
            manifests.append(m)
            if on_result:
                on_result(m)
    return manifests, failures
