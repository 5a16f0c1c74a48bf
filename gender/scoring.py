"""Score a model on labelled images: the one code path behind a run's test figures and
``gender.evaluate``.

``evaluate_model`` predicts every sample (decoded with ``data.load_face``, the loader training
used, or taken from training's decoded cache), computes the metrics of ``gender.evaluation`` over
the whole set and per group (source folder, image kind, columns of a labels CSV), writes the
predictions CSV and the plots. ``run_evaluation`` is what ``python -m gender.evaluate`` runs.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gender import evaluation as ev
from gender.config import validate_scoring
from gender.data import Sample, discover, image_kinds, load_image, read_manifest, resolve_root
from gender.errors import UserError
from gender.face import DESCRIPTOR_CHIP, FaceSettings
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
from gender.io import write_csv, write_json
from gender.progress import progress
from gender.reference import load_reference, score_reference
from gender.task import job_info
from gender.tracking import Tracker

log = logging.getLogger(__name__)

PLOT_FILES = {
    "confusion_matrix": "confusion_matrix.png",
    "reliability": "reliability.png",
    "roc": "roc.png",
    "mistakes": "mistakes.png",
}


def auto_groups(samples: Sequence[Sample]) -> list[str] | None:
    """Source folders as groups, only when some class is fed by several folders.

    With one folder per class the groups would just repeat the per-class table.
    """
    sources: dict[int, set[str]] = defaultdict(set)
    for s in samples:
        sources[s.label].add(s.source)
    if any(len(v) > 1 for v in sources.values()):
        return [s.source for s in samples]
    return None


def evaluate_model_with_rows(
    model: Any,
    samples: Sequence[Sample],
    class_names: Sequence[str],
    image_size: int,
    out_dir: str | os.PathLike[str],
    batch_size: int = 64,
    *,
    images: np.ndarray | None = None,
    groups: Sequence[str | None] | Mapping[str, Sequence[str | None]] | None = None,
    threshold: float = 0.5,
    predictions_name: str = "predictions.csv",
    plots_dir: str = "plots",
    mistakes: int = 16,
    face: FaceSettings | None = None,
    max_pixels: int | None = None,
    inputs: ModelInputs | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Predict every sample, compute all metrics, write predictions CSV and plots.

    Returns the metrics dict and one row per predicted image (``path``, ``true`` and ``pred`` as
    class indices, ``prob`` of class 1, ``group``) for callers that log them elsewhere.

    ``images`` (uint8, aligned with ``samples``) skips decoding when the caller already holds
    them (training's decoded cache); otherwise each file is decoded with ``data.load_image``, the
    same function training used. Unreadable files are logged one line each and listed under
    ``skipped`` in the result. ``groups`` (aligned with ``samples``; one list, or several by
    column name) defaults to the source folder when several folders feed one class; when the
    files are decoded here and mix image sizes, a ``kind`` column (original size) is added.
    ``inputs`` (``inference.model_inputs_for``) replaces ``image_size`` and ``face`` for a model
    with several inputs. Raises UserError when no file could be read.
    """
    inputs = inputs or ModelInputs.single(face, image_size)
    face, image_size = inputs.face, inputs.size
    samples = list(samples)
    n = len(samples)
    if n == 0:
        raise UserError("nothing to evaluate: no samples")
    if images is not None and len(images) != n:
        raise ValueError(f"images has {len(images)} entries for {n} samples")
    if groups is None:
        groups = auto_groups(samples)
    columns = dict(groups) if isinstance(groups, Mapping) else {"group": groups} if groups else {}
    for col, labels in columns.items():
        if len(labels) != n:
            raise ValueError(f"groups[{col}] has {len(labels)} entries for {n} samples")
    out = Path(out_dir)

    probs = np.full(n, np.nan)
    skipped: list[dict[str, str]] = []
    if images is not None:
        for start in progress(
            range(0, n, batch_size), total=n, desc="scoring", count=lambda s: min(batch_size, n - s)
        ):
            probs[start : start + batch_size] = predict_probs(model, images[start : start + batch_size])
    else:
        paths = [s.path for s in samples]
        no_face: list[str] = []
        kind: dict[str, str] = {}

        loader = partial(inputs.load, max_pixels=max_pixels)  # picklable: worker processes may run it
        for start, items in progress(
            decode_batches(paths, loader, batch_size, processes=inputs.describes),
            total=len(paths),
            desc="scoring",
            count=lambda b: len(b[1]),
        ):
            ok = [i for i, item in enumerate(items) if not isinstance(item, str)]
            for i, item in enumerate(items):
                path = paths[start + i]
                if isinstance(item, str):
                    log.warning("skipped %s: %s", path, item)
                    skipped.append({"path": path, "reason": item})
                    continue
                kind[path] = item[2]
                if item[1]:
                    no_face.append(path)
            if ok:
                batch = inputs.stack([items[i][0] for i in ok])
                probs[[start + i for i in ok]] = predict_probs(model, batch)

    kept = np.flatnonzero(~np.isnan(probs))
    if len(kept) == 0:
        raise UserError(
            f"none of the {n} images could be read (first: {skipped[0]['path']}: {skipped[0]['reason']})"
        )
    y = np.array([samples[i].label for i in kept], dtype=int)
    p = probs[kept]
    if images is None:
        kinds = image_kinds([kind.get(s.path, "") for s in samples])
        if len(set(kinds)) > 1:
            columns.setdefault("kind", kinds)
        missed = set(no_face)
        found = ev.face_found_column([s.path in missed for s in samples]) if face.active else None
        if found:
            columns.setdefault("face", found)
    by_column = {col: [labels[i] for i in kept] for col, labels in columns.items()}
    g = next(iter(by_column.values()), None)
    result = ev.evaluate_predictions(y, p, class_names, groups=by_column or None, threshold=threshold)
    result["n_skipped"] = len(skipped)
    result["skipped"] = skipped
    if face.active and images is None:
        result["face"] = {
            "mode": face.mode,
            "margin": face.margin,
            "detector": face.detector,
            "no_face_found": len(no_face),
        }

    pred = (p >= threshold).astype(int)
    rows = [
        {
            "path": samples[i].path,
            "true": int(y[j]),
            "pred": int(pred[j]),
            "prob": float(p[j]),
            "group": "" if g is None or g[j] is None else str(g[j]),
            "groups": {col: labels[j] for col, labels in by_column.items()},
        }
        for j, i in enumerate(kept)
    ]
    write_csv(
        (
            (r["path"], class_names[r["true"]], class_names[r["pred"]], f"{r['prob']:.6f}", r["group"])
            for r in rows
        ),
        ["path", "true", "pred", f"prob_{class_names[1]}", "group"],
        out / predictions_name,
    )

    plots = out / plots_dir
    ev.plot_confusion_matrix(result["confusion_matrix"], class_names, plots / PLOT_FILES["confusion_matrix"])
    ev.plot_reliability(result["reliability"], plots / PLOT_FILES["reliability"])
    ev.plot_roc(y, p, plots / PLOT_FILES["roc"], class_names)
    if mistakes > 0:
        worst = ev.most_confident_mistakes(y, p, k=mistakes, threshold=threshold)
        if images is not None and images.ndim == 4:
            pics = [np.asarray(images[kept[j]]) for j in worst]
        else:  # decoded here, or descriptors: the picture is the face the model's input came from
            used = face or FaceSettings()
            shown, side = used.picture(), DESCRIPTOR_CHIP if used.describes else image_size
            pics = []
            for j in list(worst):
                try:  # read again for the picture: a file may have gone since it was scored
                    pics.append(load_image(samples[kept[j]].path, side, max_pixels, face=shown))
                except (ValueError, OSError):
                    worst = worst[worst != j]
        ev.plot_mistakes(
            pics,
            y[worst],
            p[worst],
            class_names,
            plots / PLOT_FILES["mistakes"],
            k=mistakes,
            threshold=threshold,
        )
    return result, rows


