"""Model presets, optimizer and augmentation built from config: the objects, not just exit codes."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import compose_cfg

from gender.augmentation import build_augmentation
from gender.model import build_model
from gender.optimizer import build_optimizer


def test_seed_cnn_has_the_seed_parameter_count():
    cfg = compose_cfg("model=seed_cnn")
    assert build_model(cfg.model, 128).count_params() == 8_417_601


def test_seed_cnn_layers_match_the_seed():
    model = build_model(compose_cfg("model.dropout=0.25").model, 64)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "InputLayer",
        "Rescaling",
        "Conv2D",
        "BatchNormalization",
        "MaxPooling2D",
        "Conv2D",
        "BatchNormalization",
        "MaxPooling2D",
        "Flatten",
        "Dense",
        "BatchNormalization",
        "Dropout",
        "Dense",
        "BatchNormalization",
        "Dropout",
        "Dense",
    ]
    assert [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)] == [0.25] * 2
    assert model.layers[-1].activation.__name__ == "sigmoid"


def test_layer_widths_and_image_size_come_from_config():
    cfg = compose_cfg("model.filters=[8,16]", "model.dense_units=[32,16]")
    model = build_model(cfg.model, 48)
    assert model.input_shape == (None, 48, 48, 3)
    convs = [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    dense = [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert convs == [8, 16] and dense == [32, 16, 1]


def test_rescnn_is_small_and_size_independent():
    cfg = compose_cfg("model=rescnn")
    small, large = build_model(cfg.model, 64), build_model(cfg.model, 128)
    assert small.count_params() == large.count_params() < 1_500_000
    out = small.predict(np.zeros((2, 64, 64, 3), np.float32), verbose=0)
    assert out.shape == (2, 1)


@pytest.mark.parametrize(
    ("option", "cls", "lr"), [("adam", "Adam", 0.006), ("sgd", "SGD", 0.01), ("adamw", "AdamW", 0.001)]
)
def test_optimizer_options(option, cls, lr):
    opt = build_optimizer(compose_cfg(f"optimizer={option}").optimizer, steps_per_epoch=10, epochs=2)
    assert type(opt).__name__ == cls
    assert float(opt.learning_rate.numpy()) == pytest.approx(lr)


def test_optimizer_lr_override_and_cosine_schedule():
    opt = build_optimizer(compose_cfg("optimizer.lr=0.003").optimizer, 10, 2)
    assert float(opt.learning_rate.numpy()) == pytest.approx(0.003)
    cfg = compose_cfg("optimizer.lr=0.01", "optimizer.schedule=cosine")
    opt = build_optimizer(cfg.optimizer, steps_per_epoch=10, epochs=2)
    assert float(opt.learning_rate) == pytest.approx(0.01)
    opt.iterations.assign(10)
    assert 0.0 < float(opt.learning_rate) < 0.01
    opt.iterations.assign(20)
    assert float(opt.learning_rate) == pytest.approx(0.0, abs=1e-6)


def test_augmentation_seed_and_none():
    seed = build_augmentation(compose_cfg("augmentation=seed").augmentation)
    kinds = [type(layer).__name__ for layer in seed.layers]
    assert kinds == ["RandomFlip", "RandomRotation", "RandomBrightness"]
    assert seed.layers[1].factor == (-0.1, 0.1) or seed.layers[1].factor == 0.1
    assert build_augmentation(compose_cfg("augmentation=none").augmentation) is None
    tuned = build_augmentation(compose_cfg("augmentation.rotation=0.3").augmentation)
    assert tuned.layers[1].factor in ((-0.3, 0.3), 0.3)


def test_augmentation_inside_the_model_is_inactive_at_inference():
    cfg = compose_cfg("augmentation.placement=model")
    aug = build_augmentation(cfg.augmentation, seed=0)
    model = build_model(compose_cfg("model=rescnn").model, 32, augmentation=aug)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model(x, training=False), model(x, training=False))


def test_test_time_flip_model_averages_mirror_views_and_loads_in_safe_mode(tmp_path):
    from gender.inference import load_model
    from gender.model import with_test_time_flip

    net = build_model(compose_cfg("model=rescnn", "model.widths=[8]", "model.stem_filters=8").model, 32)
    wrapped = with_test_time_flip(net)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    expected = (net.predict(x, verbose=0) + net.predict(x[:, :, ::-1], verbose=0)) / 2
    wrapped.save(tmp_path / "tta.keras")
    loaded = load_model(tmp_path / "tta.keras")
    got = loaded.predict(x, verbose=0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.predict(x[:, :, ::-1], verbose=0), got, rtol=1e-5, atol=1e-6)
    assert not np.allclose(net.predict(x, verbose=0), net.predict(x[:, :, ::-1], verbose=0))


def test_stem_filters_list_stacks_strided_convs():
    cfg = compose_cfg("model=rescnn", "model.stem_filters=[8,16]", "model.widths=[16]")
    model = build_model(cfg.model, 64)
    stem = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][:2]
    assert [c.filters for c in stem] == [8, 16]
    pool = next(la for la in model.layers if isinstance(la, keras.layers.GlobalAveragePooling2D))
    assert tuple(pool.input.shape[1:3]) == (16, 16)  # 64 px halved by each of the two stem convs


def test_blocks_per_stage_per_stage_list_and_mismatch():
    from gender.errors import UserError

    adds = lambda m: sum(isinstance(la, keras.layers.Add) for la in m.layers)  # noqa: E731
    base = "model=rescnn", "model.widths=[8,16]"
    assert adds(build_model(compose_cfg(*base, "model.blocks_per_stage=[1,3]").model, 32)) == 4
    assert adds(build_model(compose_cfg(*base, "model.blocks_per_stage=2").model, 32)) == 4
    with pytest.raises(UserError, match="one per stage"):
        build_model(compose_cfg(*base, "model.blocks_per_stage=[1,2,3]").model, 32)
