"""data.face=descriptor: dlib's pretrained face descriptor as the model's input, cached once,
recorded with the run and computed again by evaluate and predict; the config refuses what cannot
apply to 128 numbers before any data is read."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import compose_cfg, make_images, recorded_run, run_cli, save_tiny_model
from helpers.faces import draw_face_photo
from omegaconf import OmegaConf
from PIL import Image

from gender import data as gdata
from gender.config import validate
from gender.ensembling import build_ensemble
from gender.errors import UserError
from gender.face import DESCRIPTOR_SIZE, FaceSettings, face_descriptor
from gender.inference import face_settings_for, load_model, model_image_size, model_inputs_for, predict_probs
from gender.io import read_json
from gender.prediction import predict_files
from gender.scoring import run_evaluation

DESCRIPTOR = FaceSettings.from_config({"face": "descriptor"})
# experiment=face_descriptor's stage: dlib's CNN detector where HOG finds no face
PRESET = FaceSettings.from_config({"face": "descriptor", "face_detector": "hog_then_cnn"})


def _faces_and_plain(root: Path, n: int) -> Path:
    """n drawn faces (the detector finds them) and n noise images (no face) per class."""
    make_images(root, {"man": n, "woman": n}, size=48)
    for c, cls in enumerate(("man", "woman")):
        for i in range(n):
            face = draw_face_photo(size=(200, 200), center=(100, 105), r=54 + 3 * i + c)
            face.save(root / cls / f"face{i}.jpg")
    return root


def test_settings_are_the_networks_own_chip_whatever_the_margin():
    told = FaceSettings.from_config({"face": "descriptor", "face_margin": 0.9})
    assert told == DESCRIPTOR and told.margin == 0.25 and told.describes
    assert DESCRIPTOR.input_shape(80) == (DESCRIPTOR_SIZE,)
    assert FaceSettings("align").input_shape(80) == (80, 80, 3)
    assert DESCRIPTOR.picture() == FaceSettings("align", 0.25)  # the chip the network described
    assert FaceSettings("crop").picture() == FaceSettings("crop")
    assert DESCRIPTOR.key() not in {FaceSettings("align", 0.25).key(), FaceSettings().key()}


def test_the_cache_holds_each_files_descriptor_computed_in_worker_processes(tmp_path):
    root = _faces_and_plain(tmp_path / "data", n=2)
    paths = sorted(str(p) for p in root.rglob("*.*"))
    (root / "man" / "broken.jpg").write_bytes(b"not an image")
    paths.append(str(root / "man" / "broken.jpg"))
    cache = gdata.build_cache(paths, 32, tmp_path / "cache", face=DESCRIPTOR, workers=2)
    assert cache.images.dtype == np.float32 and cache.images.shape == (len(paths), DESCRIPTOR_SIZE)
    assert cache.reasons[-1].startswith("not an image") and not cache.ok[-1]  # skipped, with its reason
    drawn = [i for i, p in enumerate(paths) if Path(p).name.startswith("face")]
    assert not cache.no_face[drawn].any() and cache.no_face[[i for i in range(8) if i not in drawn]].all()
    for i in range(len(paths) - 1):  # what the workers wrote is what this process computes
        rgb = np.asarray(Image.open(paths[i]).convert("RGB"))
        expected, found = face_descriptor(rgb, DESCRIPTOR)
        assert found == (i in drawn)
        np.testing.assert_allclose(cache.images[i], expected, atol=1e-5)
    assert np.linalg.norm(cache.images[drawn[0]] - cache.images[drawn[1]]) > 0.01  # two faces, two vectors
    aligned = gdata.build_cache(paths, 32, tmp_path / "cache", face=FaceSettings("align", 0.25))
    other_size = gdata.build_cache(paths, 64, tmp_path / "cache", face=DESCRIPTOR)
    assert aligned.directory != cache.directory  # pixels and descriptors never share a cache
    assert other_size.reused and other_size.directory == cache.directory  # image_size does not apply


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.face=descriptor"], "data.face=descriptor gives the model 128 numbers per face"),
        (["model=descriptor_mlp"], "model=descriptor_mlp takes face descriptors: set data.face=descriptor"),
        (["experiment=face_descriptor", "augmentation=robust"], "image augmentation does not apply"),
        (
            ["experiment=face_descriptor", "augmentation.mixup=0.2"],
            "augmentation.mixup=0.2: image augmentation",
        ),
        (["experiment=face_descriptor", "model.test_time_flip=true"], "model.test_time_flip=true mirrors"),
    ],
)
def test_what_cannot_apply_to_a_descriptor_fails_before_the_data_is_read(overrides, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(compose_cfg(*overrides))
    validate(compose_cfg("experiment=face_descriptor"))  # the preset itself is consistent


def test_a_descriptor_run_trains_and_evaluate_and_predict_compute_the_same_inputs(tmp_path):
    root = _faces_and_plain(tmp_path / "data", n=6)
    folder = ["data=folder", f"data.root={root}", "data.classes.male=[man]", "data.classes.female=[woman]"]
    split = ["data.split.train=0.5", "data.split.val=0.25", "data.split.test=0.25"]
    tiny = ["data.batch_size=8", "trainer.epochs=2", "trainer.verbose=0", "logger=none"]
    run_dir = tmp_path / "run"
    proc = run_cli(
        "gender.run",
        "experiment=face_descriptor",
        *folder,
        *split,
        *tiny,
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = read_json(run_dir / "metrics.json")
    model = load_model(run_dir)
    assert model.input_shape == (None, DESCRIPTOR_SIZE)
    assert face_settings_for(run_dir) == PRESET  # recorded with the run
    assert (run_dir / "plots" / "mistakes.png").is_file()  # the aligned faces behind the descriptors

    evaluated = run_evaluation(
        compose_cfg(f"model_path={run_dir}", "split=test", "logger=none", config_name="evaluate"),
        tmp_path / "eval",
    )
    assert evaluated["n"] == run["test"]["n"] and evaluated["accuracy"] == pytest.approx(
        run["test"]["accuracy"]
    )
    test_files = gdata.read_manifest(run_dir)["test"]
    plain = sum(1 for s in test_files if not Path(s.path).name.startswith("face"))
    assert evaluated["face"]["no_face_found"] == plain  # counted, each described whole

    files = sorted(str(p) for p in (root / "woman").iterdir())
    predicted = predict_files(model, files, ["male", "female"], 150, face=PRESET)
    cache = gdata.build_cache(files, 150, tmp_path / "cache2", face=PRESET, workers=1)
    expected = model.predict_on_batch(np.asarray(cache.images)).reshape(-1)
    np.testing.assert_allclose([p.prob_class1 for p in predicted], expected, atol=1e-5)

    bare = Path(shutil.copy(run_dir / "model.keras", tmp_path / "bare.keras"))  # nothing recorded beside it
    with pytest.raises(UserError, match="takes a face descriptor .* pass face=descriptor"):
        model_image_size(load_model(bare), None, face_settings_for(bare))
    assert model_image_size(load_model(bare), None, face_settings_for(bare, "descriptor")) == 150
    image_model = load_model(save_tiny_model(tmp_path / "image.keras"))
    with pytest.raises(UserError, match="the face stage is data.face=descriptor"):
        model_image_size(image_model, None, DESCRIPTOR)


def _descriptor_head(path: Path) -> Path:
    """sigmoid(w . descriptor) with fixed random weights: known probabilities, no training."""
    import keras

    inputs = keras.Input((DESCRIPTOR_SIZE,), name="descriptor")
    dense = keras.layers.Dense(1, activation="sigmoid")
    model = keras.Model(inputs, dense(inputs))
    weights = np.random.default_rng(0).normal(0, 8, (DESCRIPTOR_SIZE, 1))
    dense.set_weights([weights, np.zeros(1)])
    model.save(path)
    return path


def test_an_image_network_and_a_descriptor_head_average_as_one_model_with_two_inputs(tmp_path):
    root = _faces_and_plain(tmp_path / "data", n=3)
    image_run = recorded_run(
        tmp_path / "image",
        root,
        save_tiny_model(tmp_path / "i.keras"),
        "data.face=align",
        "data.face_margin=0.5",
    )
    head_run = recorded_run(
        tmp_path / "head", root, _descriptor_head(tmp_path / "d.keras"), "experiment=face_descriptor"
    )
    out = tmp_path / "both"
    proc = run_cli("gender.ensemble", f"members=[{image_run},{head_run}]", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    recorded = OmegaConf.load(out / ".hydra" / "config.yaml")
    assert [i.name for i in recorded.ensemble.inputs] == ["image", "descriptor"]
    assert recorded.data.face == "align"

    files = sorted(str(p) for p in root.rglob("*.*"))
    pixels = np.stack([gdata.load_image(f, 32, face=FaceSettings("align", 0.5)) for f in files])
    vectors = np.stack([gdata.load_face(f, 150, face=PRESET)[0] for f in files])
    expected = (
        predict_probs(load_model(image_run), pixels) + predict_probs(load_model(head_run), vectors)
    ) / 2
    predicted = predict_files(
        load_model(out),
        files,
        ["male", "female"],
        32,
        inputs=model_inputs_for(load_model(out), out, compose_cfg(config_name="predict")),
    )
    np.testing.assert_allclose([p.prob_class1 for p in predicted], expected, atol=1e-5)

    evaluated = run_evaluation(
        compose_cfg(f"model_path={out}", "split=test", "logger=none", config_name="evaluate"),
        tmp_path / "eval",
    )
    test = {s.path for s in gdata.read_manifest(out)["test"]}
    right = [
        (p >= 0.5) == Path(f).parent.name.startswith("w")
        for f, p in zip(files, expected, strict=True)
        if f in test
    ]
    assert evaluated["n"] == len(test) and evaluated["accuracy"] == pytest.approx(np.mean(right))
    with pytest.raises(UserError, match="face= applies to a model with one input"):
        run_evaluation(
            compose_cfg(f"model_path={out}", "face=align", "logger=none", config_name="evaluate"),
            tmp_path / "e2",
        )

    other = recorded_run(tmp_path / "other", root, save_tiny_model(tmp_path / "o.keras"), "data.face=crop")
    with pytest.raises(UserError, match="differ in the face stage of their image members"):
        build_ensemble([str(image_run), str(head_run), str(other)], tmp_path / "none")
