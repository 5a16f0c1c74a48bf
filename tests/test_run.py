"""The whole job through the real CLI, in a subprocess, as a user runs it."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import NOISE, compose_cfg, make_images, run_cli

from gender import scoring
from gender.inference import load_model
from gender.training import train

TINY = ["debug=tiny", "logger=none"]


@pytest.mark.slow
def test_cli_run_writes_every_output(tmp_path):
    """A whole (tiny) run through the real CLI: every output file, and a clean console (no
    TensorFlow/absl/oneDNN/CUDA start-up lines, no Hydra-formatted `[date][logger][LEVEL]` lines:
    they stay in the job's log file; Keras' per-epoch lines)."""
    run_dir = tmp_path / "run"
    proc = run_cli(
        "gender.run",
        *TINY,
        "trainer.epochs=3",
        "optimizer.lr=0.003",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in (
        "metrics.json",
        "model.keras",
        "history.csv",
        "split.csv",
        "skipped_files.csv",
        "plots/learning_curves.png",
        "plots/confusion_matrix.png",
        "predictions_test.csv",
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
    ):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("train_accuracy", "val_accuracy", "test_accuracy", "test_loss", "epochs_run", "wall_seconds"):
        assert metrics[key] is not None, key
    assert metrics["epochs_run"] == 3  # trainer.epochs took effect
    assert metrics["params"]["optimizer.lr"] == 0.003
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert float(rows[0]["learning_rate"]) == pytest.approx(0.003)
    assert "test acc" in proc.stdout and "val acc" in proc.stdout
    assert not (run_dir / "wandb").exists()  # logger=none writes no W&B files

    console = (proc.stdout + proc.stderr).splitlines()
    assert [line for line in console if NOISE.search(line)] == []
    assert [line for line in console if re.match(r"\[\d{4}-\d\d-\d\d ", line)] == []
    assert any(line.startswith("decoding 80 images at 32px") for line in console)
    assert len(re.findall(r"^4/4 - .*loss: .*val_accuracy", proc.stdout, re.M)) == 3  # Keras, per epoch
    log_file = (run_dir / "run.log").read_text()
    assert re.search(r"^\[\d{4}-\d\d-\d\d [\d:,]+\]\[gender\.data\]\[INFO\] - decoding", log_file, re.M)


@pytest.mark.slow
def test_train_function_on_a_folder_with_sgd_and_no_augmentation(tmp_path):
    """``train(cfg)`` is a plain function: tests and tools call it without the CLI."""
    root = make_images(tmp_path / "faces", {"male": 16, "female": 16})
    cfg = compose_cfg(
        "data=folder",
        f"data.root={root}",
        "data.image_size=32",
        "data.batch_size=8",
        "optimizer=sgd",
        "augmentation=none",
        "model=rescnn",
        "trainer.epochs=2",
        "model.test_time_flip=true",
        "trainer.verbose=0",
        "logger=none",
        tmp_path=tmp_path,
    )
    metrics = train(cfg)
    assert metrics["epochs_run"] == 2
    assert metrics["split_sizes"] == {"train": 26, "val": 4, "test": 2}  # 16 per class, stratified
    assert 0.0 <= metrics["val_accuracy"] <= 1.0
    assert metrics["runtime"]["test_time_flip"] is True
    # the saved model is the mirror-averaging wrapper: a mirrored image gets the same probability
    model = load_model(Path(cfg.paths.output_dir) / "model.keras")
    assert "mirror" in [layer.name for layer in model.layers]
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        model.predict(x[:, :, ::-1], verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(Exception, match="never overwritten"):
        train(cfg)  # a finished run directory is never reused


def test_train_with_mixup_and_class_weights(tmp_path):
    """Mixup blends the loss weights too; the reported train accuracy still counts hard classes."""
    root = make_images(tmp_path / "faces", {"male": 24, "female": 8})
    cfg = compose_cfg(
        "data=folder",
        f"data.root={root}",
        "data.image_size=32",
        "data.batch_size=8",
        "augmentation.mixup=0.4",
        "trainer.class_weight=balanced",
        "trainer.epochs=1",
        "trainer.verbose=0",
        "logger=none",
        tmp_path=tmp_path,
    )
    metrics = train(cfg)
    assert metrics["epochs_run"] == 1 and cfg.augmentation.mixup == 0.4
    assert 0.0 <= metrics["train_accuracy"] <= 1.0 and np.isfinite(metrics["train_loss"])


def test_balanced_decision_threshold_is_chosen_on_validation(tmp_path):
    """trainer.decision_threshold=balanced: the threshold where the saved model's two class recalls
    average highest on the validation split, kept in metrics.json; the test figures use it, and so
    does ``gender.evaluate`` of the run without any flag."""
    root = make_images(tmp_path / "faces", {"male": 40, "female": 30})
    cfg = compose_cfg(
        "data=folder",
        f"data.root={root}",
        "data.image_size=32",
        "data.batch_size=8",
        "data.split.train=0.6",
        "data.split.val=0.3",
        "trainer.decision_threshold=balanced",
        "trainer.epochs=1",
        "trainer.verbose=0",
        "logger=none",
        tmp_path=tmp_path,
    )
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    chosen = metrics["decision_threshold"]
    assert 0.0 < chosen < 1.0 and metrics["test"]["threshold"] == chosen

    def evaluate(split: str) -> dict:
        cfg = compose_cfg(f"model_path={run}", f"split={split}", "logger=none", config_name="evaluate")
        return scoring.run_evaluation(cfg, tmp_path / split)

    on_val = evaluate("val")
    assert on_val["balanced_threshold"] == pytest.approx(chosen, abs=1e-4)  # the same rule, same images
    on_test = evaluate("test")
    assert on_test["threshold"] == chosen and on_test["accuracy"] == metrics["test_accuracy"]