def evaluate_model(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Score a model on samples: ``evaluate_model_with_rows`` (same arguments) without the rows."""
    return evaluate_model_with_rows(*args, **kwargs)[0]


def parse_group_spec(spec: str) -> tuple[str, str | None, set[str]]:
    """``race`` -> (race, None, {}); ``race@age:20-29/30-39`` -> (race, age, {20-29, 30-39}):
    a column, optionally only over the rows whose other column takes one of the listed values.
    The column ``*`` puts every (selected) row in one group, ``all``: ``*@age:20-29/30-39``."""
    column, _, where = str(spec).partition("@")
    if not where:
        return column, None, set()
    other, _, values = where.partition(":")
    if not other or not values:
        raise UserError(f"group_by entry '{spec}' must look like column or column@other:v1/v2")
    return column, other, set(values.split("/"))


def read_groups_csv(
    path: str | os.PathLike[str], samples: Sequence[Sample], group_by: Sequence[str] = ("group",)
) -> dict[str, list[str | None]]:
    """Groups per sample from a CSV with a ``file`` column and one column per grouping.

    ``group_by`` names the columns to break accuracy down by (``age``, ``race``, ...; default
    ``group``), each optionally restricted to rows where another column takes given values
    (``race@age:20-29/30-39/40-49/50-59``: race among adults). An absolute ``file`` must name
    the image exactly; a relative one matches as a path suffix (``woman/0001.jpg`` or just
    ``0001.jpg``), so the CSV can be written relative to any root. A relative entry matching
    several images is ambiguous and not guessed: those images, like any not listed, get the
    group ``unlisted`` (with a warning).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"groups_csv={path} does not exist")
    specs = [parse_group_spec(g) for g in group_by]
    with open(p, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        have = set(reader.fieldnames or [])
        need = {"file"} | {c for c, _, _ in specs if c != "*"} | {o for _, o, _ in specs if o}
        if not need <= have:
            wanted = ",".join(["file", *sorted(need - {"file"})])
            raise UserError(
                f"groups_csv={path} needs the columns {wanted} "
                f"(has: {', '.join(reader.fieldnames or [])}); group_by picks the columns"
            )
        rows = [(os.path.expanduser(r["file"].strip()), r) for r in reader if (r.get("file") or "").strip()]
    absolute = {os.path.normpath(f): r for f, r in rows if os.path.isabs(f)}
    relative = {Path(os.path.normpath(f)).as_posix(): r for f, r in rows if not os.path.isabs(f)}
    keys: list[str | None] = []
    for s in samples:
        full = os.path.abspath(s.path)
        if full in absolute:
            keys.append("abs:" + full)
            continue
        parts = Path(full).parts
        tails = ("/".join(parts[k:]) for k in range(1, len(parts)))  # longest first
        keys.append(next(("rel:" + t for t in tails if t in relative), None))
    uses = Counter(k for k in keys if k and k.startswith("rel:"))
    ambiguous = {k for k, n in uses.items() if n > 1}
    found = [
        None if k is None or k in ambiguous else absolute[k[4:]] if k.startswith("abs:") else relative[k[4:]]
        for k in keys
    ]
    for k in sorted(ambiguous):
        log.warning("groups_csv: '%s' matches %d images; give a longer path", k[4:], uses[k])
    missing = sum(r is None for r in found)
    if missing == len(samples):
        raise UserError(f"groups_csv={path}: none of its files match the evaluated images")
    if missing:
        log.warning("groups_csv: %d of %d images are not listed (group 'unlisted')", missing, len(samples))
    out: dict[str, list[str | None]] = {}
    for spec, (column, other, values) in zip(group_by, specs, strict=True):
        out[str(spec)] = [
            "unlisted"
            if r is None
            else None
            if other is not None and r[other] not in values
            else "all"
            if column == "*"
            else r[column]
            for r in found
        ]
    return out


def _overridden(prefixes: Sequence[str]) -> bool:
    return any(o.lstrip("+~").startswith(prefixes) for o in job_info().overrides)


def select_samples(cfg: Any) -> tuple[list[Sample], list[str], str, Path | None]:
    """(samples, class_names, description, run_dir) for the configured source.

    ``source=auto`` uses the run's manifest when ``model_path`` belongs to a training run and no
    ``data.root``/``data=`` was given on the command line; otherwise every image under data.root.
    """
    model_file = resolve_model_path(cfg.model_path)
    run_dir = model_file.parent if (model_file.parent / "split.csv").is_file() else None
    source = cfg.source
    if source not in ("auto", "manifest", "folder"):
        raise UserError(f"source={source} is not one of auto, manifest, folder")
    if source == "auto":
        source = "folder" if run_dir is None or _overridden(("data.root=", "data=")) else "manifest"
    trained = trained_class_names(run_dir)

    if source == "manifest":
        if run_dir is None:
            raise UserError(
                f"source=manifest needs a training run directory with split.csv; {model_file.parent} has none"
            )
        splits = read_manifest(run_dir / "split.csv")
        if cfg.split not in splits:
            raise UserError(f"split={cfg.split} is not one of {', '.join(splits)}")
        samples = splits[cfg.split]
        if not samples:
            raise UserError(f"the {cfg.split} split of {run_dir / 'split.csv'} is empty")
        names = trained or _manifest_classes(run_dir / "split.csv") or list(cfg.data.classes)
        return samples, names, f"{run_dir / 'split.csv'} ({cfg.split} split)", run_dir

    names = list(cfg.data.classes)
    if trained is not None and trained != names:
        raise UserError(
            f"the model was trained with classes {trained} (probability of '{trained[1]}') but "
            f"data.classes lists {names}; map the folders to the same class names and order"
        )
    root = resolve_root(cfg.data)
    samples = discover(cfg.data, root)
    return samples, names, str(root), run_dir


def _manifest_classes(path: Path) -> list[str] | None:
    by_label: dict[int, str] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            by_label.setdefault(int(row["label"]), row["class"])
    return [by_label[0], by_label[1]] if set(by_label) == {0, 1} else None


def seeded_sample(samples: Sequence[Sample], n: int, seed: int) -> list[Sample]:
    """``n`` of the samples, the same ones for the same seed (quick checks, slow reference models);
    kept in their original order."""
    if n < 1:
        raise UserError(f"sample={n} must be a positive number of images")
    if n >= len(samples):
        return list(samples)
    keep = np.sort(np.random.default_rng(seed).choice(len(samples), size=n, replace=False))
    return [samples[i] for i in keep]


def run_evaluation(cfg: Any, out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The CLI's work, callable without Hydra: select samples, evaluate, write, print."""

    validate_scoring(cfg, "evaluate")  # before any file is read
    out = Path(out_dir)
    samples, class_names, described, _ = select_samples(cfg)
    if cfg.get("sample"):
        samples, described = (
            seeded_sample(samples, int(cfg.sample), int(cfg.get("seed", 0))),
            f"{described}, a seeded sample of {min(int(cfg.sample), len(samples))}",
        )
    reference = load_reference(cfg.reference, class_names) if cfg.get("reference") else None
    model = load_model(cfg.model_path)
    inputs = model_inputs_for(model, cfg.model_path, cfg)
    threshold = decision_threshold_for(cfg.model_path, cfg.get("threshold"))
    group_by = list(cfg.get("group_by") or ["group"])
    groups = read_groups_csv(cfg.groups_csv, samples, group_by) if cfg.get("groups_csv") else None
    log.info(
        "evaluating %s on %d images from %s at %dpx, face stage: %s, threshold %.3g",
        resolve_model_path(cfg.model_path),
        len(samples),
        described,
        inputs.size,
        inputs.describe(),
        threshold,
    )
    result, rows = evaluate_model_with_rows(
        model,
        samples,
        class_names,
        inputs.size,
        out,
        int(cfg.batch_size),
        groups=groups,
        threshold=threshold,
        mistakes=int(cfg.mistakes),
        max_pixels=max_pixels_for(cfg.model_path, cfg.data.get("max_pixels")),
        inputs=inputs,
    )
    if reference is not None:
        log.info("scoring the same %d images with reference=%s", len(rows), reference.name)
        # at its own operating point: the threshold chosen for our model means nothing to it
        result["reference"] = score_reference(reference, rows, class_names)
    if result["skipped"]:
        write_csv(
            ((s["path"], s["reason"]) for s in result["skipped"]),
            ["path", "reason"],
            out / "skipped_files.csv",
        )
    metrics = {
        "status": "completed",
        "model_path": str(resolve_model_path(cfg.model_path)),
        "data": described,
        "image_size": inputs.size,
        **result,
    }
    write_json(metrics, out / "metrics.json")
    with Tracker.start(cfg, out, job_type="evaluate") as tracker:  # a W&B run of job_type evaluate
        tracker.use_model(resolve_model_path(cfg.model_path))  # lineage: the run that trained it
        tracker.log_summary({k: v for k, v in metrics.items() if not isinstance(v, dict | list)})
        tracker.log_evaluation(result, rows, class_names)
    print(ev.format_report(result, result.get("reference")))
    print(f"outputs: {out}")
    return metrics
