"""The pipelines that chain stages, used by the CLI and the demo (the only places that do).

plan (pick, torch-free) -> export (training side, verified) -> measure (bench, in a fresh process)
"""

from __future__ import annotations

from pathlib import Path

from gatekit.artifacts import manifest_name, open_artifact, runtime_name
from gatekit.bench.fresh import measure_in_fresh_process
from gatekit.bench.protocol import Protocol
from gatekit.errors import GatekitError
from gatekit.pick.plan import plan, plan_from_manifest


def plan_export_measure(
    lut: dict,
    target_ms: float,
    out_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    usage_manifest: str | Path | None = None,
    percentile: int = 90,
    margin: float = 0.05,
    data_dir: str | None = None,
    calib: int = 2000,
    protocol: Protocol | None = None,
    n_inputs: int = 256,
    accuracy: bool = True,
    progress: bool = True,
) -> dict:
    """Plans static widths for the target from the LUT, exports that static graph (verified like every
    export) and measures it on the LUT's runtime and threads in a fresh process.

    The gate usage comes from `usage_manifest` (an export manifest: no calibration pass) or, without one,
    from one calibration pass over `checkpoint`."""
    from gatekit.export.exporter import ExportOptions, Prepared, export

    threads = lut.get("threads")
    opts = ExportOptions(
        graph="static",
        calib=calib,
        round_to=int(lut["round_to"]),
        data_dir=data_dir,
        threads=threads,
        knn_check=accuracy,
    )
    if usage_manifest:
        planned = plan_from_manifest(lut, usage_manifest, target_ms, percentile=percentile, margin=margin)
        recorded = open_artifact(usage_manifest).manifest
        checkpoint = checkpoint or recorded.get("checkpoint")
        opts.fmt = planned["format"]
        prep = Prepared(checkpoint, opts, progress, recorded_usage=recorded["gate_usage"])
        if prep.meta["sha256"] != recorded.get("checkpoint_sha256"):
            raise GatekitError(f"{usage_manifest} was exported from another checkpoint than {checkpoint}")
    else:
        if not checkpoint:
            raise GatekitError("planning needs --checkpoint CKPT or --usage MANIFEST")
        prep = Prepared(checkpoint, opts, progress)  # one calibration pass: the usage and the export share it
        planned = plan(
            lut, prep.gate_usage(), prep.model.cfg.to_dict(), target_ms, percentile=percentile, margin=margin
        )
        opts.fmt = planned["format"]
    chosen = planned["chosen"]
    if chosen["min_usage"] > 0:  # re-select the channels at the chosen threshold (same usage)
        prep.reselect(chosen["min_usage"])
    manifest = export(checkpoint, out_dir, opts, progress=progress, prepared=prep)
    if list(manifest["widths"]) != chosen["widths"]:
        raise GatekitError(f"the exported widths {manifest['widths']} differ from the planned {chosen['widths']}")
    record = measure_in_fresh_process(
        Path(out_dir) / manifest_name("static", opts.fmt),
        runtime_name(lut["runtime"]["name"]),
        threads,
        protocol or Protocol(),
        n_inputs,
        data_dir,
    )
    measured = record["stats"][f"p{percentile}_ms"]
    return {
        "target_ms": target_ms,
        "percentile": percentile,
        "margin": margin,
        "checkpoint": str(checkpoint),
        "chosen": chosen,
        "options": planned["options"],
        "artifact": record["artifact"],
        "macs_ratio": manifest["macs"]["ratio_to_dense"],
        "agreement": manifest.get("agreement"),
        "measured": record["stats"],
        "record": record,
        "meets_target": measured <= target_ms,
        "usage_from": planned.get("usage_from", "calibration"),
        "prediction_error": chosen[f"predicted_p{percentile}_ms"] / measured - 1,
    }
