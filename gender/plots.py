"""Figure plumbing shared by every figure of the project, and the run's learning curves.

``new_figure`` / ``save_png``: object-oriented matplotlib on the Agg canvas (no pyplot): no
global state, no GUI backend, safe in worker threads and under any ``MPLBACKEND``; every PNG is
written atomically. The evaluation figures (confusion matrix, ROC, reliability, mistakes) live
beside their numbers in ``gender.evaluation``, the sweep's in ``gender.sweep_summary.figures``.
Nothing here imports TensorFlow or scikit-learn (the sweep summary runs in the launching process).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from gender.io import atomic_path

DPI = 110


def new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    """A figure on its own Agg canvas; constrained layout unless the caller places the axes."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as PNG atomically (readers never see half a file)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def integer_epochs(ax: Any) -> None:
    """Epoch axes show whole epochs only."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


# --------------------------------------------------------------------------- training


def read_history(history_csv: str | os.PathLike[str]) -> list[dict[str, float]]:
    """``history.csv`` rows as floats (empty cells left out); [] when the file is missing."""
    try:
        with open(history_csv, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return []
    out = []
    for row in rows:
        parsed = {}
        for key, value in row.items():
            try:
                parsed[key] = float(value)
            except (TypeError, ValueError):
                continue
        out.append(parsed)
    return out


def plot_learning_curves(
    history_csv: str | os.PathLike[str], path: str | os.PathLike[str], best_epoch: int | None = None
) -> Path:
    """Accuracy, loss (train vs validation) and learning rate per epoch, the checkpointed
    (best) epoch marked; epochs numbered as in ``history.csv`` (from 1)."""
    rows = read_history(history_csv)
    epochs = [int(r.get("epoch", i + 1)) for i, r in enumerate(rows)]
    fig = new_figure(7.5, 5.6)
    panels = fig.subplot_mosaic([["accuracy", "loss"], ["lr", "lr"]], height_ratios=[3, 1.3])
    for metric in ("accuracy", "loss"):
        ax = panels[metric]
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            points = [(e, r[key]) for e, r in zip(epochs, rows, strict=True) if key in r]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", ms=3, label=label)
        ax.set_title(metric)
    lr = [(e, r["learning_rate"]) for e, r in zip(epochs, rows, strict=True) if "learning_rate" in r]
    if lr:
        panels["lr"].plot(*zip(*lr, strict=True), color="tab:gray", marker="o", ms=3)
        panels["lr"].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    panels["lr"].set_ylabel("learning rate")
    for ax in panels.values():
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        integer_epochs(ax)
        if best_epoch is not None and epochs:
            ax.axvline(
                best_epoch,
                color="tab:red",
                ls="--",
                lw=1,
                label=f"best epoch {best_epoch} (saved)" if ax is panels["accuracy"] else None,
            )
    if rows:
        panels["accuracy"].legend(loc="lower right", fontsize=8)
        panels["loss"].legend(loc="upper right", fontsize=8)
    else:
        panels["accuracy"].text(
            0.5, 0.5, "no epochs recorded", ha="center", va="center", transform=panels["accuracy"].transAxes
        )
    return save_png(fig, path)
