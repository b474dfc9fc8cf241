"""Export every asked graph of a checkpoint to every asked format: the one loop behind `gatekit export`,
`gatekit bench --sweep` and the demo. The calibration is run once per graph and shared by its formats."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from gatekit.artifacts import FORMATS, manifest_name
from gatekit.errors import GatekitError
from gatekit.export.exporter import ExportOptions, Prepared, export
from gatekit.export.graphs import GRAPHS
from gatekit.runtimes import available_formats


def export_all(checkpoint: str | Path, out: str | Path, *, graphs=None, formats=None, precisions=("fp32",),
               strict: bool = False,
               on_result: Callable[[dict], None] | None = None,
               on_failure: Callable[[str, str, GatekitError], None] | None = None,
               progress: bool = False, **options) -> tuple[list[dict], list[dict]]:
    """Exports `graphs` (default: all) x `formats` (default: those whose runtime is installed here) x
    `precisions` (a format that cannot hold a precision, and dynamic graphs below fp32, are passed over).

    Returns (manifests, failures). Each manifest carries `manifest_path`. A refused artifact is a failure
    (reported through `on_failure`) unless `strict`, when it raises."""
    formats = list(formats) if formats else available_formats()
    manifests, failures = [], []
    for graph in graphs or GRAPHS:
        opts = ExportOptions(graph=graph, **options)
        prepared = Prepared(checkpoint, opts, progress=progress)
        for fmt in formats:
            for precision in precisions:
                if len(precisions) > 1 and (precision not in FORMATS[fmt].precisions
                                            or (graph == "dynamic" and precision != "fp32")):
                    continue
                opts.fmt, opts.precision = fmt, precision
                try:
                    m = export(checkpoint, out, opts, progress=progress, prepared=prepared)
                except GatekitError as e:
                    if strict:
                        raise
                    failures.append({"graph": graph, "format": fmt, "precision": precision, "error": str(e)})
                    if on_failure:
                        on_failure(graph, fmt, e)
                    continue
                m["manifest_path"] = str(Path(out) / manifest_name(Path(next(iter(m["files"].values()))).stem, fmt))
                manifests.append(m)
                if on_result:
                    on_result(m)
    return manifests, failures
