"""`gatekit pick --lut`: static widths for a budget that was never exported, from a device's LUT.

A checkpoint's gates rank its channels by how often they are on over calibration images. A static
graph that removes the channels on for at most a fraction t of them (`gatekit export --min-usage t`)
keeps the most-used ones; raising t shrinks every block. The plan takes the smallest t (the most
channels, so the closest to the gated path's accuracy) whose predicted latency meets the target,
exports that static graph through the exporter (verified against PyTorch like every export), and
measures it with the bench protocol on the LUT's runtime and threads. Needs torch (export).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gatekit.errors import GatekitError
from gatekit.pick import predict as predictor
from gatekit.runtimes import FORMAT_RUNTIME

RUNTIME_FORMAT = {"onnxruntime": "onnx", "openvino": "openvino", "tensorrt": "tensorrt"}  # LUT runtime -> format


def threshold_options(usage, n_samples: int, round_to: int, gate_group: int, max_options: int = 200) -> list[tuple[float, list[int]]]:
    """(t, widths) for usage thresholds t from 0 up, one per distinct width configuration."""
    from gatekit.export.prune import select_all

    freqs = np.unique(np.concatenate([u.double().numpy() / n_samples for u in usage]))
    ts = np.unique(np.concatenate([[0.0], freqs[freqs < 1.0]]))
    if len(ts) > max_options:
        ts = ts[np.unique(np.linspace(0, len(ts) - 1, max_options).round().astype(int))]
    out, seen = [], set()
    for t in ts:
        widths = [len(c) for c in select_all(usage, n_samples, float(t), round_to, gate_group)]
        if tuple(widths) not in seen:
            seen.add(tuple(widths))
            out.append((float(t), widths))
    return out


def choose(lut: dict, options: list[tuple[float, list[int]]], target_ms: float, percentile: int,
           margin: float = 0.0) -> dict:
    """The option with the smallest threshold whose predicted latency meets the target less `margin`
    (a fraction, for the predictor's error); GatekitError if none does."""
    key = f"p{percentile}_ms"
    if not 0 <= margin < 1:
        raise GatekitError(f"margin must be in [0, 1), got {margin}")
    budget_ms = target_ms * (1 - margin)
    if key not in ("p50_ms", "p90_ms"):
        raise GatekitError("a LUT predicts p50 and p90: use --percentile 50 or 90")
    rows = [{"min_usage": t, "widths": w, **{f"predicted_{k}": v for k, v in predictor.predict(lut, w).items()}}
            for t, w in options]
    feasible = [r for r in rows if r[f"predicted_{key}"] <= budget_ms]
    if not feasible:
        fastest = min(rows, key=lambda r: r[f"predicted_{key}"])
        raise GatekitError(f"no static width configuration of this checkpoint is predicted to meet {target_ms:g} ms"
                           f"{f' less a {100 * margin:g}% margin' if margin else ''}: the "
                           f"smallest ({fastest['widths']}) is predicted at {fastest[f'predicted_{key}']:.3f} ms")
    best = min(feasible, key=lambda r: r["min_usage"])
    return {"chosen": best, "options": rows}


def plan_and_measure(checkpoint: str | Path, lut: dict, target_ms: float, out_dir: str | Path, *, percentile: int = 90,
                     margin: float = 0.05, data_dir: str | None = None, calib: int = 2000, protocol=None, n_inputs: int = 256,
                     accuracy: bool = True, progress: bool = True) -> dict:
    """Plans widths for the target, exports the static graph in the LUT runtime's format, measures it."""
    from gatekit.bench.protocol import Protocol
    from gatekit.export.exporter import ExportOptions, Prepared, export

    rt = lut["runtime"]["name"]
    if rt not in RUNTIME_FORMAT:
        raise GatekitError(f"the LUT was built on {rt}; plans export for {', '.join(RUNTIME_FORMAT)}")
    fmt = RUNTIME_FORMAT[rt]
    round_to = int(lut["round_to"])
    opts = ExportOptions(graph="static", fmt=fmt, calib=calib, round_to=round_to, data_dir=data_dir,
                         threads=lut.get("threads"), knn_check=accuracy)
    prep = Prepared(checkpoint, opts, progress)
    predictor.check_arch(lut, prep.model.cfg.to_dict())
    options = threshold_options(prep.usage, prep.calib_n, round_to, prep.model.cfg.gate_group)
    plan = choose(lut, options, target_ms, percentile, margin)
    chosen = plan["chosen"]
    if chosen["min_usage"] > 0:  # re-select the channels at the chosen threshold (same calibration)
        prep.reselect(chosen["min_usage"])
    manifest = export(checkpoint, out_dir, opts, progress=progress, prepared=prep)
    if list(manifest["widths"]) != chosen["widths"]:
        raise GatekitError(f"the exported widths {manifest['widths']} differ from the planned {chosen['widths']}")
    record = measure_in_fresh_process(Path(out_dir) / f"static.{fmt}.json", FORMAT_RUNTIME[fmt], lut.get("threads"),
                                      protocol or Protocol(), n_inputs, data_dir)
    measured = record["stats"][f"p{percentile}_ms"]
    return {"target_ms": target_ms, "percentile": percentile, "margin": margin, "checkpoint": str(checkpoint), "chosen": chosen,
            "options": plan["options"], "artifact": record["artifact"], "macs_ratio": manifest["macs"]["ratio_to_dense"],
            "agreement": manifest.get("agreement"), "measured": record["stats"], "record": record,
            "meets_target": measured <= target_ms,
            "prediction_error": chosen[f"predicted_p{percentile}_ms"] / measured - 1}


def measure_in_fresh_process(manifest: Path, runtime: str, threads: int | None, protocol, n_inputs: int,
                             data_dir: str | None) -> dict:
    """`gatekit bench` on one artifact in its own process: the export's torch threads, which keep spinning
    for a while after their work, must not share the cores with the measurement."""
    import json
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gatekit-pick-") as tmp:
        out = Path(tmp) / "bench.jsonl"
        cmd = [sys.executable, "-m", "gatekit", "bench", str(manifest), "--runtime", runtime, "--batch", "1",
               "--inputs", str(n_inputs), "--warmup-runs", str(protocol.warmup_runs), "--warmup-seconds",
               str(protocol.warmup_seconds), "--min-runs", str(protocol.min_runs), "--min-seconds", str(protocol.min_seconds),
               "--json", str(out), "--quiet"]
        if threads:
            cmd += ["--threads", str(threads)]
        if data_dir:
            cmd += ["--data-dir", str(data_dir)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [x for x in proc.stderr.splitlines() if x.strip()]
            raise GatekitError(f"measuring {manifest.name} failed: {lines[-1] if lines else proc.returncode}")
        return json.loads(out.read_text().splitlines()[0])


def plot_plan(result: dict, lut: dict, path: str | Path) -> None:
    """Predicted latency of every threshold's widths against its MACs, the target, the planned option and
    its measurement (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from gatekit.atomic import atomic_path
    from gatekit.pick.synth import ArchShape

    arch = ArchShape(**lut["arch"])
    dense = arch.macs([b["planes"] for b in lut["blocks"]])
    key = f"p{result['percentile']}_ms"
    fig = Figure(figsize=(6.4, 4.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    rows = result["options"]
    ax.plot([arch.macs(r["widths"]) / dense for r in rows], [r[f"predicted_{key}"] for r in rows], ".-", alpha=0.6,
            label="static widths by usage threshold (predicted)")
    c = result["chosen"]
    x = arch.macs(c["widths"]) / dense
    ax.scatter([x], [c[f"predicted_{key}"]], s=90, facecolors="none", edgecolors="red", linewidths=2, label="planned (predicted)")
    ax.scatter([x], [result["measured"][key]], marker="x", s=70, color="black", label="planned (measured)")
    ax.axhline(result["target_ms"], color="red", ls="--", lw=1, label=f"target {result['target_ms']:.3g} ms")
    ax.set_xlabel("MACs / dense")
    ax.set_ylabel(f"p{result['percentile']} latency (ms)")
    ax.set_title(f"{lut['runtime']['name']} {lut['threads']}T, {lut['arch']['arch']} @{lut['arch']['input_size']}px", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
