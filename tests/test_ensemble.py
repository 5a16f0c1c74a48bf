"""``gender.ensemble``: training runs averaged into one model that evaluate and predict take as a run."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from helpers import NOISE, assert_one_line, make_images, recorded_run, run_cli, save_tiny_model
from omegaconf import OmegaConf
from PIL import Image

from gender import inference
from gender.ensembling import build_ensemble
from gender.errors import UserError

NAMES = ["male", "female"]


def save_gain_model(path: Path, gain: float) -> Path:
    """sigmoid(gain * (brightness - 0.47)): the generated women are brighter; each gain gives a
    member its own known probabilities (every member's model has the same name, as in real runs)."""
    return save_tiny_model(path, weights=(gain / 3, gain / 3, gain / 3), bias=-0.47 * gain)


def fake_run(run_dir: Path, root: Path, gain: float, split_seed: int = 0, *overrides: str) -> Path:
    """A training run's files as evaluate and predict read them: model, recorded config, split."""
    model = save_gain_model(run_dir.parent / f"{run_dir.name}.keras", gain)
    return recorded_run(run_dir, root, model, *overrides, split_seed=split_seed)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("faces"), {"man": 10, "woman": 10})


def test_ensemble_averages_its_members_and_is_scored_like_a_run(images, tmp_path):
    a = fake_run(tmp_path / "a", images, gain=4.0)
    b = fake_run(tmp_path / "b", images, gain=12.0)
    out = tmp_path / "ab"
    proc = run_cli("gender.ensemble", f"members=[{a},{b}]", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [line for line in proc.stderr.splitlines() if NOISE.search(line)] == []
    recorded = OmegaConf.load(out / ".hydra" / "config.yaml")
    assert list(recorded.ensemble.members) == [str(a.resolve()), str(b.resolve())]
    assert list(recorded.data.classes) == NAMES
    assert (out / "split.csv").read_text() == (a / "split.csv").read_text()

    files = sorted(str(p) for p in images.rglob("*.png"))
    pixels = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    members = [inference.predict_probs(inference.load_model(r), pixels) for r in (a, b)]
    ensemble = inference.predict_probs(inference.load_model(out), pixels)
    np.testing.assert_allclose(ensemble, (members[0] + members[1]) / 2, atol=1e-6)
    assert not np.allclose(members[0], members[1])

    # predict takes the ensemble folder as it takes a run: classes and face stage from its record
    pred = run_cli(
        "gender.predict", f"model_path={out}", files[0], files[-1], f"hydra.run.dir={tmp_path / 'pred'}"
    )
    assert pred.returncode == 0, pred.stderr[-3000:]
    with open(tmp_path / "pred" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == ["male", "female"]
    want = [1 - ensemble[0], ensemble[-1]]
    assert [float(r["probability"]) for r in rows] == pytest.approx(want, abs=1e-4)


def test_members_must_share_split_and_face_stage(images, tmp_path):
    a = fake_run(tmp_path / "a", images, gain=4.0)
    other_split = fake_run(tmp_path / "b", images, gain=8.0, split_seed=1)
    with pytest.raises(UserError, match="differ in their train/val/test split.*data.split.seed"):
        build_ensemble([str(a), str(other_split)], tmp_path / "out1")
    other_face = fake_run(tmp_path / "c", images, 8.0, 0, "data.face=crop")
    with pytest.raises(UserError, match="differ in the face stage"):
        build_ensemble([str(a), str(other_face)], tmp_path / "out2")
    with pytest.raises(UserError, match="at least two training runs"):
        build_ensemble([str(a)], tmp_path / "out3")
    with pytest.raises(UserError, match="the same run twice"):
        build_ensemble([str(a), str(a / "model.keras")], tmp_path / "out4")
    assert not any((tmp_path / f"out{i}").exists() for i in range(1, 5))  # nothing written


def test_members_that_decided_other_thresholds_need_the_ensembles_own(images, tmp_path):
    a = fake_run(tmp_path / "a", images, gain=4.0)
    b = fake_run(tmp_path / "b", images, gain=8.0)
    (b / "metrics.json").write_text('{"decision_threshold": 0.336}')  # trainer.decision_threshold=balanced
    with pytest.raises(UserError, match="differ in decision threshold.*threshold=P"):
        build_ensemble([str(a), str(b)], tmp_path / "out1")
    with pytest.raises(UserError, match="threshold=1.5 is invalid"):
        build_ensemble([str(a), str(b)], tmp_path / "out2", threshold=1.5)
    summary = build_ensemble([str(a), str(b)], tmp_path / "own", threshold=0.4)
    assert summary["decision_threshold"] == 0.4 and inference.decision_threshold_for(tmp_path / "own") == 0.4
    assert build_ensemble([str(a), str(b)], tmp_path / "half", threshold=0.5)["decision_threshold"] == 0.5
    assert inference.decision_threshold_for(tmp_path / "half") == 0.5  # no metrics.json: 0.5


def test_a_bare_model_file_is_refused_in_one_line(images, tmp_path):
    a = fake_run(tmp_path / "a", images, gain=4.0)
    bare = save_gain_model(tmp_path / "bare.keras", 2.0)
    proc = run_cli("gender.ensemble", f"members=[{a},{bare}]", f"hydra.run.dir={tmp_path / 'out'}")
    assert_one_line(proc, 2, "is not a training run directory")
