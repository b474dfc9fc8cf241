"""How the gates use each block's channels (the paper's Figure 1).

For every block a channel is *always on* if the gate switched it on for every sample, *always
off* if for none, and *data-dependent* otherwise. `mean_active` is the mean number of active
channels per sample.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from gatekit.errors import GatekitError


def channel_usage(usage: Sequence[torch.Tensor], n_samples: int, block_names: Sequence[str]) -> list[dict]:
    """One row per block from per-channel on-counts (`Features.usage`) over `n_samples` samples."""
    if n_samples < 1:
        raise GatekitError(f"n_samples must be >= 1, got {n_samples}")
    if len(usage) != len(block_names):
        raise GatekitError(f"{len(usage)} usage vectors for {len(block_names)} blocks")
    rows = []
    for name, counts in zip(block_names, usage, strict=True):
        c = torch.as_tensor(counts).to(torch.float64).flatten().round()
        if bool((c < 0).any()) or bool((c > n_samples).any()):
            raise GatekitError(f"block {name}: channel counts must lie in [0, {n_samples}]")
        on = int((c == n_samples).sum())
        off = int((c == 0).sum())
        rows.append(
            {
                "block": str(name),
                "channels": int(c.numel()),
                "always_on": on,
                "always_off": off,
                "data_dependent": int(c.numel()) - on - off,
                "mean_active": float(c.sum()) / n_samples,
                "usage": [round(float(f), 4) for f in c / n_samples],
            }
        )
    return rows


def format_usage_table(rows: Sequence[dict]) -> str:
    """Markdown table of the per-block counts (without the per-channel frequencies), with a total row."""
    lines = [
        "| block | channels | always on | data-dependent | always off | mean active | active % |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        pct = 100.0 * r["mean_active"] / r["channels"] if r["channels"] else 0.0
        lines.append(
            f"| {r['block']} | {r['channels']} | {r['always_on']} | {r['data_dependent']} | {r['always_off']} "
            f"| {r['mean_active']:.1f} | {pct:.1f} |"
        )
    if rows:
        tot = {
            k: sum(r[k] for r in rows) for k in ("channels", "always_on", "data_dependent", "always_off", "mean_active")
        }
        pct = 100.0 * tot["mean_active"] / tot["channels"] if tot["channels"] else 0.0
        lines.append(
            f"| **total** | {tot['channels']} | {tot['always_on']} | {tot['data_dependent']} | {tot['always_off']} "
            f"| {tot['mean_active']:.1f} | {pct:.1f} |"
        )
    return "\n".join(lines)


COLORS = {"always_on": "#2b8a3e", "data_dependent": "#f59f00", "always_off": "#adb5bd"}
LABELS = {"always_on": "always on", "data_dependent": "data-dependent", "always_off": "always off"}


def plot_channel_usage(rows: Sequence[dict], path: str | os.PathLike, title: str | None = None) -> None:
    """Stacked horizontal bars per block (share of channels always on / data-dependent / always off), as PNG.

    Segments carry their channel counts; a black triangle marks the mean active share per sample.
    Rendered with the Agg canvas directly (no pyplot, so no global backend or figure state) and
    written atomically.
    """
    from gatekit.plotting import new_figure, save_png

    if not rows:
        raise GatekitError("no channel-usage rows to plot")
    n = len(rows)
    fig = new_figure(figsize=(8.0, 1.6 + 0.38 * n), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    ys = list(range(n))[::-1]  # first block at the top
    for y, r in zip(ys, rows):
        left = 0.0
        for key in ("always_on", "data_dependent", "always_off"):
            count = r[key]
            share = count / r["channels"] if r["channels"] else 0.0
            ax.barh(
                y,
                share,
                left=left,
                height=0.72,
                color=COLORS[key],
                edgecolor="white",
                linewidth=0.5,
                label=LABELS[key] if y == ys[0] else None,
            )
            if share >= 0.06:
                ax.text(
                    left + share / 2,
                    y,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if key == "always_on" else "black",
                )
            left += share
        if r["channels"]:
            ax.plot(
                [r["mean_active"] / r["channels"]],
                [y + 0.36],
                marker="v",
                markersize=6,
                color="black",
                linestyle="none",
                clip_on=False,
                label="mean active per sample" if y == ys[0] else None,
            )
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{r['block']} ({r['channels']})" for r in rows], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, n - 0.25)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_xticklabels(["0%", "25%", "50%", "75%", "100%"])
    ax.set_xlabel("share of the block's inner channels (segment labels: channel counts)")
    ax.set_ylabel("block (channels)")
    ax.set_title(title or "Gate channel usage per block")
    fig.legend(loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    save_png(fig, path, tight=False)
