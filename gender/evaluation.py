"""Metrics and plots for a binary classifier's predictions.

Pure numpy + matplotlib so that the sweep report, the training run and the
evaluate/predict CLIs can all share one definition of every number, and so
that importing it never pulls in TensorFlow.

Conventions used throughout:

* ``prob`` is the model's probability of class index 1 (``class_names[1]``).
* The predicted class is ``1`` when ``prob >= threshold``.
* Undefined ratios (precision of a class never predicted, recall of a class
  with no examples) are reported as ``0.0``, matching scikit-learn's
  ``zero_division=0``; ``roc_auc`` is ``None`` when only one class is present.
* ECE follows Guo et al. (2017): the *confidence of the predicted class*
  (``prob`` if class 1 is predicted, else ``1 - prob``) is put into 15
  equal-width bins over [0, 1] (intervals ``(lo, hi]``, the first one also
  holds 0), and ECE = sum over bins of ``count/n * |accuracy - mean confidence|``.
"""

from __future__ import annotations

import re

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gender.io import atomic_path

Z95 = 1.959963984540054  # two-sided 95% normal quantile
EPS = 1e-7  # probability clip for the log loss, same as Keras' epsilon
N_BINS = 15


# --------------------------------------------------------------------------- metrics


def wilson_interval(k: int, n: int, z: float = Z95) -> list[float]:
    """Wilson score interval for k successes out of n.

    Used instead of the normal approximation because it stays inside [0, 1]
    and is honest for small test sets and accuracies near 0 or 1.
    """
    if n <= 0:
        return [0.0, 1.0]
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return [max(0.0, center - half), min(1.0, center + half)]


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties get the mean of the ranks they span."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    starts = ends - counts
    avg = (starts + 1 + ends) / 2.0
    return avg[inverse]


