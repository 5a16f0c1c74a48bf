"""Predict files, folders and globs with a saved model: one row per input, whatever it holds.

What ``python -m gender.predict`` runs (see that module for the usage).
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from gender.config import validate_scoring
from gender.errors import UserError
from gender.face import FaceSettings, check_available
from gender.inference import (
    ModelInputs,
    decision_threshold_for,
    decode_batches,
    load_model,
    max_pixels_for,
    model_inputs_for,
    predict_probs,
    resolve_model_path,
    trained_class_names,
)
from gender.io import check_output_file, write_csv
from gender.progress import progress

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DEFAULT_CLASSES = ["male", "female"]  # the project's default data.classes order
STATUS_OK = "ok"
STATUS_FACE = "ok: face found"
STATUS_WHOLE = "ok: no face found, whole image used"
STATUS_NO_FACE = "skipped: no face found"


@dataclass(frozen=True)
class Prediction:
    """One input's outcome; ``label``/``probability`` are None when it was not predicted."""

    path: str
    label: str | None
    probability: float | None  # of the predicted class
    prob_class1: float | None
    status: str


def _failed(path: str, status: str) -> Prediction:
    return Prediction(path, None, None, None, status)


# ------------------------------------------------------------------------------------ inputs
def _has_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def _images_under(folder: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [
            os.path.join(dirpath, f)
            for f in sorted(filenames)
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTS
        ]
    return out


def expand_inputs(inputs: Sequence[str]) -> list[tuple[str, str | None]]:
    """``(path, problem)`` per file in input order, without repeats; ``problem`` is an
    ``error: ...`` status for an input that matches nothing, else None."""
    entries: dict[str, str | None] = {}
    for item in inputs:
        item = str(item)
        p = Path(item).expanduser()
        if p.is_dir():
            found = _images_under(p)
            if not found:
                entries[item] = "error: no image files in folder"
        elif p.exists():
            found = [str(p)]
        elif _has_glob(item):
            found = sorted(
                f for f in glob.glob(os.path.expanduser(item), recursive=True) if os.path.isfile(f)
            )
            if not found:
                entries[item] = "error: pattern matches no files"
        else:
            found = []
            entries[item] = "error: not found"
        for f in found:
            entries.setdefault(f, None)
    return list(entries.items())


# ---------------------------------------------------------------------------------- faces
def prepare_image(
    path: str,
    size: int,
    face: FaceSettings | None = None,
    no_face: str = "whole",
    max_pixels: int | None = None,
    inputs: ModelInputs | None = None,
) -> tuple[Any, str]:
    """(the model's input or None, status) for one file; ValueError if unreadable.

    The face stage is the training run's own (``data.load_face``), so the model sees what it
    was trained on; ``inputs`` replaces ``size`` and ``face`` for a model with several inputs.
    """
    inputs = inputs or ModelInputs.single(face, size)
    face = inputs.face
    image, missing, _ = inputs.load(path, max_pixels)
    if not face.active:
        return image, STATUS_OK
    if missing:
        return (None, STATUS_NO_FACE) if no_face == "skip" else (image, STATUS_WHOLE)
    return image, STATUS_FACE


# -------------------------------------------------------------------------------- predict
def predict_files(
    model: Any,
    paths: Sequence[str],
    class_names: Sequence[str],
    image_size: int,
    batch_size: int = 32,
    *,
    face: FaceSettings | None = None,
    no_face: str = "whole",
    threshold: float = 0.5,
    max_pixels: int | None = None,
    inputs: ModelInputs | None = None,
) -> list[Prediction]:
    """Predict every file, in order; an unreadable file gets an ``error: ...`` row, no exception.
    ``inputs`` replaces ``image_size`` and ``face`` for a model with several inputs."""
    if no_face not in ("whole", "skip"):
        raise UserError(f"no_face={no_face} is not one of whole, skip")
    inputs = inputs or ModelInputs.single(face, image_size)
    for stage in inputs.inputs:  # fail once, clearly, before any image if a detector is unavailable
        check_available(stage.face)
    paths = [str(p) for p in paths]

    # picklable (no closure): worker processes may run it
    loader = partial(prepare_image, size=image_size, no_face=no_face, max_pixels=max_pixels, inputs=inputs)
    out: list[Prediction] = []
    for start, items in progress(
        decode_batches(paths, loader, batch_size, processes=inputs.describes),
        total=len(paths),
        desc="predicting",
        count=lambda b: len(b[1]),
    ):
        ready = [i for i, it in enumerate(items) if isinstance(it, tuple) and it[0] is not None]
        probs = predict_probs(model, inputs.stack([items[i][0] for i in ready])) if ready else []
        prob_of = dict(zip(ready, probs, strict=True))
        for i, item in enumerate(items):
            path = paths[start + i]
            if isinstance(item, str):
                out.append(_failed(path, f"error: {item}"))
            elif i not in prob_of:
                out.append(_failed(path, item[1]))
            else:
                p1 = float(prob_of[i])
                cls = int(p1 >= threshold)
                out.append(Prediction(path, class_names[cls], p1 if cls else 1.0 - p1, p1, item[1]))
    return out


def write_predictions(predictions: Sequence[Prediction], path: str | os.PathLike[str]) -> Path:
    """CSV ``path,class,probability,status`` (probability of the predicted class)."""
    return write_csv(
        (
            (p.path, p.label or "", "" if p.probability is None else f"{p.probability:.6f}", p.status)
            for p in predictions
        ),
        ["path", "class", "probability", "status"],
        path,
    )


def format_line(p: Prediction, width: int = 0) -> str:
    """One console line per input."""
    if p.label is None:
        return f"{p.path:<{width}}  {p.status}"
    note = f"  ({p.status.removeprefix('ok: ')})" if p.status != STATUS_OK else ""
    return f"{p.path:<{width}}  {p.label:<8} {p.probability:.4f}{note}"


def class_names_for(model_path: str | os.PathLike[str], configured: Sequence[str] | None) -> list[str]:
    """Class order: explicit ``class_names``, else the training run's data.classes, else default."""
    if configured:
        names = [str(c) for c in configured]
        if len(names) != 2:
            raise UserError(f"class_names={names} must list exactly 2 classes")
        return names
    trained = trained_class_names(resolve_model_path(model_path).parent)
    if trained:
        return trained
    log.info("no training config beside the model; assuming classes %s", DEFAULT_CLASSES)
    return list(DEFAULT_CLASSES)


def run_predict(
    cfg: Any, out_dir: str | os.PathLike[str], extra_inputs: Sequence[str] = ()
) -> list[Prediction]:
    """The CLI's work, callable without Hydra: expand inputs, predict, print, write the CSV.

    Settings and the output file are checked before any image is read (an existing ``output``
    is replaced only with ``overwrite=true``, a run's files never); a UserError when no input
    could be predicted (after the CSV listing why is written)."""

    validate_scoring(cfg, "predict")
    target = (
        check_output_file(cfg.output, bool(cfg.get("overwrite")))
        if cfg.get("output")
        else Path(out_dir) / "predictions.csv"
    )
    inputs = cfg.get("inputs") or []
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    inputs += list(extra_inputs)
    if not inputs:
        raise UserError(
            "no inputs: pass image files, folders or globs, e.g. "
            "python -m gender.predict model_path=RUN photo.jpg faces/"
        )
    entries = expand_inputs(inputs)
    files = [path for path, problem in entries if problem is None]
    class_names = class_names_for(cfg.model_path, cfg.get("class_names"))
    model = load_model(cfg.model_path)
    model_inputs = model_inputs_for(model, cfg.model_path, cfg)
    log.info("face stage: %s", model_inputs.describe())
    done = iter(
        predict_files(
            model,
            files,
            class_names,
            model_inputs.size,
            int(cfg.batch_size),
            no_face=str(cfg.no_face),
            threshold=decision_threshold_for(cfg.model_path, cfg.get("threshold")),
            max_pixels=max_pixels_for(cfg.model_path),
            inputs=model_inputs,
        )
        if files
        else []
    )
    preds = [next(done) if problem is None else _failed(path, problem) for path, problem in entries]
    width = min(60, max((len(p.path) for p in preds), default=0))
    for p in preds:
        print(format_line(p, width), flush=False)
    write_predictions(preds, target)
    n_ok = sum(p.label is not None for p in preds)
    print(f"{n_ok} of {len(preds)} inputs predicted; CSV: {target}", flush=True)
    if n_ok == 0:
        raise UserError(f"none of the {len(preds)} inputs could be predicted (see {target})")
    return preds
