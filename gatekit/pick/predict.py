"""Latency prediction from a per-device table (a LUT from `gatekit profile`). Torch-free.

A static configuration (one inner width per block) is predicted as

    p = scale_p * (stem + head + sum_b block_b(w_b)) + offset_p        for p in p50, p90

where block_b(w) is the table's p50 at width w (linear between grid widths), and scale/offset are
fitted by least squares on whole networks measured on the same device (the table's calibration). For a
dynamic graph, each input's active widths give one prediction; the distribution over a dataset gives
the predicted percentiles (labelled predicted: the dynamic graph's gathers are not in the table).
"""

from __future__ import annotations

import numpy as np

from gatekit.errors import GatekitError

TOLERANCE = 0.10  # the nn-Meter standard: within +-10% of the measurement


def table_sum(lut: dict, widths) -> float:
    """stem + head + every block's table p50 at its width (ms)."""
    blocks = lut["blocks"]
    if len(widths) != len(blocks):
        raise GatekitError(f"the LUT has {len(blocks)} blocks, the configuration {len(widths)} widths")
    total = lut["stem"]["p50_ms"] + lut["head"]["p50_ms"]
    low = lut.get("min_width", 1)  # a native op's table starts at 0 active channels
    for b, w in zip(blocks, widths):
        if not low <= w <= b["planes"]:
            raise GatekitError(f"block {b['index']}: width {w} is outside 1..{b['planes']}")
        total += float(np.interp(w, b["widths"], b["p50_ms"]))
    return total


def calibrate(lut: dict, configs: list[list[int]], measured: list[dict]) -> dict:
    """Fits scale and offset per percentile on whole networks measured on the device."""
    sums = np.array([table_sum(lut, w) for w in configs])
    fit = {}
    for key in ("p50_ms", "p90_ms"):
        y = np.array([m[key] for m in measured])
        if len(configs) >= 2 and np.ptp(sums) > 0:
            scale, offset = np.polyfit(sums, y, 1)
        else:
            scale, offset = float(np.mean(y / sums)), 0.0
        fit[key] = {"scale": float(scale), "offset_ms": float(offset)}
    return {
        "configs": [
            {"widths": list(map(int, w)), "table_sum_ms": float(s), "measured": m}
            for w, s, m in zip(configs, sums, measured)
        ],
        "fit": fit,
    }


def predict(lut: dict, widths) -> dict:
    s = table_sum(lut, widths)
    fit = lut["calibration"]["fit"]
    return {k: fit[k]["scale"] * s + fit[k]["offset_ms"] for k in ("p50_ms", "p90_ms")}


def compare(lut: dict, widths, measured: dict) -> dict:
    pred = predict(lut, widths)
    row = {"widths": list(map(int, widths))}
    for k in ("p50_ms", "p90_ms"):
        row[f"predicted_{k}"] = pred[k]
        row[f"measured_{k}"] = measured[k]
        row[f"error_{k[:3]}"] = pred[k] / measured[k] - 1
    return row


def summarise(rows: list[dict]) -> dict:
    out: dict = {"configs": rows, "count": len(rows), "tolerance": TOLERANCE}
    for p in ("p50", "p90"):
        err = np.array([r[f"error_{p}"] for r in rows]) if rows else np.zeros(0)
        out[f"within_tolerance_{p}"] = float(np.mean(np.abs(err) <= TOLERANCE)) if rows else None
        out[f"median_abs_error_{p}"] = float(np.median(np.abs(err))) if rows else None
        out[f"max_abs_error_{p}"] = float(np.max(np.abs(err))) if rows else None
    return out


def native_precision(lut: dict) -> str:
    """The precision of the op a LUT's native table timed: "int8" (the int8 op, from `gatekit profile --native
    --precision int8`) or "fp32"."""
    native = lut.get("native") or {}
    return native.get("precision") or ("int8" if lut.get("precision") == "int8" else "fp32")


def native_view(lut: dict, precision: str | None = None) -> dict:
    """The LUT as seen by a dynamic graph in the native form: its stem and head, and per block the native
    gated-block op (gate inside) at 0..planes active channels, with that table's own calibration. `precision`
    (fp32 or int8): the dynamic graph's, which the table must have timed (the fp32 op and the int8 op differ)."""
    native = lut.get("native")
    if not native:
        raise GatekitError(
            "the LUT has no native op table: build it with `gatekit profile --native` (needs `gatekit ops build`)"
        )
    timed = native_precision(lut)
    if precision is not None and precision != timed:
        raise GatekitError(
            f"the LUT's native op table times the {timed} op, the graph is {precision}: build a LUT "
            f"with `gatekit profile --native --precision {precision}`"
        )
    view = {"stem": lut["stem"], "head": lut["head"], "blocks": native["blocks"], "min_width": 0, "precision": timed}
    if "calibration" in native:
        view["calibration"] = native["calibration"]
    return view


def predict_dynamic(
    lut: dict, per_input_widths: np.ndarray, native: bool = False, precision: str | None = None
) -> dict:
    """Predicted latency distribution of a dynamic graph from each input's active widths (N x blocks).

    native: from the native op's table (what a native-form dynamic graph runs; per input, p50 and p90 of
    that input), which must have timed the graph's `precision` when given (an int8 dynamic graph: a LUT from
    `gatekit profile --native --precision int8`). Otherwise from the static table, a lower bound for the
    standard-ops forms (their gathers are not in the table)."""
    table = native_view(lut, precision) if native else lut
    widths = np.asarray(per_input_widths)
    if widths.ndim != 2 or widths.shape[1] != len(table["blocks"]):
        raise GatekitError(f"per-input widths must be N x {len(table['blocks'])}, got {widths.shape}")
    rows = widths if native else np.maximum(widths, 1)
    per_input = [predict(table, row) for row in rows]
    p50 = np.array([p["p50_ms"] for p in per_input])
    return {
        "predicted": True,
        "native": native,
        "precision": table.get("precision", lut.get("precision", "fp32")),
        "inputs": int(len(p50)),
        "p50_ms": float(np.percentile(p50, 50)),
        "p90_ms": float(np.percentile(p50, 90)),
        "p99_ms": float(np.percentile(p50, 99)),
        "per_input_ms": p50.tolist(),
        "per_input_p90_ms": [p["p90_ms"] for p in per_input],
    }


def check_arch(lut: dict, model_config: dict) -> None:
    """GatekitError unless the LUT was built for the architecture of `model_config`."""
    from gatekit.models.arch import Architecture

    have = lut["arch"]
    want = Architecture.from_model_config(model_config).to_dict()
    if have != want:
        raise GatekitError(f"the LUT was built for {have}, the checkpoint is {want}: run `gatekit profile` for it")
