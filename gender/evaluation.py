"""Metrics for a binary classifier's predictions: one definition of every number.

The training run's test figures, ``gender.evaluate`` and the reference model all score through
``evaluate_predictions``; the figures drawn from these numbers (confusion matrix, reliability, ROC,
most confident mistakes) are at the end. Importing this module never pulls in TensorFlow.

Conventions used throughout:

* ``prob`` is the model's probability of class index 1 (``class_names[1]``).
* The predicted class is ``1`` when ``prob >= threshold``.
* Undefined ratios (precision of a class never predicted, recall of a class
  with no examples) are reported as ``0.0`` (scikit-learn's ``zero_division=0``);
  ``roc_auc`` is ``None`` when only one class is present.
* ECE follows Guo et al. (2017): the *confidence of the predicted class*
  (``prob`` if class 1 is predicted, else ``1 - prob``) is put into 15
  equal-width bins over [0, 1] (intervals ``(lo, hi]``, the first one also
  holds 0, as scikit-learn's ``calibration_curve`` bins), and ECE = sum over bins of
  ``count/n * |accuracy - mean confidence|``.

ROC, AUC, the calibration curve, the confusion matrix and precision / recall / F1 are
scikit-learn's, the exact McNemar test SciPy's binomial test; the Wilson interval, ECE and the
chance spread of group accuracies (which neither library provides) are here.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import PercentFormatter
from scipy.stats import binomtest
from sklearn.calibration import calibration_curve
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from gender.plots import new_figure, save_png

Z95 = 1.959963984540054  # two-sided 95% normal quantile
EPS = 1e-7  # probability clip for the log loss, same as Keras' epsilon
N_BINS = 15
CHANCE_DRAWS = 20_000  # simulated evaluations per spread: its p-value is then good to about 0.003


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


def roc_auc(y_true: Sequence[int] | np.ndarray, prob: Sequence[float] | np.ndarray) -> float | None:
    """ROC-AUC (scikit-learn; tied scores count one half), None with only one class present."""
    y = np.asarray(y_true).astype(int).ravel()
    if len(np.unique(y)) < 2:
        return None
    return float(roc_auc_score(y, np.asarray(prob, dtype=np.float64).ravel()))


def roc_curve(
    y_true: Sequence[int] | np.ndarray, prob: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of class 1 from (0, 0) to (1, 1), collinear points dropped (scikit-learn).

    Tied scores move the curve diagonally, so the trapezoid area equals ``roc_auc``.
    """
    y = np.asarray(y_true).astype(int).ravel()
    fpr, tpr, _ = sk_roc_curve(y, np.asarray(prob, dtype=np.float64).ravel(), pos_label=1)
    return fpr, tpr


def balanced_threshold(
    y_true: Sequence[int] | np.ndarray, prob: Sequence[float] | np.ndarray
) -> float | None:
    """The threshold at which the two classes' mean recall (balanced accuracy) peaks: the ROC point
    farthest above the diagonal (Youden's J, from scikit-learn's curve). None with one class only.

    A model trained on 65% men calls a doubtful face a man; where the people scored are not that
    mix, this operating point (chosen on validation) recalls both classes alike. Of the thresholds
    giving the same predictions it returns the middle one, not the edge a single score sits on.
    """
    y = np.asarray(y_true).astype(int).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    if len(np.unique(y)) < 2:
        return None
    fpr, tpr, cuts = sk_roc_curve(y, p, pos_label=1, drop_intermediate=False)
    best = int(np.argmax(tpr - fpr))  # cuts[0] is +inf (nothing predicted 1): J = 0 there
    if best == 0:
        return None
    below = cuts[best + 1] if best + 1 < len(cuts) else 0.0  # the next lower score
    return float((cuts[best] + below) / 2)


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
    correct = (pred == y).astype(int)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # the bin of each prediction, exactly as calibration_curve assigns it (intervals (lo, hi])
    counts = np.bincount(np.searchsorted(edges[1:-1], conf), minlength=n_bins)
    accuracy, confidence = calibration_curve(correct, conf, n_bins=n_bins, pos_label=1)
    filled = iter(zip(accuracy.tolist(), confidence.tolist(), strict=True))  # non-empty bins only
    table: list[dict[str, Any]] = []
    ece = 0.0
    for b in range(n_bins):
        row: dict[str, Any] = {
            "lo": float(edges[b]),
            "hi": float(edges[b + 1]),
            "count": int(counts[b]),
            "confidence": None,
            "accuracy": None,
        }
        if counts[b]:
            row["accuracy"], row["confidence"] = next(filled)
            ece += counts[b] / len(y) * abs(row["accuracy"] - row["confidence"])
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


