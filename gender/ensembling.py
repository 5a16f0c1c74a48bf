"""Several training runs as one model: the average of their probabilities, saved like a run.

The ensemble directory holds what ``evaluate`` and ``predict`` read from a training run, so both
work on it unchanged: ``model.keras`` (one Keras model that averages its members' outputs),
``.hydra/config.yaml`` (the members' common ``data`` settings: classes, face stage, size limit,
and the member runs), ``split.csv`` (their common split, so ``split=test`` scores images no member
trained on) and, when the ensemble's threshold is not 0.5, ``metrics.json`` with it (the members'
common one, or ``threshold=P``: the average is a model of its own, so it may have its own).
Members must agree on all of these; a mismatch is one line naming it, never a silent mix. The one
allowed difference is the kind of input: image networks and descriptor heads
(``data.face=descriptor``) can be averaged together, each kind agreeing within itself; the model
then has one input per kind (``image``, ``descriptor``) and the recorded ``ensemble.inputs`` tells
evaluate and predict how a file becomes each (``inference.model_inputs_for``).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gender.config import is_probability
from gender.data import read_manifest
from gender.errors import UserError
from gender.face import DESCRIPTOR_CHIP, FaceSettings
from gender.inference import MODEL_FILE, decision_threshold_for, load_model, resolve_model_path
from gender.io import atomic_path, write_json
from gender.log import quiet_tensorflow

log = logging.getLogger(__name__)

#: ``data`` settings that change what a model sees or how its output is read: members must agree
SHARED_DATA_KEYS = ("classes", "max_pixels")


def _member_run(path: str) -> Path:
    run_dir = resolve_model_path(path).parent
    if not (run_dir / ".hydra" / "config.yaml").is_file() or not (run_dir / "split.csv").is_file():
        raise UserError(
            f"ensemble member {path} is not a training run directory (needs .hydra/config.yaml and "
            "split.csv): an ensemble is built from runs, so their settings and split can be checked"
        )
    return run_dir


def _split_signature(run_dir: Path) -> str:
    """Which file went to which split, short enough for the one-line error: sizes and a digest."""
    splits = read_manifest(run_dir)
    rows = sorted(f"{name},{s.path},{s.label}" for name, samples in splits.items() for s in samples)
    sizes = "/".join(str(len(samples)) for samples in splits.values())
    digest = hashlib.sha1("\n".join(rows).encode()).hexdigest()[:10]
    return f"{sizes} images (digest {digest})"


def _agree(what: str, values: Sequence[Any], runs: Sequence[Path], hint: str = "") -> None:
    for value, run in zip(values[1:], runs[1:], strict=True):
        if value != values[0]:
            raise UserError(
                f"ensemble members differ in {what}: {runs[0]} has {values[0]}, {run} has {value}{hint}"
            )


def build_ensemble(members: Sequence[str], out_dir: Path, threshold: float | None = None) -> dict[str, Any]:
    """Check that ``members`` (training run directories) agree, then write the averaging model and
    its run files into ``out_dir``. ``threshold`` is the ensemble's decision threshold; None: the
    one its members share. Returns a summary (members, threshold, input size)."""
    if len(members) < 2:
        raise UserError(f"members needs at least two training runs, got {len(members)}")
    runs = [_member_run(str(m)) for m in members]
    if len({r.resolve() for r in runs}) < len(runs):
        raise UserError("members lists the same run twice: an ensemble of copies is that one model")
    data = [
        OmegaConf.to_container(OmegaConf.load(r / ".hydra" / "config.yaml").data, resolve=True) for r in runs
    ]
    for key in SHARED_DATA_KEYS:
        _agree(f"data.{key}", [d.get(key) for d in data], runs)
    faces = [FaceSettings.from_config(d) for d in data]
    kinds = ["descriptor" if f.describes else "image" for f in faces]
    groups = {kind: [i for i, k in enumerate(kinds) if k == kind] for kind in dict.fromkeys(kinds)}
    for kind, idx in groups.items():
        what = "the face stage" if len(groups) == 1 else f"the face stage of their {kind} members"
        _agree(what, [faces[i].describe() for i in idx], [runs[i] for i in idx])
    _agree(
        "their train/val/test split",
        [_split_signature(r) for r in runs],
        runs,
        "; train the members on one split: seed=N data.split.seed=S with the same S",
    )
    if threshold is not None and not is_probability(threshold):
        raise UserError(
            f"threshold={threshold} is invalid: a probability in [0, 1], or null for the members' own"
        )
    own = threshold is not None
    thresholds = [float(threshold) if own else decision_threshold_for(r) for r in runs]
    _agree(
        "decision threshold",
        thresholds,
        runs,
        "; an ensemble needs one threshold for all: give it its own with threshold=P (e.g. 0.5)",
    )

    quiet_tensorflow()  # TensorFlow starts here, its start-up lines filtered
    import keras

    models = [load_model(r) for r in runs]
    for idx in groups.values():
        _agree("input shape", [tuple(models[i].input_shape) for i in idx], [runs[i] for i in idx])
    _agree("output shape", [tuple(m.output_shape) for m in models], runs)
    if len(groups) == 1:
        inputs: Any = keras.Input(models[0].input_shape[1:], name="image")
        fed = [inputs] * len(models)
    else:  # one input per kind, fed to that kind's members
        inputs = {
            kind: keras.Input(models[idx[0]].input_shape[1:], name=kind) for kind, idx in groups.items()
        }
        fed = [inputs[kind] for kind in kinds]
    outputs = []
    for i, (m, x) in enumerate(zip(models, fed, strict=True)):
        m.name = f"member_{i}"  # the members' own names repeat (same architecture)
        outputs.append(m(x))
    # the mean of the members' probabilities: each member's calibration is kept, none dominates
    average = keras.layers.Average(name="probability_average", dtype="float32")(outputs)
    ensemble = keras.Model(inputs, average, name=f"ensemble_of_{len(models)}")

    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / MODEL_FILE) as tmp:
        ensemble.save(tmp)
    shutil.copyfile(runs[0] / "split.csv", out_dir / "split.csv")
    first = groups.get("image", groups.get("descriptor"))[0]  # data.face: the image network's stage
    recorded: dict[str, Any] = {
        "data": data[first],
        "ensemble": {"members": [str(r.resolve()) for r in runs]},
    }
    if len(groups) > 1:
        recorded["ensemble"]["inputs"] = [
            {
                "name": kind,
                "face": faces[idx[0]].mode,
                "face_margin": faces[idx[0]].margin,
                "face_detector": faces[idx[0]].detector,
                "image_size": DESCRIPTOR_CHIP if kind == "descriptor" else int(models[idx[0]].input_shape[1]),
            }
            for kind, idx in groups.items()
        ]
    (out_dir / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(OmegaConf.create(recorded), out_dir / ".hydra" / "config.yaml")
    if thresholds[0] != 0.5:
        write_json({"decision_threshold": thresholds[0]}, out_dir / "metrics.json")
    return {
        "members": recorded["ensemble"]["members"],
        "decision_threshold": thresholds[0],
        "image_size": DESCRIPTOR_CHIP if kinds[first] == "descriptor" else models[first].input_shape[1],
        "model": str(out_dir / MODEL_FILE),
    }
