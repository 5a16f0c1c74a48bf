"""``gender.evaluate`` on a tiny hand-weighted model and generated 32x32 images."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import NOISE, compose_cfg, run_cli
from PIL import Image

from gender import inference, scoring
from gender.data import Sample, write_manifest
from gender.errors import UserError
from gender.prediction import run_predict

NAMES = ["male", "female"]
RED, BLUE = (200, 60, 40), (40, 60, 200)


def write_image(path: Path, color: tuple[int, int, int], size: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(color) + rng.integers(-20, 20, (size, size, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """4 blue 'male', 4 red 'female', one red image filed as male (a mistake), one corrupt file."""
    root = tmp_path / "data"
    for i in range(4):
        write_image(root / "male" / f"m{i}.png", BLUE, seed=i)
        write_image(root / "female" / f"f{i}.png", RED, seed=10 + i)
    write_image(root / "male" / "red_one.png", RED, seed=99)
    (root / "female" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return root


def folder_samples(root: Path) -> list[Sample]:
    return [
        Sample(str(p), label, name)
        for label, name in enumerate(NAMES)
        for p in sorted((root / name).iterdir())
    ]


def test_evaluate_model_skips_bad_files_and_writes_outputs(model, data_root, tmp_path):
    out = tmp_path / "out"
    # batch_size=3 puts the corrupt file inside a batch with good ones
    r = scoring.evaluate_model(model, folder_samples(data_root), NAMES, 32, out, batch_size=3)
    assert r["n"] == 9 and r["n_skipped"] == 1
    assert r["skipped"][0]["path"].endswith("broken.jpg")
    assert r["accuracy"] == pytest.approx(8 / 9)
    assert r["confusion_matrix"] == [[4, 1], [0, 4]]
    assert "per_group" not in r  # one folder per class: groups would repeat the classes
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "true", "pred", "prob_female", "group"]
    wrong = [row for row in rows if row["true"] != row["pred"]]
    assert len(rows) == 9 and len(wrong) == 1 and wrong[0]["path"].endswith("red_one.png")
    assert float(wrong[0]["prob_female"]) > 0.9
    for name in scoring.PLOT_FILES.values():
        assert (out / "plots" / name).stat().st_size > 1000


def test_evaluate_model_from_images_array_matches_files(model, data_root, tmp_path):
    samples = [s for s in folder_samples(data_root) if not s.path.endswith(".jpg")]
    from gender.data import load_image

    images = np.stack([load_image(s.path, 32) for s in samples])
    a = scoring.evaluate_model(
        model, samples, NAMES, 32, tmp_path / "a", images=images, predictions_name="predictions_test.csv"
    )
    b = scoring.evaluate_model(model, samples, NAMES, 32, tmp_path / "b")
    assert a["accuracy"] == b["accuracy"] and a["loss"] == pytest.approx(b["loss"])
    assert (tmp_path / "a" / "predictions_test.csv").is_file()


def test_groups_from_sources_and_csv(model, tmp_path):
    root = tmp_path / "d"
    samples = []
    for i in range(2):
        samples.append(Sample(str(write_image(root / "man" / f"{i}.png", BLUE, seed=i)), 0, "man"))
        samples.append(Sample(str(write_image(root / "woman" / f"{i}.png", RED, seed=i)), 1, "woman"))
        samples.append(Sample(str(write_image(root / "hijab" / f"{i}.png", BLUE, seed=i)), 1, "hijab"))
    r = scoring.evaluate_model(model, samples, NAMES, 32, tmp_path / "out", mistakes=0)
    assert r["per_group"]["hijab"]["accuracy"] == 0.0  # blue images filed as female
    assert r["per_group"]["woman"]["accuracy"] == 1.0
    assert r["per_group"]["man"]["n"] == 2
    assert not (tmp_path / "out" / "plots" / "mistakes.png").exists()

    groups_csv = tmp_path / "groups.csv"
    groups_csv.write_text(
        "file,group\n"
        f"{root / 'man' / '0.png'},adult\n"  # absolute: exact match
        "hijab/1.png,covered\n"  # relative: matched as a path suffix
        "0.png,ambiguous\n"
    )  # matches woman/0.png and hijab/0.png: not guessed
    groups = scoring.read_groups_csv(groups_csv, samples)["group"]
    by_path = {Path(s.path).relative_to(root).as_posix(): g for s, g in zip(samples, groups, strict=True)}
    assert by_path == {
        "man/0.png": "adult",
        "hijab/1.png": "covered",
        "woman/0.png": "unlisted",
        "hijab/0.png": "unlisted",
        "man/1.png": "unlisted",
        "woman/1.png": "unlisted",
    }
    bad = tmp_path / "bad.csv"
    bad.write_text("name,kind\nx,y\n")
    with pytest.raises(UserError, match="file,group"):
        scoring.read_groups_csv(bad, samples)


def compose_evaluate(*overrides: str):
    return compose_cfg(*overrides, config_name="evaluate")


def make_run_dir(tmp_path: Path, model_file: Path, data_root: Path) -> Path:
    """A training run directory as the contract describes it: model, manifest, saved config."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(model_file, run / "model.keras")
    samples = folder_samples(data_root)
    splits = {"train": samples[:4], "val": [], "test": samples[4:]}
    write_manifest(splits, NAMES, run / "split.csv")
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("data:\n  classes:\n    male: [male]\n    female: [female]\n")
    return run


