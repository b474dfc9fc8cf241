"""The one way gatekit draws a PNG: an off-screen matplotlib figure (no display, no pyplot state), saved
atomically. matplotlib is imported only when a figure is made."""

from __future__ import annotations

import os

from gatekit.atomic import atomic_path


def new_figure(figsize: tuple[float, float], **kwargs):
    """A matplotlib Figure with an Agg canvas attached."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def legend_outside(fig, handles=None, labels=None, **kwargs):
    """One legend for the whole figure, right of its axes, so that it never covers a data point. Without
    handles: every labelled artist of every axes, once per label. The figure needs layout="constrained"
    (new_figure(..., layout="constrained")), which makes room for it."""
    if handles is None:
        seen: dict = {}
        for ax in fig.axes:
            for h, name in zip(*ax.get_legend_handles_labels()):
                seen.setdefault(name, h)
        handles, labels = list(seen.values()), list(seen.keys())
    elif labels is None:
        labels = [h.get_label() for h in handles]
    return fig.legend(handles, labels, loc="outside right upper", fontsize=7, **kwargs)


def save_png(fig, path: str | os.PathLike, dpi: int = 120, tight: bool = True) -> None:
    """Lays the figure out (unless it uses a layout engine of its own) and writes it to `path` atomically."""
    if tight and fig.get_layout_engine() is None:
        fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
