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


def save_png(fig, path: str | os.PathLike, dpi: int = 120, tight: bool = True) -> None:
    """Lays the figure out (unless it uses a layout engine of its own) and writes it to `path` atomically."""
    if tight:
        fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
