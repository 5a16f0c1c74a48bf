"""The sweep's figures: validation accuracy against whatever was swept, and every job's curves.

How many keys the jobs' overrides vary decides the figure (``plot_by_params``):

- none (one job), or single runs that each set other keys (``outputs/runs``): a bar per job,
  labelled by its overrides;
- one key: accuracy against that key (log axis for a wide numeric range, bars for choices);
- two keys: a heat map over them when the jobs form a grid (or either key is a choice),
  a scatter coloured by accuracy otherwise (Optuna's continuous draws);
- three or more: parallel coordinates, one axis per key and one for accuracy, one line per job.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.ticker import NullFormatter

from gender.plots import integer_epochs, new_figure, save_png
from gender.sweep_summary.jobs import RANK_METRIC, JobRecord, number
from gender.sweep_summary.table import format_value

#: One file per kind of figure; a rebuild removes the others (a sweep gains keys as jobs finish).
FIGURES = {
    "by_job": "accuracy_by_job.png",
    "by_param": "accuracy_by_param.png",
    "heatmap": "heatmap.png",
    "scatter": "heatmap.png",
    "parallel": "parallel_coordinates.png",
}
CURVES_PNG = "learning_curves.png"
FAILED = "#aa0000"

_MAX_LEGEND = 20
_MAX_GRID_CELLS = 400


def _natural(text: str) -> list[Any]:
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text) if t]


class Axis:
    """The values one swept key took: numbers on a (log) scale, or choices in order."""

    def __init__(self, key: str, values: Sequence[Any]) -> None:
        self.key = key
        present = [v for v in values if v is not None]
        self.numeric = bool(present) and all(number(v) is not None for v in present)
        if self.numeric:
            self.levels: list[Any] = sorted({number(v) for v in present})
            positive = [v for v in self.levels if v > 0]
            self.log = len(positive) == len(self.levels) > 1 and max(positive) / min(positive) >= 10
        else:
            self.levels = sorted({str(v) for v in present}, key=_natural)
            self.log = False

    def index(self, value: Any) -> int:
        return self.levels.index(number(value) if self.numeric else str(value))

    def position(self, value: Any) -> float:
        """Where ``value`` sits on a [0, 1] axis (parallel coordinates)."""
        if value is None:
            return math.nan
        if not self.numeric or len(self.levels) < 2:
            return self.index(value) / max(1, len(self.levels) - 1) if len(self.levels) > 1 else 0.5
        f = math.log10 if self.log else (lambda x: x)
        lo, hi = f(self.levels[0]), f(self.levels[-1])
        return (f(number(value)) - lo) / (hi - lo)

    def labels(self) -> list[str]:
        return [format_value(v, 3) if self.numeric else str(v) for v in self.levels]


def _accuracies(jobs: Sequence[JobRecord]) -> tuple[float, float]:
    values = [j.val_accuracy for j in jobs if j.val_accuracy is not None]
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    return (lo - 0.01, hi + 0.01) if lo == hi else (lo, hi)


def _best(jobs: Sequence[JobRecord]) -> JobRecord | None:
    return jobs[0] if jobs and jobs[0].status == "completed" and jobs[0].val_accuracy is not None else None


def plot_by_params(jobs: Sequence[JobRecord], keys: Sequence[str], out_dir: Path) -> tuple[str, Path]:
    """Draw the figure that fits the number of swept keys into ``out_dir``; (kind, path).

    ``jobs`` come best first (as ``collect_jobs`` returns them)."""
    keys = [k for k in keys if any(k in j.params for j in jobs)]
    # single runs that each set different keys (outputs/runs) have no axes to share: a bar each;
    # single runs that all set the same keys (a W&B agent's) are a search like any sweep
    searched = all(k in j.override_dict() for j in jobs for k in keys)
    if not keys or not (any(j.multirun for j in jobs) or searched):
        kind, fig = "by_job", _by_job(jobs)
    elif len(keys) == 1:
        kind, fig = "by_param", _by_param(jobs, keys[0])
    elif len(keys) == 2:
        kind, fig = _two_keys(jobs, keys[0], keys[1])
    else:
        kind, fig = "parallel", _parallel(jobs, keys)
    path = save_png(fig, out_dir / FIGURES[kind])
    for stale in set(FIGURES.values()) - {FIGURES[kind]}:
        (out_dir / stale).unlink(missing_ok=True)
    return kind, path


def _by_job(jobs: Sequence[JobRecord]) -> Any:
    fig = new_figure(7.0, 1.2 + 0.32 * max(3, len(jobs)))
    ax = fig.add_subplot()
    ordered = list(reversed(jobs))  # best at the top
    values = [j.val_accuracy or 0.0 for j in ordered]
    colours = [FAILED if j.val_accuracy is None else "tab:blue" for j in ordered]
    ax.barh(range(len(ordered)), values, color=colours)
    ax.set_yticks(range(len(ordered)), [_short(j.label) for j in ordered], fontsize=8)
    lo, hi = _accuracies(jobs)
    ax.set_xlim(max(0.0, lo - (hi - lo)), min(1.0, hi + (hi - lo) * 0.3) if hi < 1 else 1.0)
    for i, job in enumerate(ordered):
        text = format_value(job.val_accuracy) if job.val_accuracy is not None else job.status
        ax.text(values[i], i, f" {text}", va="center", fontsize=8)
    ax.set_xlabel(RANK_METRIC)
    ax.set_title(f"{RANK_METRIC} per job")
    ax.grid(axis="x", alpha=0.3)
    return fig


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3) :]


def _by_param(jobs: Sequence[JobRecord], key: str) -> Any:
    axis = Axis(key, [j.params.get(key) for j in jobs])
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    ok = [j for j in jobs if j.val_accuracy is not None and j.params.get(key) is not None]
    bad = [j for j in jobs if j.val_accuracy is None and j.params.get(key) is not None]
    lo, _ = _accuracies(jobs)

    def x_of(job: JobRecord) -> float:
        return number(job.params[key]) if axis.numeric else axis.index(job.params[key])

    if not axis.numeric:
        means = [
            np.mean([j.val_accuracy for j in ok if str(j.params[key]) == level] or [np.nan])
            for level in axis.levels
        ]
        ax.bar(
            range(len(axis.levels)), np.nan_to_num(means, nan=0.0), color="tab:blue", alpha=0.35, label="mean"
        )
        ax.set_xticks(range(len(axis.levels)), axis.labels())
    elif len(axis.levels) > 1:
        means = [
            np.mean([j.val_accuracy for j in ok if number(j.params[key]) == v] or [np.nan])
            for v in axis.levels
        ]
        ax.plot(axis.levels, means, "-", color="tab:blue", alpha=0.5)
    ax.scatter([x_of(j) for j in ok], [j.val_accuracy for j in ok], color="tab:blue", zorder=3, label="job")
    best = _best(jobs)
    if best is not None and best in ok:
        ax.scatter(
            [x_of(best)],
            [best.val_accuracy],
            s=200,
            facecolors="none",
            edgecolors="red",
            linewidths=2,
            zorder=4,
            label=f"best ({best.label})",
        )
    if bad:
        ax.scatter(
            [x_of(j) for j in bad],
            [lo] * len(bad),
            marker="x",
            color=FAILED,
            zorder=3,
            label="failed / no result",
        )
    if axis.log:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    if axis.numeric and len(axis.levels) <= 8:
        ax.set_xticks(axis.levels, axis.labels())
    ax.set_xlabel(key)
    ax.set_ylabel(RANK_METRIC)
    ax.set_title(f"{RANK_METRIC} by {key}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def _two_keys(jobs: Sequence[JobRecord], x_key: str, y_key: str) -> tuple[str, Any]:
    have = [j for j in jobs if x_key in j.params and y_key in j.params]
    xa = Axis(x_key, [j.params[x_key] for j in have])
    ya = Axis(y_key, [j.params[y_key] for j in have])
    cells = {(xa.index(j.params[x_key]), ya.index(j.params[y_key])) for j in have}
    full = len(cells) == len(xa.levels) * len(ya.levels)
    small = len(xa.levels) * len(ya.levels) <= _MAX_GRID_CELLS
    if small and (full or not (xa.numeric and ya.numeric)):
        return "heatmap", _heatmap(have, xa, ya)
    return "scatter", _scatter(have, xa, ya)


def _heatmap(jobs: Sequence[JobRecord], xa: Axis, ya: Axis) -> Any:
    members: dict[tuple[int, int], list[JobRecord]] = {}
    for job in jobs:
        members.setdefault((ya.index(job.params[ya.key]), xa.index(job.params[xa.key])), []).append(job)
    values = np.full((len(ya.levels), len(xa.levels)), np.nan)
    for (r, c), group in members.items():
        accs = [j.val_accuracy for j in group if j.val_accuracy is not None]
        if accs:
            values[r, c] = float(np.mean(accs))
    vmin, vmax = _accuracies(jobs)
    fig = new_figure(2.2 + 1.1 * len(xa.levels), 1.6 + 0.7 * len(ya.levels))
    ax = fig.add_subplot()
    image = ax.imshow(
        np.ma.masked_invalid(values), cmap="viridis", vmin=vmin, vmax=vmax, origin="lower", aspect="auto"
    )
    ax.set_facecolor("#dddddd")  # cells no job ran
    best = _best(jobs)
    for (r, c), group in members.items():
        if np.isfinite(values[r, c]):
            text = format_value(values[r, c], 3) + (f"\n(mean of {len(group)})" if len(group) > 1 else "")
            colour = "black" if (values[r, c] - vmin) / (vmax - vmin) > 0.6 else "white"
        else:
            text = "failed" if all(j.status == "failed" for j in group) else group[0].status
            colour = FAILED
        weight = "bold" if best is not None and best in group else "normal"
        ax.text(c, r, text, ha="center", va="center", color=colour, fontsize=9, fontweight=weight)
    ax.set_xticks(range(len(xa.levels)), xa.labels())
    ax.set_yticks(range(len(ya.levels)), ya.labels())
    ax.set_xlabel(xa.key)
    ax.set_ylabel(ya.key)
    fig.colorbar(image, ax=ax, label=RANK_METRIC)
    ax.set_title(f"{RANK_METRIC} over {xa.key} x {ya.key}" + (" (best in bold)" if best else ""), fontsize=10)
    return fig


def _scatter(jobs: Sequence[JobRecord], xa: Axis, ya: Axis) -> Any:
    fig = new_figure(6.4, 4.6)
    ax = fig.add_subplot()

    def xy(job: JobRecord) -> tuple[float, float]:
        return (
            number(job.params[xa.key]) if xa.numeric else xa.index(job.params[xa.key]),
            number(job.params[ya.key]) if ya.numeric else ya.index(job.params[ya.key]),
        )

    ok = [j for j in jobs if j.val_accuracy is not None]
    bad = [j for j in jobs if j.val_accuracy is None]
    vmin, vmax = _accuracies(jobs)
    if ok:
        points = ax.scatter(
            *zip(*map(xy, ok), strict=True),
            c=[j.val_accuracy for j in ok],
            cmap="viridis",
            vmin=vmin,
            vmax=vmax,
            s=70,
            edgecolors="black",
        )
        fig.colorbar(points, ax=ax, label=RANK_METRIC)
    best = _best(jobs)
    if best is not None and best in ok:
        ax.scatter(
            *zip(xy(best), strict=True),
            s=260,
            facecolors="none",
            edgecolors="red",
            linewidths=2,
            label=f"best ({best.label})",
        )
    if bad:
        ax.scatter(
            *zip(*map(xy, bad), strict=True), marker="x", color=FAILED, s=60, label="failed / no result"
        )
    for job in jobs:
        ax.annotate(job.label, xy(job), textcoords="offset points", xytext=(5, 5), fontsize=7)
    for axis, set_scale, set_ticks, minor in (
        (xa, ax.set_xscale, ax.set_xticks, ax.xaxis),
        (ya, ax.set_yscale, ax.set_yticks, ax.yaxis),
    ):
        if axis.log:
            set_scale("log")
            minor.set_minor_formatter(NullFormatter())
        if not axis.numeric:
            set_ticks(range(len(axis.levels)), axis.labels())
    if best is not None or bad:
        ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_xlabel(xa.key)
    ax.set_ylabel(ya.key)
    ax.set_title(f"{RANK_METRIC} over {xa.key} x {ya.key}")
    return fig


def _parallel(jobs: Sequence[JobRecord], keys: Sequence[str]) -> Any:
    axes = [Axis(k, [j.params.get(k) for j in jobs]) for k in keys]
    lo, hi = _accuracies(jobs)
    fig = new_figure(1.2 + 1.9 * (len(keys) + 1), 4.8)
    ax = fig.add_subplot()
    cmap = colormaps["viridis"]
    best = _best(jobs)
    n = len(axes)
    # worst first, so the best lines are drawn on top
    for job in sorted(jobs, key=lambda j: j.val_accuracy if j.val_accuracy is not None else -1):
        ys = [a.position(job.params.get(a.key)) for a in axes]
        if job.val_accuracy is None:
            ax.plot(range(n), ys, "--", color=FAILED, lw=1, alpha=0.7)
            continue
        acc = (job.val_accuracy - lo) / (hi - lo)
        ys.append(acc)
        is_best = job is best
        ax.plot(
            range(n + 1),
            ys,
            "-o",
            ms=3,
            color="red" if is_best else cmap(acc),
            lw=2.8 if is_best else 1.4,
            alpha=1.0 if is_best else 0.8,
            zorder=3 if is_best else 2,
        )
    for i, axis in enumerate(axes):
        ax.axvline(i, color="black", lw=0.8)
        labels = axis.labels()
        step = max(1, math.ceil(len(labels) / 8))
        for level, label in list(zip(axis.levels, labels, strict=True))[::step]:
            ax.text(
                i - 0.04,
                axis.position(level),
                label,
                ha="right",
                va="center",
                fontsize=7,
                zorder=5,
                bbox={"fc": "white", "ec": "none", "pad": 1, "alpha": 0.85},
            )
    ax.axvline(n, color="black", lw=0.8)
    for frac in (0.0, 0.5, 1.0):
        ax.text(
            n + 0.04,
            frac,
            format_value(lo + frac * (hi - lo), 3),
            ha="left",
            va="center",
            fontsize=7,
            zorder=5,
            bbox={"fc": "white", "ec": "none", "pad": 1, "alpha": 0.85},
        )
    ax.set_xticks(range(n + 1), [*keys, RANK_METRIC], fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.6, n + 0.4)
    ax.set_ylim(-0.05, 1.05)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    note = f"red: best job {best.label}; " if best is not None else ""
    ax.set_title(
        f"{RANK_METRIC} across {len(keys)} swept keys ({note}colour: {RANK_METRIC}; dashed: failed)",
        fontsize=10,
    )
    return fig


def _job_caption(job: JobRecord, keys: Sequence[str]) -> str:
    parts = [f"{k.split('.')[-1]}={format_value(job.params.get(k))}" for k in keys if k in job.params]
    if not job.multirun:
        parts = parts or [_short(job.label, 40)]
        return " ".join(parts) + (" (failed)" if job.status == "failed" else "")
    return " ".join([job.label, *parts]) + (" (failed)" if job.status == "failed" else "")


def plot_sweep_curves(jobs: Sequence[JobRecord], path: Path, keys: Sequence[str]) -> Path:
    """Every job's val_accuracy and loss per epoch (from its history.csv), the best job thicker."""
    fig = new_figure(12.0, 4.8)
    ax_acc, ax_loss = fig.subplots(1, 2)
    cmap = colormaps["tab20" if len(jobs) > 10 else "tab10"]
    best = _best(jobs)
    drawn = 0
    for i, job in enumerate(jobs):
        if not job.history:
            continue
        epochs = [row.get("epoch", n + 1) for n, row in enumerate(job.history)]  # from 1
        colour = cmap(i % cmap.N)
        width = 2.8 if job is best else 1.3
        style = ":" if job.status == "failed" else "-"
        label = _job_caption(job, keys) if drawn < _MAX_LEGEND else None
        val_acc = [row.get("val_accuracy", math.nan) for row in job.history]
        ax_acc.plot(epochs, val_acc, style, color=colour, lw=width, marker="o", ms=3, label=label)
        loss = [row.get("loss", math.nan) for row in job.history]
        val_loss = [row.get("val_loss", math.nan) for row in job.history]
        ax_loss.plot(epochs, loss, style, color=colour, lw=width, marker="o", ms=3)
        ax_loss.plot(epochs, val_loss, "--", color=colour, lw=width, alpha=0.8)
        drawn += 1
    ax_acc.set_title(
        "val_accuracy per epoch"
        + (f" (legend: first {_MAX_LEGEND} of {drawn})" if drawn > _MAX_LEGEND else "")
    )
    ax_acc.set_ylabel("val_accuracy")
    ax_loss.set_title("loss per epoch (solid: train, dashed: validation)")
    ax_loss.set_ylabel("loss")
    for ax in (ax_acc, ax_loss):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        integer_epochs(ax)
    if drawn:
        ax_acc.legend(fontsize=7, loc="best")
    else:
        ax_acc.text(0.5, 0.5, "no history.csv yet", ha="center", va="center", transform=ax_acc.transAxes)
    return save_png(fig, path)