#: group columns scoring adds by itself (the original image size; whether the face stage found a face)
AUTO_COLUMNS = ("kind", "face")


def face_found_column(no_face: Sequence[bool] | np.ndarray) -> list[str] | None:
    """A "found" / "not found" label per image, when the face stage missed some but not all: the
    images it missed are scored whole, framed unlike the aligned faces the model trained on, so
    their accuracy must not hide inside the total."""
    missed = np.asarray(no_face, dtype=bool)
    if not 0 < missed.sum() < missed.size:
        return None
    return ["not found" if m else "found" for m in missed]


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

    cm = confusion_matrix(y, pred, labels=[0, 1])
    precision, recall, f1, support = precision_recall_fscore_support(y, pred, labels=[0, 1], zero_division=0)
    per_class: dict[str, dict[str, float | int]] = {
        str(name): {
            "precision": float(precision[c]),
            "recall": float(recall[c]),
            "f1": float(f1[c]),
            "support": int(support[c]),
        }
        for c, name in enumerate(class_names)
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
        "balanced_threshold": balanced_threshold(y, p),  # on these images; pick it on validation
        "class_names": [str(c) for c in class_names],
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "reliability": reliability,
    }

    if groups is not None:
        columns = dict(groups) if isinstance(groups, Mapping) else {"group": groups}
        result["groups_by"] = {col: group_accuracy(correct, labels) for col, labels in columns.items()}
        result["group_spread"] = {
            col: spread for col, by in result["groups_by"].items() if (spread := group_spread(by))
        }
        given = [col for col in columns if col not in AUTO_COLUMNS]
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


def group_spread(groups: Mapping[str, Mapping[str, Any]], seed: int = 0) -> dict[str, Any] | None:
    """How far apart the groups' accuracies are, and how far apart chance alone would put them.

    With a few dozen images per group the best and the worst group differ by many points even
    when the model serves every group equally well, so a gap is only evidence when it is larger
    than that. Chance is simulated (neither SciPy nor scikit-learn tests the range of several
    binomial proportions): every group gets the pooled accuracy and its own ``n``, and
    ``CHANCE_DRAWS`` evaluations are drawn with a fixed seed, so the figures repeat exactly.
    ``p_value`` is the share of those with a spread at least the one measured. None for fewer
    than two groups.
    """
    named = [(name, int(m["n"]), int(m["correct"])) for name, m in groups.items() if int(m["n"]) > 0]
    if len(named) < 2:
        return None
    n = np.array([x[1] for x in named])
    acc = np.array([x[2] for x in named]) / n
    pooled = sum(x[2] for x in named) / n.sum()
    draws = np.random.default_rng(seed).binomial(n, pooled, size=(CHANCE_DRAWS, n.size)) / n
    chance = draws.max(axis=1) - draws.min(axis=1)
    spread = float(acc.max() - acc.min())
    return {
        "spread": spread,
        "lowest": named[int(acc.argmin())][0],
        "highest": named[int(acc.argmax())][0],
        "pooled_accuracy": float(pooled),
        "chance_median": float(np.median(chance)),
        "chance_95": float(np.quantile(chance, 0.95)),
        "p_value": float(np.mean(chance >= spread - 1e-12)),  # a tie counts: k/n floats differ by ulps
    }


