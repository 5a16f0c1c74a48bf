"""``gender.predict``: odd image formats, per-image errors, the face stage and safe-mode loading."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from helpers import NOISE, run_cli
from helpers.faces import draw_face_photo
from PIL import Image

from gender import inference
from gender import prediction as gp
from gender.errors import UserError
from gender.face import FaceSettings, detect_largest, face_view
from gender.predict import split_positional

NAMES = ["male", "female"]
RED, BLUE = (200, 60, 40), (40, 60, 200)


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    """One file per awkward case."""
    d = tmp_path / "in"
    d.mkdir()
    paths = {
        "png": d / "red.png",
        "gray": d / "gray.jpg",
        "rgba": d / "rgba.png",
        "big": d / "big_blue.jpg",
        "corrupt": d / "corrupt.png",
        "empty": d / "empty.jpg",
    }
    Image.new("RGB", (32, 32), RED).save(paths["png"])
    Image.new("L", (70, 50), 128).save(paths["gray"])
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)
    rgba[..., :3] = BLUE
    rgba[20:, :, 3] = 255  # top half fully transparent
    Image.fromarray(rgba, "RGBA").save(paths["rgba"])
    Image.new("RGB", (1600, 1200), BLUE).save(paths["big"], quality=90)
    paths["corrupt"].write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    paths["empty"].write_bytes(b"")
    return paths


def test_prepare_handles_formats_and_sizes(images):
    gray, _ = gp.prepare_image(str(images["gray"]), 32)
    assert gray.shape == (32, 32, 3) and gray.dtype == np.uint8
    assert (gray[..., 0] == gray[..., 2]).all()
    rgba, _ = gp.prepare_image(str(images["rgba"]), 32)
    assert (rgba[:8] == 255).all()  # transparency composited on white
    assert tuple(rgba[-1, 0]) == BLUE
    big, status = gp.prepare_image(str(images["big"]), 32)
    assert big.shape == (32, 32, 3) and status == gp.STATUS_OK
    with pytest.raises(ValueError, match="not an image|corrupt"):
        gp.prepare_image(str(images["corrupt"]), 32)


def test_predict_files_per_image_errors(model, images):
    order = ["png", "corrupt", "big", "gray", "rgba", "empty"]
    preds = gp.predict_files(model, [str(images[k]) for k in order], NAMES, 32, batch_size=2)
    by = dict(zip(order, preds, strict=True))
    assert [p.path for p in preds] == [str(images[k]) for k in order]
    assert by["png"].label == "female" and by["png"].probability > 0.9
    assert by["big"].label == "male" and by["big"].probability > 0.9
    assert by["big"].prob_class1 == pytest.approx(1 - by["big"].probability)
    assert by["gray"].status == "ok" and by["rgba"].label is not None
    assert by["corrupt"].label is None and by["corrupt"].status.startswith("error: ")
    assert by["empty"].status == "error: empty: zero-byte file"
    for p in preds:
        line = gp.format_line(p)
        assert "\n" not in line and p.path in line


def test_expand_inputs(images, tmp_path):
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    (tmp_path / "in" / "sub").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "in" / "sub" / "x.PNG")
    (tmp_path / "empty_dir").mkdir()
    entries = gp.expand_inputs(
        [
            str(images["png"]),  # explicit file first; repeated by the folder below: kept once
            str(tmp_path / "in"),
            str(tmp_path / "in" / "*.jpg"),
            str(tmp_path / "nothing_*.png"),
            str(tmp_path / "missing.jpg"),
            str(tmp_path / "empty_dir"),
        ]
    )
    paths = [p for p, problem in entries if problem is None]
    assert paths[0] == str(images["png"]) and len(paths) == len(set(paths))
    assert str(tmp_path / "in" / "sub" / "x.PNG") in paths  # recursive, case-insensitive ext
    assert not any(p.endswith("notes.txt") for p in paths)  # folders: image files only
    problems = dict(e for e in entries if e[1] is not None)
    assert problems == {
        str(tmp_path / "nothing_*.png"): "error: pattern matches no files",
        str(tmp_path / "missing.jpg"): "error: not found",
        str(tmp_path / "empty_dir"): "error: no image files in folder",
    }


def test_split_positional():
    keep, pos = split_positional(
        ["model_path=m.keras", "a.jpg", "--config-name", "predict", "dir/", "no_face=skip", "--cfg", "job"]
    )
    assert pos == ["a.jpg", "dir/"]
    assert keep == ["model_path=m.keras", "--config-name", "predict", "no_face=skip", "--cfg", "job"]


def test_face_stage_finds_the_largest_face(tmp_path):
    im = draw_face_photo(size=(900, 500), center=(620, 250), r=100)
    small = draw_face_photo(size=(200, 200), center=(100, 100), r=40)
    im.paste(small, (60, 60))
    left, top, right, bottom = detect_largest(np.asarray(im))
    assert left < 620 < right and top < 250 < bottom and right - left > 150  # the big face
    path = tmp_path / "photo.jpg"
    im.save(path, quality=92)
    whole, _ = gp.prepare_image(str(path), 32)
    for mode in ("crop", "align"):
        crop, status = gp.prepare_image(str(path), 32, FaceSettings(mode, 0.5))
        assert status == gp.STATUS_FACE and crop.shape == (32, 32, 3)
        assert np.abs(crop.astype(int) - whole.astype(int)).mean() > 10  # it really cropped
        skin = np.array([225, 185, 155])
        centre = crop[12:20, 12:20].reshape(-1, 3).astype(int)
        assert (np.abs(centre - skin).sum(axis=1) < 90).mean() > 0.3  # the face fills the centre


def test_align_levels_a_tilted_face(tmp_path):
    """A face drawn level and the same face turned 12 degrees give nearly the same aligned view."""
    im = draw_face_photo(size=(400, 400), center=(200, 210), r=90)
    level, found = face_view(np.asarray(im), 48, FaceSettings("align", 0.5))
    tilted_im = im.rotate(12, resample=Image.BILINEAR, fillcolor=(70, 110, 150))
    tilted, found_tilted = face_view(np.asarray(tilted_im), 48, FaceSettings("align", 0.5))
    plain, _ = face_view(np.asarray(tilted_im), 48, FaceSettings("crop", 0.5))
    assert found and found_tilted
    diff = lambda a, b: np.abs(a.astype(int) - b.astype(int)).mean()  # noqa: E731
    assert diff(level, tilted) < diff(level, plain)  # alignment undid most of the turn


def test_face_stage_without_a_face(model, images):
    face = FaceSettings("align", 0.5)
    preds = gp.predict_files(model, [str(images["png"])], NAMES, 32, face=face)
    assert preds[0].status == gp.STATUS_WHOLE and preds[0].label == "female"
    preds = gp.predict_files(model, [str(images["png"])], NAMES, 32, face=face, no_face="skip")
    assert preds[0].status == gp.STATUS_NO_FACE and preds[0].label is None


def test_face_stage_without_dlib_is_a_clear_error(model, images, monkeypatch):
    import sys

    import gender.face as gface

    monkeypatch.setitem(sys.modules, "dlib", None)  # as if dlib were not installed
    monkeypatch.setattr(gface, "_local", type(gface._local)())
    with pytest.raises(UserError, match="pip install dlib-bin"):
        gp.predict_files(model, [str(images["png"])], NAMES, 32, face=FaceSettings("align"))


def test_safe_mode_refuses_lambda_layers(tmp_path):
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(x))
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    with pytest.raises(UserError, match="refusing to load .*Lambda"):
        inference.load_model(tmp_path / "lambda.keras")


def test_class_names_come_from_the_run(tmp_path, model_file):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "model.keras").write_bytes(model_file.read_bytes())
    (run / ".hydra" / "config.yaml").write_text("data:\n  classes:\n    man: [m]\n    woman: [w]\n")
    assert gp.class_names_for(run, None) == ["man", "woman"]
    assert gp.class_names_for(model_file, None) == gp.DEFAULT_CLASSES
    assert gp.class_names_for(model_file, ["a", "b"]) == ["a", "b"]
    with pytest.raises(UserError, match="exactly 2"):
        gp.class_names_for(model_file, ["a"])


def test_cli_positional_inputs(model_file, images, tmp_path):
    out_csv = tmp_path / "preds.csv"
    proc = run_cli(
        "gender.predict",
        f"model_path={model_file}",
        str(images["png"]),
        str(images["corrupt"]),
        str(images["gray"]),
        str(tmp_path / "missing.png"),
        f"output={out_csv}",
        f"hydra.run.dir={tmp_path / 'out'}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    corrupt = [ln for ln in lines if "corrupt.png" in ln]
    assert len(corrupt) == 1 and "error:" in corrupt[0]
    assert "2 of 4 inputs predicted" in proc.stdout
    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [
        str(images["png"]),
        str(images["corrupt"]),
        str(images["gray"]),
        str(tmp_path / "missing.png"),
    ]
    assert rows[0]["class"] == "female" and float(rows[0]["probability"]) > 0.9
    assert rows[1]["class"] == "" and rows[1]["status"].startswith("error: ")
    assert rows[3]["status"] == "error: not found"
    assert [line for line in proc.stderr.splitlines() if NOISE.search(line)] == []


def test_cli_without_inputs_is_a_user_error(model_file, tmp_path):
    proc = run_cli("gender.predict", f"model_path={model_file}", f"hydra.run.dir={tmp_path / 'out'}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no inputs")
