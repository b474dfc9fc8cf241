"""`gatekit pick --lut`: static widths for a budget that was never exported, from a device's LUT.

A checkpoint's gates rank its channels by how often they are on over calibration images. A static
graph that removes the channels on for at most a fraction t of them (`gatekit export --min-usage t`)
keeps the most-used ones; raising t shrinks every block. The plan takes the smallest t (the most
channels, so the closest to the gated path's accuracy) whose predicted latency meets the target.

torch-free: the gate usage comes from an export manifest (`gate_usage`, recorded by every static,
hybrid and dynamic export), so a device plans from a LUT and a manifest alone. Exporting the plan and
measuring it are other stages: the CLI and the demo chain them (gatekit.chains).
"""

from __future__ import annotations

from pathlib import Path

from gatekit.artifacts import format_of_runtime, open_artifact
from gatekit.errors import GatekitError
from gatekit.models.channels import threshold_options
from gatekit.pick import predict as predictor


def choose(
    lut: dict, options: list[tuple[float, list[int]]], target_ms: float, percentile: int, margin: float = 0.0
) -> dict:
    """The option with the smallest threshold whose predicted latency meets the target less `margin`
    (a fraction, for the predictor's error); GatekitError if none does."""
    key = f"p{percentile}_ms"
    if not 0 <= margin < 1:
        raise GatekitError(f"margin must be in [0, 1), got {margin}")
    budget_ms = target_ms * (1 - margin)
    if key not in ("p50_ms", "p90_ms"):
        raise GatekitError("a LUT predicts p50 and p90: use --percentile 50 or 90")
    rows = [
        {"min_usage": t, "widths": w, **{f"predicted_{k}": v for k, v in predictor.predict(lut, w).items()}}
        for t, w in options
    ]
    feasible = [r for r in rows if r[f"predicted_{key}"] <= budget_ms]
    if not feasible:
        fastest = min(rows, key=lambda r: r[f"predicted_{key}"])
        raise GatekitError(
            f"no static width configuration of this checkpoint is predicted to meet {target_ms:g} ms"
            f"{f' less a {100 * margin:g}% margin' if margin else ''}: the "
            f"smallest ({fastest['widths']}) is predicted at {fastest[f'predicted_{key}']:.3f} ms"
        )
    best = min(feasible, key=lambda r: r["min_usage"])
    return {"chosen": best, "options": rows}


def usage_of(manifest: dict, source: str = "manifest") -> dict:
    """The recorded gate usage of an export manifest; GatekitError if it has none."""
    usage = manifest.get("gate_usage")
    if not usage or not isinstance(usage, dict) or not usage.get("counts"):
        raise GatekitError(
            f"{source} records no gate usage: export a static, hybrid or dynamic graph of the checkpoint "
            "with this gatekit version (dense graphs run no gates)"
        )
    images = usage.get("images")
    if not isinstance(usage["counts"], list) or not isinstance(images, int) or isinstance(images, bool) or images < 1:
        raise GatekitError(f"{source}: gate_usage needs 'counts' (a list per block) and 'images' (a positive integer)")
    return usage


def plan(
    lut: dict, usage: dict, model_config: dict, target_ms: float, *, percentile: int = 90, margin: float = 0.05
) -> dict:
    """Widths for the target from recorded gate usage: the chosen option (min_usage, widths, predicted
    latencies), every option, and the format the LUT's runtime loads."""
    predictor.check_arch(lut, model_config)
    fmt = format_of_runtime(lut["runtime"]["name"]).name
    options = threshold_options(
        usage["counts"], int(usage["images"]), int(lut["round_to"]), min_keep=int(model_config.get("gate_group", 1))
    )
    return dict(
        choose(lut, options, target_ms, percentile, margin),
        format=fmt,
        target_ms=target_ms,
        percentile=percentile,
        margin=margin,
        usage_images=int(usage["images"]),
    )


def plan_from_manifest(lut: dict, manifest_path: str | Path, target_ms: float, **kw) -> dict:
    """`plan` with the usage and architecture recorded in an export manifest (no checkpoint, no torch)."""
    art = open_artifact(manifest_path)
    usage = usage_of(art.manifest, str(manifest_path))
    if not isinstance(art.manifest.get("model_config"), dict):
        raise GatekitError(f"{manifest_path}: no 'model_config' table: not an export manifest of a gated checkpoint")
    return dict(
        plan(lut, usage, art.manifest["model_config"], target_ms, **kw),
        checkpoint=art.manifest.get("checkpoint"),
        checkpoint_sha256=art.manifest.get("checkpoint_sha256"),
        usage_from=str(manifest_path),
    )


def plot_plan(result: dict, lut: dict, path: str | Path) -> None:
    """Predicted latency of every threshold's widths against its MACs, the target, the planned option and
    its measurement (PNG)."""
    from gatekit.models.arch import Architecture
    from gatekit.plotting import new_figure, save_png

    arch = Architecture(**lut["arch"])
    dense = arch.macs([b["planes"] for b in lut["blocks"]])
    key = f"p{result['percentile']}_ms"
    fig = new_figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    rows = result["options"]
    ax.plot(
        [arch.macs(r["widths"]) / dense for r in rows],
        [r[f"predicted_{key}"] for r in rows],
        ".-",
        alpha=0.6,
        label="static widths by usage threshold (predicted)",
    )
    c = result["chosen"]
    x = arch.macs(c["widths"]) / dense
    ax.scatter(
        [x],
        [c[f"predicted_{key}"]],
        s=90,
        facecolors="none",
        edgecolors="red",
        linewidths=2,
        label="planned (predicted)",
    )
    if "measured" in result:
        ax.scatter([x], [result["measured"][key]], marker="x", s=70, color="black", label="planned (measured)")
    ax.axhline(result["target_ms"], color="red", ls="--", lw=1, label=f"target {result['target_ms']:.3g} ms")
    ax.set_xlabel("MACs / dense")
    ax.set_ylabel(f"p{result['percentile']} latency (ms)")
    ax.set_title(
        f"{lut['runtime']['name']} {lut['threads']}T, {lut['arch']['arch']} @{lut['arch']['input_size']}px", fontsize=9
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    save_png(fig, path)
