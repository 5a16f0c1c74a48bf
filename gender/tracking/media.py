"""W&B objects built from a job's results: charts, the predictions table and the model artifact.

Each builder takes the ``wandb`` module and plain data and returns the object to log; none logs
anything itself (``Tracker`` does), so each can be tried on its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gender.tracking.config import jsonable, redact_secrets

THUMBNAIL = 64
#: Aliases of the model artifact's version: the checkpointed (best) epoch, and the newest version.
MODEL_ALIASES = ("best", "latest")


def model_artifact_name(run_id: str) -> str:
    """One artifact per training run, its versions aliased ``best`` / ``latest``: link
    ``ENTITY/PROJECT/model-<run id>:best`` to the W&B model registry."""
    return f"model-{run_id}"


def confusion_matrix_chart(
    wandb: Any, y_true: list[int], y_pred: list[int], class_names: list[str], split: str
) -> Any:
    return wandb.plot.confusion_matrix(
        y_true=y_true, preds=y_pred, class_names=class_names, title=f"Confusion matrix ({split})"
    )


def roc_chart(wandb: Any, rows: Sequence[Mapping[str, Any]], class_names: list[str], split: str) -> Any:
    """W&B's own ROC chart (scikit-learn's curve) of the positive class; None when it is
    undefined (one class only)."""
    y = [int(r["true"]) for r in rows]
    if len(class_names) != 2 or len(set(y)) < 2:
        return None
    probs = [[1.0 - float(r["prob"]), float(r["prob"])] for r in rows]
    return wandb.plot.roc_curve(
        y,
        probs,
        labels=class_names,
        classes_to_plot=[1],
        title=f"ROC curve, positive class: {class_names[1]} ({split})",
    )


def pairs_from_matrix(matrix: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
    """Expand confusion-matrix counts back into (true, pred) pairs."""
    y_true: list[int] = []
    y_pred: list[int] = []
    for t, row in enumerate(matrix):
        for p, count in enumerate(row):
            y_true += [t] * int(count)
            y_pred += [p] * int(count)
    return y_true, y_pred


def predictions_table(
    wandb: Any, rows: Sequence[Mapping[str, Any]], class_names: list[str], limit: int
) -> Any:
    """Test images with labels and probability: confident mistakes first, then the
    least confident correct ones (the borderline cases worth a look)."""

    def order(r: Mapping[str, Any]) -> tuple[int, float]:
        confidence = abs(float(r["prob"]) - 0.5)
        wrong = int(r["true"]) != int(r["pred"])
        return (0, -confidence) if wrong else (1, confidence)

    chosen = sorted(rows, key=order)[:limit]
    has_group = any("group" in r for r in chosen)
    columns = ["image", "true", "pred", f"prob_{class_names[-1]}", "correct", "path"]
    if has_group:
        columns.append("group")
    table = wandb.Table(columns=columns)
    for r in chosen:
        t, p = int(r["true"]), int(r["pred"])
        values = [
            thumbnail(wandb, r["path"]),
            _label(class_names, t),
            _label(class_names, p),
            round(float(r["prob"]), 4),
            t == p,
            str(r["path"]),
        ]
        if has_group:
            values.append(str(r.get("group", "")))
        table.add_data(*values)
    return table


def _label(class_names: list[str], index: int) -> str:
    return class_names[index] if 0 <= index < len(class_names) else str(index)


def thumbnail(wandb: Any, path: str | os.PathLike) -> Any:
    """A small RGB thumbnail (keeps offline runs small); None if the file is unreadable."""
    try:
        from PIL import Image

        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((THUMBNAIL, THUMBNAIL))
            return wandb.Image(img)
    except Exception:  # noqa: BLE001 - a missing image must not drop the table
        return None


def model_artifact(
    wandb: Any, run_id: str, model_path: Path, metadata: Mapping[str, Any] | None = None
) -> Any:
    """The model file as an artifact of type ``model``, referenced in place (``immutable``: not
    copied into W&B's staging area). The same file always gives the same digest, which is how an
    offline evaluate run names the model it scored."""
    meta = {"format": model_path.suffix.lstrip(".") or "dir", "file": model_path.name}
    meta.update(redact_secrets(jsonable(dict(metadata or {}))))
    artifact = wandb.Artifact(model_artifact_name(run_id), type="model", metadata=meta)
    if model_path.is_dir():
        artifact.add_dir(str(model_path), policy="immutable")
    else:
        artifact.add_file(str(model_path), policy="immutable")
    return artifact
