"""Per-run figures a person would rather look at than read."""

from __future__ import annotations

import csv
import os
from pathlib import Path


def plot_learning_curves(history_csv: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Accuracy and loss per epoch, train vs validation, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    with open(history_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    epochs = [int(r["epoch"]) for r in rows]
    fig = Figure(figsize=(10, 4), dpi=100)
    for i, metric in enumerate(("accuracy", "loss")):
        ax = fig.add_subplot(1, 2, i + 1)
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            values = [float(r[key]) for r in rows if r.get(key)]
            if values:
                ax.plot(epochs[: len(values)], values, marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