def test_run_directory_uses_its_test_split(model_file, data_root, tmp_path, capsys):
    run = make_run_dir(tmp_path, model_file, data_root)
    cfg = compose_evaluate(f"model_path={run}")
    metrics = scoring.run_evaluation(cfg, tmp_path / "out")
    n_test = len(folder_samples(data_root)) - 4
    assert metrics["n"] + metrics["n_skipped"] == n_test
    assert metrics["data"].endswith("(test split)")
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["accuracy"] == metrics["accuracy"] and saved["status"] == "completed"
    assert "confusion matrix" in capsys.readouterr().out


def test_the_runs_decision_threshold_is_used_unless_given(model_file, data_root, tmp_path):
    """evaluate and predict call faces at the threshold the training run decided on (its
    metrics.json's decision_threshold, e.g. trainer.decision_threshold=balanced); threshold=
    overrides it, a bare .keras file gets 0.5, an unreadable metrics.json is one clear line."""
    run = make_run_dir(tmp_path, model_file, data_root)
    (run / "metrics.json").write_text(json.dumps({"status": "completed", "decision_threshold": 0.999}))
    red = str(data_root / "female" / "f0.png")  # the tiny model gives it about 0.99: female at 0.5

    strict = scoring.run_evaluation(compose_evaluate(f"model_path={run}"), tmp_path / "strict")
    assert strict["threshold"] == 0.999 and strict["per_class"]["female"]["recall"] == 0.0
    given = scoring.run_evaluation(compose_evaluate(f"model_path={run}", "threshold=0.5"), tmp_path / "given")
    assert given["threshold"] == 0.5 and given["per_class"]["female"]["recall"] == 1.0
    predict = compose_cfg(f"model_path={run}", config_name="predict")
    assert [p.label for p in run_predict(predict, tmp_path / "p1", [red])] == ["male"]
    bare = compose_cfg(f"model_path={model_file}", config_name="predict")
    assert [p.label for p in run_predict(bare, tmp_path / "p2", [red])] == ["female"]

    (run / "metrics.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot read .*metrics.json"):
        scoring.run_evaluation(compose_evaluate(f"model_path={run}"), tmp_path / "broken")


def test_class_order_mismatch_is_refused(model_file, data_root, tmp_path):
    run = make_run_dir(tmp_path, model_file, data_root)
    cfg = compose_evaluate(
        f"model_path={run}",
        "data=folder",
        f"data.root={data_root}",
        "source=folder",
        "~data.classes.male",
        "+data.classes.male=[male]",
    )
    with pytest.raises(UserError, match="trained with classes"):
        scoring.run_evaluation(cfg, tmp_path / "out")


def test_bad_model_paths(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        inference.resolve_model_path(tmp_path / "nope.keras")
    with pytest.raises(UserError, match="without model.keras"):
        inference.resolve_model_path(tmp_path)
    (tmp_path / "m.h5").write_bytes(b"x")
    with pytest.raises(UserError, match="not a .keras file"):
        inference.resolve_model_path(tmp_path / "m.h5")
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot load model"):
        inference.load_model(tmp_path / "junk.keras")


def test_cli_on_a_folder(model_file, data_root, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(
        "gender.evaluate",
        f"model_path={model_file}",
        "data=folder",
        f"data.root={data_root}",
        f"hydra.run.dir={out}",
        "batch_size=4",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(8 / 9)
    assert metrics["n_skipped"] == 1
    assert "broken.jpg" in (out / "skipped_files.csv").read_text()
    assert "accuracy" in proc.stdout and "95% CI" in proc.stdout
    skipped_lines = [
        ln for ln in (proc.stdout + proc.stderr).splitlines() if "skipped " in ln and "broken.jpg" in ln
    ]
    assert len(skipped_lines) == 1
    assert [line for line in proc.stderr.splitlines() if NOISE.search(line)] == []


def test_missing_model_path_is_a_user_error():
    with pytest.raises(UserError, match="model_path is required"):
        inference.require_model_path(compose_evaluate(), "example")


def test_rows_for_tracking(model, data_root, tmp_path):
    samples = [s for s in folder_samples(data_root) if not s.path.endswith(".jpg")]
    result, rows = scoring.evaluate_model_with_rows(model, samples, NAMES, 32, tmp_path, mistakes=0)
    assert len(rows) == result["n"] == 9
    assert set(rows[0]) == {"path", "true", "pred", "prob", "group", "groups"}
    assert sum(r["true"] != r["pred"] for r in rows) == 1
