"""The multiply-accumulates an exported graph computes, for its manifest: from the architecture's cost model
(gatekit.models) and the graph's widths, per input for a dynamic graph (its active widths on real images), and
independently by torch's FlopCounterMode for the graphs of fixed widths."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from gatekit.data import load_dataset

if TYPE_CHECKING:
    from gatekit.export.exporter import Prepared


def graph_macs(prep: Prepared, form: str | None = None, precision: str = "fp32") -> dict:
    """The manifest's `macs`: the mean (and for a dynamic graph p50 and p90 over the calibration images), the dense
    encoder's, their ratio and the FlopCounterMode count."""
    from gatekit.evaluate.flops_stats import flops_stats

    spec = prep.graphs.graph(form, precision)[1]
    g = prep.opts.graph
    cost = prep.cost
    dense = cost.dense_macs
    if g == "dense":
        macs = {"mean": dense if prep.pruned is None else cost.static_macs(spec.widths)}
    elif g == "static":
        macs = {"mean": cost.static_macs(prep.graphs.spec.widths)}
    elif g == "hybrid":
        gate = sum(b.gate.macs for b in prep.graphs.net.blocks)
        macs = {"mean": cost.static_macs(prep.graphs.spec.widths) + gate}
    else:
        active = prep.usage.active
        s = flops_stats(cost, executed_active(active, spec))
        macs = {
            "mean": s["mean_macs"],
            "p50": s["p50_macs"],
            "p90": s["p90_macs"],
            "note": f"per input, over {prep.usage.images} calibration images",
            "mean_active_widths": [round(float(v), 2) for v in active.double().mean(dim=0).tolist()],
        }
    macs["dense"] = dense
    macs["ratio_to_dense"] = macs["mean"] / dense
    macs["flop_counter_macs"] = (
        flop_counter_macs(prep.graphs.net, prep.model.cfg.input_size) if g != "dynamic" else None
    )
    return macs


def executed_active(active: torch.Tensor, spec) -> torch.Tensor:
    """Per-sample inner widths a dynamic graph computes: the active channels in blocks that skip, every
    channel it keeps in blocks that only mask (their convs run whole)."""
    full = torch.tensor(spec.widths, dtype=active.dtype)
    skip = torch.tensor(spec.skipping or [True] * len(full))
    return torch.where(skip[None, :], active, full[None, :])


def per_input_macs(prep: Prepared, progress: bool, form: str | None = None, precision: str = "fp32") -> dict:
    """Per-input MACs of the dynamic graph on the first --record-inputs test images (batch 1), for `gatekit bench`."""
    from gatekit.evaluate.features import extract_features
    from gatekit.evaluate.flops_stats import per_sample_macs

    test = load_dataset(
        prep.dataset, "test", prep.data_root, limit=prep.opts.record_inputs, image_size=prep.model.cfg.input_size
    )
    active = extract_features(
        prep.model, test.images, prep.mean, prep.std, "gated", progress=progress, desc="per-input MACs"
    ).active
    macs = per_sample_macs(prep.cost, executed_active(active, prep.graphs.graph(form, precision)[1]))
    return {
        "dataset": prep.dataset,
        "split": "test",
        "first": len(test),
        "macs": [int(m) for m in macs.tolist()],
        "active_widths": active.round().int().tolist(),
    }


def flop_counter_macs(net: torch.nn.Module, size: int) -> int:
    """An independent count: torch's FlopCounterMode on the deploy module (convs and FCs), halved."""
    from torch.utils.flop_counter import FlopCounterMode

    head, net.head = net.head, None
    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            net(torch.zeros(1, 3, size, size))
    finally:
        net.head = head
    return counter.get_total_flops() // 2