def roc_auc(y_true: Sequence[int] | np.ndarray, prob: Sequence[float] | np.ndarray) -> float | None:
    """ROC-AUC via the Mann-Whitney U statistic (ties count one half).

    Rank-based so it is exact, threshold-free and needs no scikit-learn.
    """
    y = np.asarray(y_true).astype(int).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    n_pos = int((y == 1).sum())
    n_neg = int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(p)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(
    y_true: Sequence[int] | np.ndarray, prob: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, from (0, 0) to (1, 1).

    Tied scores move the curve diagonally, so the trapezoid area equals roc_auc.
    """
    y = np.asarray(y_true).astype(int).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    n_pos = max(int((y == 1).sum()), 1)
    n_neg = max(int((y == 0).sum()), 1)
    values, inverse = np.unique(-p, return_inverse=True)  # descending scores
    pos = np.bincount(inverse, weights=(y == 1).astype(float), minlength=len(values))
    neg = np.bincount(inverse, weights=(y == 0).astype(float), minlength=len(values))
    tpr = np.concatenate([[0.0], np.cumsum(pos) / n_pos])
    fpr = np.concatenate([[0.0], np.cumsum(neg) / n_neg])
    return fpr, tpr


def calibration(
    y_true: np.ndarray, prob: np.ndarray, threshold: float = 0.5, n_bins: int = N_BINS
) -> tuple[float, list[dict[str, Any]]]:
    """ECE and the reliability table (see the module docstring for the definition).

    Every bin is listed, empty ones with ``count`` 0 and ``None`` confidence/accuracy,
    so tables from different runs line up bin by bin.
    """
    y = np.asarray(y_true).astype(int).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    pred = (p >= threshold).astype(int)
    conf = np.where(pred == 1, p, 1.0 - p)
    correct = (pred == y).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.digitize(conf, edges[1:-1], right=True)
    n = len(y)
    ece = 0.0
    table: list[dict[str, Any]] = []
    for b in range(n_bins):
        mask = idx == b
        count = int(mask.sum())
        row: dict[str, Any] = {
            "lo": float(edges[b]),
            "hi": float(edges[b + 1]),
            "count": count,
            "confidence": None,
            "accuracy": None,
        }
        if count:
            c = float(conf[mask].mean())
            a = float(correct[mask].mean())
            row["confidence"] = c
            row["accuracy"] = a
            ece += count / n * abs(a - c)
        table.append(row)
    return float(ece), table


def _validate(
    y_true: Any, prob: Any, class_names: Sequence[str], threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    if len(class_names) != 2:
        raise ValueError(f"expected 2 class names, got {list(class_names)}")
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} values but prob has {p.size}")
    if y.size == 0:
        raise ValueError("nothing to evaluate: no predictions")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold class indices 0 or 1")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("prob must be finite probabilities in [0, 1]")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return y.astype(int), p


def evaluate_predictions(
    y_true: Sequence[int] | np.ndarray,
    prob: Sequence[float] | np.ndarray,
    class_names: Sequence[str],
    groups: Sequence[Any] | np.ndarray | Mapping[str, Sequence[Any]] | None = None,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """All metrics for one set of predictions, as a JSON-serialisable dict.

    ``prob`` is the probability of ``class_names[1]``. ``groups`` (one label per
    example, e.g. the source folder; or several such columns by name, e.g. age band and race)
    adds a breakdown per column (``groups_by``; the first given one also as ``per_group``) so that a
    good overall accuracy cannot hide a badly served subset.
    """
    y, p = _validate(y_true, prob, class_names, threshold)
    n = int(y.size)
    pred = (p >= threshold).astype(int)
    correct = pred == y
    k = int(correct.sum())

    pc = np.clip(p, EPS, 1.0 - EPS)
    loss = float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1.0 - pc)))

    cm = np.zeros((2, 2), dtype=int)
    np.add.at(cm, (y, pred), 1)

    per_class: dict[str, dict[str, float | int]] = {}
    for c, name in enumerate(class_names):
        tp = int(cm[c, c])
        predicted = int(cm[:, c].sum())
        support = int(cm[c, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[str(name)] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": support,
        }

    ece, reliability = calibration(y, p, threshold)

    result: dict[str, Any] = {
        "n": n,
        "accuracy": k / n,
        "accuracy_ci95": wilson_interval(k, n),
        "loss": loss,
        "roc_auc": roc_auc(y, p),
        "ece": ece,
        "brier": float(np.mean((p - y) ** 2)),
        "threshold": float(threshold),
        "class_names": [str(c) for c in class_names],
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "reliability": reliability,
    }

    if groups is not None:
        columns = dict(groups) if isinstance(groups, Mapping) else {"group": groups}
        result["groups_by"] = {col: group_accuracy(correct, labels) for col, labels in columns.items()}
        given = [col for col in columns if col != "kind"]  # kind: added by evaluate itself
        if given:
            result["per_group"] = result["groups_by"][given[0]]
    return result


def _natural(name: str) -> list[Any]:
    """Sort key that puts age band 3-9 before 10-19."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t]


def group_accuracy(correct: np.ndarray, labels: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Accuracy with a Wilson interval per group; a ``None`` label leaves the image out."""
    g = np.asarray([None if x is None else str(x) for x in labels], dtype=object)
    if g.size != correct.size:
        raise ValueError(f"groups has {g.size} values but there are {correct.size} predictions")
    out: dict[str, dict[str, Any]] = {}
    for name in sorted({x for x in g.tolist() if x is not None}, key=_natural):
        mask = g == name
        n, k = int(mask.sum()), int(correct[mask].sum())
        out[name] = {"n": n, "correct": k, "accuracy": k / n, "accuracy_ci95": wilson_interval(k, n)}
    return out


# --------------------------------------------------------------------------- text


def _fmt(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def format_report(result: Mapping[str, Any], reference: Mapping[str, Any] | None = None) -> str:
    """The human-readable block printed to the console after an evaluation (with a reference
    model's figures alongside when one scored the same images)."""
    names = list(result["class_names"])
    lo, hi = result["accuracy_ci95"]
    lines = [
        f"Evaluated {result['n']} images (threshold {result['threshold']:.2f}, "
        f"probability of '{names[1]}')",
    ]
    if result.get("n_skipped"):
        lines.append(f"  skipped     {result['n_skipped']} unreadable images")
    lines += [
        f"  accuracy    {_fmt(result['accuracy'])}  (95% CI {lo:.4f} - {hi:.4f})",
        f"  loss        {_fmt(result['loss'])}",
        f"  ROC-AUC     {_fmt(result['roc_auc'])}",
        f"  ECE         {_fmt(result['ece'])}  (15 bins, confidence of predicted class)",
        "",
    ]
    width = max(12, *(len(n) + 2 for n in names))
    lines.append(f"  {'class':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for name in names:
        m = result["per_class"][name]
        lines.append(
            f"  {name:<{width}}{m['precision']:>10.4f}{m['recall']:>10.4f}"
            f"{m['f1']:>10.4f}{m['support']:>10d}"
        )
    lines += ["", "  confusion matrix (rows = true, columns = predicted)"]
    lines.append("  " + " " * width + "".join(f"{n:>10}" for n in names))
    for name, row in zip(names, result["confusion_matrix"], strict=True):
        lines.append(f"  {name:<{width}}" + "".join(f"{v:>10d}" for v in row))
    by = result.get("groups_by") or ({"group": result["per_group"]} if result.get("per_group") else {})
    ref = (reference or {}).get("groups_by", {})
    for col, groups in by.items():
        gw = max(12, len(col) + 2, *(len(g) + 2 for g in groups))
        head = f"  {col:<{gw}}{'n':>8}{'accuracy':>10}   95% CI"
        lines += ["", head + (f"{'reference':>12}" if col in ref else "")]
        for g, m in groups.items():
            glo, ghi = m["accuracy_ci95"]
            line = f"  {g:<{gw}}{m['n']:>8d}{m['accuracy']:>10.4f}   {glo:.4f} - {ghi:.4f}"
            if col in ref and g in ref[col]:
                line += f"{ref[col][g]['accuracy']:>12.4f}"
            lines.append(line)
    if reference:
        lo, hi = reference["accuracy_ci95"]
        lines += ["", f"  reference ({reference['name']}): accuracy {reference['accuracy']:.4f} "
                      f"(95% CI {lo:.4f} - {hi:.4f}) on the same {reference['n']} images"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots


def _new_figure(width: float, height: float) -> Any:
    # Figure + Agg canvas directly (no pyplot): no global state, no GUI backend,
    # safe in worker threads and under any MPLBACKEND setting.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return Path(path)


def plot_confusion_matrix(
    cm: Sequence[Sequence[int]] | np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike[str],
) -> Path:
    """Counts with row-normalised percentages (recall per true class) in each cell."""
    m = np.asarray(cm, dtype=int)
    rows = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros(m.shape, dtype=float), where=rows > 0)
    fig = _new_figure(4.5, 4.0)
    ax = fig.add_subplot()
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, labels=list(class_names))
    ax.set_yticks(ticks, labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            color = "white" if frac[i, j] > 0.5 else "black"
            ax.text(j, i, f"{m[i, j]}\n{frac[i, j]:.1%}", ha="center", va="center", color=color)
    ax.set_title(f"Confusion matrix (n={int(m.sum())})")
    return _save(fig, path)


def plot_reliability(
    reliability: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]
) -> Path:
    """Reliability diagram: accuracy vs confidence per bin, with the bin counts below."""
    fig = _new_figure(5.0, 5.5)
    ax, ax_n = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    lo = np.array([b["lo"] for b in reliability], dtype=float)
    hi = np.array([b["hi"] for b in reliability], dtype=float)
    counts = np.array([b["count"] for b in reliability], dtype=float)
    filled = counts > 0
    acc = np.array([b["accuracy"] if b["count"] else 0.0 for b in reliability], dtype=float)
    conf = np.array([b["confidence"] if b["count"] else 0.0 for b in reliability], dtype=float)
    width = hi - lo
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.bar(lo[filled], acc[filled], width=width[filled], align="edge", alpha=0.7,
           edgecolor="black", label="accuracy")
    ax.plot(conf[filled], acc[filled], "o", color="tab:red", label="(mean confidence, accuracy)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    ax.set_title("Reliability (confidence of predicted class)")
    ax_n.bar(lo, counts, width=width, align="edge", color="gray", edgecolor="black")
    ax_n.set_xlabel("confidence")
    ax_n.set_ylabel("count")
    ax_n.set_xlim(0, 1)
    return _save(fig, path)


def plot_roc(
    y_true: Sequence[int] | np.ndarray,
    prob: Sequence[float] | np.ndarray,
    path: str | os.PathLike[str],
) -> Path:
    """ROC curve with its AUC; with one class only the figure says so instead."""
    fig = _new_figure(4.5, 4.5)
    ax = fig.add_subplot()
    auc = roc_auc(y_true, prob)
    ax.plot([0, 1], [0, 1], "--", color="gray", label="chance")
    if auc is None:
        ax.text(0.5, 0.5, "ROC undefined:\nonly one class present", ha="center", va="center")
    else:
        fpr, tpr = roc_curve(y_true, prob)
        ax.plot(fpr, tpr, color="tab:blue", label=f"ROC (AUC = {auc:.4f})")
        ax.legend(loc="lower right")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC curve")
    return _save(fig, path)


def most_confident_mistakes(
    y_true: Sequence[int] | np.ndarray,
    prob: Sequence[float] | np.ndarray,
    k: int = 16,
    threshold: float = 0.5,
) -> np.ndarray:
    """Indices of the k wrong predictions with the highest confidence, most confident first."""
    y = np.asarray(y_true).astype(int).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    pred = (p >= threshold).astype(int)
    conf = np.where(pred == 1, p, 1.0 - p)
    wrong = np.flatnonzero(pred != y)
    order = np.argsort(-conf[wrong], kind="stable")
    return wrong[order][:k]


def plot_mistakes(
    images_uint8: Sequence[np.ndarray] | np.ndarray,
    y_true: Sequence[int] | np.ndarray,
    prob: Sequence[float] | np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    k: int = 16,
    threshold: float = 0.5,
) -> Path:
    """Grid of the most confident mistakes: where the model is sure and wrong is
    where label noise, data bias or a preprocessing bug shows first."""
    idx = most_confident_mistakes(y_true, prob, k=k, threshold=threshold)
    p = np.asarray(prob, dtype=np.float64).ravel()
    y = np.asarray(y_true).astype(int).ravel()
    if len(idx) == 0:
        fig = _new_figure(4.0, 2.0)
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no mistakes", ha="center", va="center", fontsize=14)
        return _save(fig, path)
    cols = int(math.ceil(math.sqrt(len(idx))))
    rows = int(math.ceil(len(idx) / cols))
    fig = _new_figure(2.2 * cols, 2.5 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, i in zip(axes, idx, strict=False):
        img = np.asarray(images_uint8[i])
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
        pred = int(p[i] >= threshold)
        conf = p[i] if pred == 1 else 1.0 - p[i]
        ax.set_title(
            f"true: {class_names[y[i]]}\npred: {class_names[pred]} ({conf:.2f})", fontsize=9
        )
    fig.suptitle(f"Most confident mistakes ({len(idx)} shown)")
    return _save(fig, path)