def paired_comparison(model_correct: Sequence[bool], other_correct: Sequence[bool]) -> dict[str, Any]:
    """Two classifiers on the same images: where they disagree, and whether either wins.

    Separate intervals overlap long before two models differ; the paired (McNemar) view only
    counts the images one gets right and the other wrong, and tests them with an exact binomial
    test (equal counts expected when neither is better).
    """
    a = np.asarray(model_correct, dtype=bool)
    b = np.asarray(other_correct, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"{a.size} model results but {b.size} for the other model")
    only_model, only_other = int(np.sum(a & ~b)), int(np.sum(~a & b))
    discordant = only_model + only_other
    return {
        "n": int(a.size),
        "both_right": int(np.sum(a & b)),
        "only_model_right": only_model,
        "only_other_right": only_other,
        "both_wrong": int(np.sum(~a & ~b)),
        "difference": (only_model - only_other) / a.size if a.size else 0.0,
        "p_value": float(binomtest(only_model, discordant, 0.5).pvalue) if discordant else 1.0,
    }


# --------------------------------------------------------------------------- text


def _fmt(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def format_report(result: Mapping[str, Any], reference: Mapping[str, Any] | None = None) -> str:
    """The human-readable block printed to the console after an evaluation (with a reference
    model's figures alongside when one scored the same images)."""
    names = list(result["class_names"])
    lo, hi = result["accuracy_ci95"]
    lines = [
        f"Evaluated {result['n']} images (threshold {result['threshold']:.3g}, probability of '{names[1]}')",
    ]
    if result.get("n_skipped"):
        lines.append(f"  skipped     {result['n_skipped']} unreadable images")
    lines += [
        f"  accuracy    {_fmt(result['accuracy'])}  (95% CI {lo:.4f} - {hi:.4f})",
        f"  loss        {_fmt(result['loss'])}",
        f"  ROC-AUC     {_fmt(result['roc_auc'])}",
        f"  ECE         {_fmt(result['ece'])}  (15 bins, confidence of predicted class)",
    ]
    if result.get("balanced_threshold") is not None:
        lines.append(
            f"  balanced    at threshold {result['balanced_threshold']:.3f} the two classes' mean recall "
            "peaks on these images"
        )
    lines.append("")
    width = max(12, *(len(n) + 2 for n in names))
    lines.append(f"  {'class':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for name in names:
        m = result["per_class"][name]
        lines.append(
            f"  {name:<{width}}{m['precision']:>10.4f}{m['recall']:>10.4f}{m['f1']:>10.4f}{m['support']:>10d}"
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
        if spread := result.get("group_spread", {}).get(col):
            lines.append(_spread_line(spread))
    if reference:
        lo, hi = reference["accuracy_ci95"]
        lines += [
            "",
            f"  reference ({reference['name']}): accuracy {reference['accuracy']:.4f} "
            f"(95% CI {lo:.4f} - {hi:.4f}) on the same {reference['n']} images",
        ]
        if paired := reference.get("paired"):
            lines.append(
                f"  paired: the model alone right on {paired['only_model_right']}, the reference alone "
                f"on {paired['only_other_right']} (difference {100 * paired['difference']:+.1f} points, "
                f"exact McNemar p = {paired['p_value']:.3f})"
            )
    return "\n".join(lines)


def _spread_line(spread: Mapping[str, Any]) -> str:
    return (
        f"  spread {100 * spread['spread']:.1f} points ({spread['lowest']} to {spread['highest']}); "
        f"equal accuracy everywhere would give {100 * spread['chance_median']:.1f} by chance "
        f"(95%: up to {100 * spread['chance_95']:.1f}), p = {spread['p_value']:.3f}"
    )


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


# --------------------------------------------------------------------------- plots


def plot_confusion_matrix(
    cm: Sequence[Sequence[int]] | np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike[str],
) -> Path:
    """Counts and row percentages (recall per true class) in each cell."""
    m = np.asarray(cm, dtype=int)
    rows = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros(m.shape, dtype=float), where=rows > 0)
    fig = new_figure(4.6, 3.9)
    ax = fig.add_subplot()
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(
        im,
        ax=ax,
        fraction=0.046,
        pad=0.04,
        label="share of the true class (row %)",
        format=PercentFormatter(1.0, decimals=0),
    )
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, labels=list(class_names))
    ax.set_yticks(ticks, labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            color = "white" if frac[i, j] > 0.5 else "black"
            ax.text(
                j, i, f"{m[i, j]:,}\n{frac[i, j]:.1%}", ha="center", va="center", color=color, fontsize=11
            )
    ax.set_title(f"Confusion matrix (n={int(m.sum()):,})")
    return save_png(fig, path)


def plot_reliability(reliability: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Reliability diagram: accuracy against the predicted class's confidence per bin, with the
    number of images per bin below. The confidence axis starts at 0.5 (with the default threshold
    the predicted class is never less likely than that)."""
    lo = np.array([b["lo"] for b in reliability], dtype=float)
    hi = np.array([b["hi"] for b in reliability], dtype=float)
    counts = np.array([b["count"] for b in reliability], dtype=float)
    filled = counts > 0
    acc = np.array([b["accuracy"] if b["count"] else 0.0 for b in reliability], dtype=float)
    conf = np.array([b["confidence"] if b["count"] else 0.0 for b in reliability], dtype=float)
    # other thresholds can leave the predicted class below 0.5: then show the whole axis
    start = 0.5 if not filled[hi <= 0.5].any() else 0.0
    left = np.maximum(lo, start)
    width = hi - left

    fig = new_figure(4.8, 5.2)
    ax, ax_n = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.plot([start, 1], [start, 1], "--", color="gray", label="perfect calibration")
    ax.bar(
        left[filled],
        acc[filled],
        width=width[filled],
        align="edge",
        alpha=0.7,
        edgecolor="black",
        label="accuracy per bin",
    )
    ax.plot(conf[filled], acc[filled], "o", color="tab:red", ms=4, label="mean confidence")
    ax.set_ylabel("accuracy")
    lowest = float(acc[filled].min()) if filled.any() else start
    ax.set_ylim(min(start, math.floor(lowest * 10) / 10), 1.0)
    ax.grid(alpha=0.3)
    ax.set_title("Reliability (confidence of the predicted class)")
    # below the axes, clear of the bars
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=8)
    ax_n.bar(left[filled], counts[filled], width=width[filled], align="edge", color="gray", edgecolor="black")
    ax_n.set_xlabel("confidence of the predicted class")
    ax_n.set_ylabel("images")
    ax_n.set_xlim(start, 1.0)
    return save_png(fig, path)


def plot_roc(
    y_true: Sequence[int] | np.ndarray,
    prob: Sequence[float] | np.ndarray,
    path: str | os.PathLike[str],
    class_names: Sequence[str] | None = None,
) -> Path:
    """ROC curve of the positive class (``class_names[1]``) with its AUC; with one class only the
    figure says so instead."""
    negative, positive = (list(class_names) if class_names else ["class 0", "class 1"])[:2]
    fig = new_figure(4.4, 4.4)
    ax = fig.add_subplot()
    auc = roc_auc(y_true, prob)
    ax.plot([0, 1], [0, 1], "--", color="gray", label="chance")
    if auc is None:
        ax.text(0.5, 0.5, "ROC undefined:\nonly one class present", ha="center", va="center")
    else:
        fpr, tpr = roc_curve(y_true, prob)
        ax.plot(fpr, tpr, color="tab:blue", lw=2, label=f"AUC = {auc:.4f}")
        ax.legend(loc="lower right")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.set_xlabel(f"false positive rate ({negative} called {positive})")
    ax.set_ylabel(f"true positive rate ({positive} found)")
    ax.set_title(f"ROC curve, positive class: {positive}")
    return save_png(fig, path)


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
        fig = new_figure(4.0, 2.0)
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no mistakes", ha="center", va="center", fontsize=14)
        return save_png(fig, path)
    cols = int(math.ceil(math.sqrt(len(idx))))
    rows = int(math.ceil(len(idx) / cols))
    # a fixed grid, placed here: constrained layout's solver costs more than the whole figure
    height = 2.5 * rows + 0.5
    fig = new_figure(2.2 * cols, height, layout=None)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.8 / height, wspace=0.1, hspace=0.35)
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
        ax.set_title(f"true: {class_names[y[i]]}\npred: {class_names[pred]} ({conf:.2f})", fontsize=9)
    fig.suptitle(f"Most confident mistakes ({len(idx)} shown)", y=1 - 0.08 / height, va="top")
    return save_png(fig, path)
