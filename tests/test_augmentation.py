"""Augmentation: both implementations give the factors the same meaning; the fused layers are exact
where they should be, reproducible, and load in safe mode inside a saved model."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import compose_cfg

from gender.augmentation import RandomAffine, RandomColor, RandomJpeg, RandomResolution, build_augmentation
from gender.model import build_model


def _images(n: int = 64, size: int = 24) -> np.ndarray:
    """Moderately coloured images with structure (room to saturate): random colours on a gradient."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0.3, 1.0, size, dtype="float32")[None, :, None, None]
    colours = rng.uniform(80, 180, (n, 1, 1, 3)).astype("float32")
    return np.clip(colours * ramp + rng.uniform(-20, 20, (n, size, size, 3)), 0, 255).astype("float32")


def _saturation(x: np.ndarray) -> np.ndarray:
    return tf.image.rgb_to_hsv(np.clip(x, 0, 255) / 255.0)[..., 1].numpy().mean(axis=(1, 2))


@pytest.mark.parametrize("fused", [False, True])
def test_colour_factors_span_both_ways_in_both_implementations(fused):
    # Keras' RandomSaturation(0.3) would draw a factor below 0.5 (its no-op) for every image and
    # turn the batch nearly gray; RandomContrast(0.2) would only ever raise contrast.
    x = _images()
    for option, measure in (("saturation", _saturation), ("contrast", lambda a: a.std(axis=(1, 2, 3)))):
        aug = build_augmentation(
            compose_cfg(
                "augmentation=none", f"augmentation.{option}=0.3", f"augmentation.fused={fused}"
            ).augmentation,
            seed=1,
        )
        ratio = measure(aug(x, training=True).numpy()) / measure(x)
        assert ratio.min() < 0.9 and ratio.max() > 1.1, (option, ratio.min(), ratio.max())
        assert 0.65 < ratio.min() and ratio.max() < 1.35, (option, ratio.min(), ratio.max())
        assert abs(np.median(ratio) - 1) < 0.1, (option, np.median(ratio))


def test_fused_robust_is_three_layers_and_keras_path_one_per_option():
    fused = build_augmentation(compose_cfg("augmentation=robust").augmentation)
    assert [type(layer).__name__ for layer in fused.layers] == [
        "RandomAffine",
        "RandomColor",
        "RandomGaussianBlur",
    ]
    per_option = build_augmentation(
        compose_cfg("augmentation=robust", "augmentation.fused=false").augmentation
    )
    assert len(per_option.layers) == 9


def test_affine_identity_and_flip_are_exact():
    x = _images(16)
    np.testing.assert_allclose(RandomAffine()(x, training=True), x, atol=1e-3)
    flipped = RandomAffine("horizontal", seed=3)(x, training=True).numpy()
    same = np.all(np.isclose(flipped, x, atol=1e-3), axis=(1, 2, 3))
    mirror = np.all(np.isclose(flipped, x[:, :, ::-1], atol=1e-3), axis=(1, 2, 3))
    assert np.all(same | mirror) and same.any() and mirror.any()


def test_affine_moves_pixels_and_keeps_the_range():
    x = _images(16)
    out = RandomAffine(None, rotation=0.05, zoom=0.15, translation=0.08, seed=0)(x, training=True)
    out = out.numpy()
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 255
    assert np.abs(out - x).mean(axis=(1, 2, 3)).min() > 0.5  # every image moved


def test_grayscale_share_and_inference_is_identity():
    x = _images(256)
    layer = RandomColor(grayscale=0.5, seed=0)
    out = layer(x, training=True).numpy()
    gray = np.all(np.abs(out - out[..., :1]) < 1e-3, axis=(1, 2, 3))
    assert 0.3 < gray.mean() < 0.7
    np.testing.assert_array_equal(layer(x, training=False), x)


def test_same_seed_same_draws():
    x = _images(8)
    cfg = compose_cfg("augmentation=robust").augmentation
    a, b = build_augmentation(cfg, seed=5), build_augmentation(cfg, seed=5)
    np.testing.assert_allclose(a(x, training=True), b(x, training=True))


def test_fused_augmentation_inside_a_saved_model_loads_in_safe_mode(tmp_path):
    from gender.inference import load_model

    aug = build_augmentation(
        compose_cfg(
            "augmentation=cross_source", "augmentation.placement=model", "augmentation.jpeg=0.2"
        ).augmentation,
        seed=0,
    )
    net = build_model(
        compose_cfg("model=rescnn", "model.widths=[8]", "model.stem_filters=8").model, 24, augmentation=aug
    )
    x = _images(4)
    net.save(tmp_path / "aug.keras")
    loaded = load_model(tmp_path / "aug.keras")
    assert isinstance(loaded, keras.Model)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), net.predict(x, verbose=0), atol=1e-5)


def test_white_balance_scales_each_channel_on_its_own():
    x = np.full((64, 8, 8, 3), 120.0, dtype="float32")
    out = RandomColor(white_balance=0.1, seed=3)(x, training=True).numpy()
    gains = out[:, 0, 0, :] / 120.0
    assert 0.89 < gains.min() and gains.max() < 1.11  # [1 - f, 1 + f]
    assert (gains.max(axis=1) - gains.min(axis=1)).mean() > 0.03  # channels differ: a colour cast
    assert np.allclose(RandomColor(white_balance=0.1)(x, training=False), x)


def test_low_resolution_loses_detail_in_a_share_of_the_images():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (200, 32, 32, 3)).astype("float32")  # all detail, no smooth parts
    layer = RandomResolution(share=0.5, min_scale=0.35, seed=2)
    out = layer(x, training=True).numpy()
    changed = np.abs(out - x).mean(axis=(1, 2, 3)) > 1
    assert 0.35 < changed.mean() < 0.65  # about the share
    detail = lambda a: np.abs(np.diff(a, axis=2)).mean(axis=(1, 2, 3))  # noqa: E731
    assert (detail(out[changed]) < 0.8 * detail(x[changed])).all()  # smoother: detail was lost
    assert out.shape == x.shape and np.array_equal(layer(x, training=False), x)


def test_jpeg_recompression_adds_blocking_to_a_share_of_the_images():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (64, 32, 32, 3)).astype("float32")  # noise: JPEG cannot keep it
    layer = RandomJpeg(share=0.5, min_quality=10, max_quality=20, seed=4)
    out = layer(x, training=True).numpy()
    error = np.abs(out - x).mean(axis=(1, 2, 3))
    changed = error > 5
    assert 0.3 < changed.mean() < 0.7 and (error[~changed] == 0).all()  # about the share; the rest untouched
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 255
    assert np.array_equal(layer(x, training=False), x)
    gentle = RandomJpeg(share=1.0, min_quality=95, max_quality=95, seed=4)(x, training=True).numpy()
    assert np.abs(gentle - x).mean() < error[changed].mean()  # a higher quality keeps more


def test_jpeg_option_builds_the_layer_and_bad_values_are_one_line():
    from gender.config import validate
    from gender.errors import UserError

    cfg = compose_cfg("augmentation=robust", "augmentation.jpeg=0.3", "augmentation.jpeg_quality=[40,80]")
    validate(cfg)
    layers = build_augmentation(cfg.augmentation, seed=1).layers
    jpeg = [layer for layer in layers if isinstance(layer, RandomJpeg)]
    assert [(j.share, j.min_quality, j.max_quality) for j in jpeg] == [(0.3, 40, 80)]
    for bad, message in (
        ("augmentation.jpeg=1.5", "in \\[0, 1\\]"),
        ("augmentation.jpeg_quality=[90,40]", "low <= high"),
    ):
        with pytest.raises(UserError, match=message):
            validate(compose_cfg(bad))


def test_erasing_replaces_one_rectangle_in_a_share_of_the_images_and_bad_values_are_one_line():
    from gender.config import validate
    from gender.errors import UserError

    cfg = compose_cfg(
        "augmentation=robust", "augmentation.erasing=0.5", "augmentation.erasing_area=[0.1,0.2]"
    )
    validate(cfg)
    layer = build_augmentation(cfg.augmentation, seed=5).layers[-1]  # last: nothing moves its patch
    assert isinstance(layer, keras.layers.RandomErasing)
    x = np.full((200, 32, 32, 3), 100.0, dtype="float32")
    out = layer(x, training=True).numpy()
    erased = out != 100
    share = erased.any(axis=(1, 2, 3))
    assert 0.35 < share.mean() < 0.65  # about the share; the others untouched
    area = erased[share].mean(axis=(1, 2, 3))
    assert 0.05 < area.min() and area.max() < 0.3  # about the area range, once per image
    for i in np.flatnonzero(share)[:10]:  # one rectangle: its bounding box is all erased
        rows, cols = np.flatnonzero(erased[i].any(axis=(1, 2))), np.flatnonzero(erased[i].any(axis=(0, 2)))
        box = erased[i, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        assert box.mean() > 0.99 and out[i][erased[i]].std() > 30  # filled with noise, not a constant
    assert np.array_equal(layer(x, training=False), x)
    for bad, message in (
        ("augmentation.erasing=1.5", "in \\[0, 1\\]"),
        ("augmentation.erasing_area=[0.5,0.2]", "low <= high"),
    ):
        with pytest.raises(UserError, match=message):
            validate(compose_cfg(bad))


def test_mixup_blends_images_labels_and_loss_weights_with_the_same_draws():
    from gender.augmentation import build_mixup
    from gender.config import validate
    from gender.data import with_augmentation
    from gender.errors import UserError
    from gender.model import hard_label_accuracy

    assert build_mixup(compose_cfg("augmentation=robust").augmentation) is None
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # trainer.mixed_precision=auto on this CPU
    try:
        mixup = build_mixup(compose_cfg("augmentation.mixup=0.4").augmentation, seed=3)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # Image i is the constant i; its label i/7 and its loss weight 1 + i: one blend of (i, j) maps
    # each onto the others, so any mismatch in weight or partner shows.
    n = 8
    x = np.broadcast_to(np.arange(n, dtype="float32")[:, None, None, None], (n, 4, 4, 3)).copy()
    y, w = np.arange(n, dtype="float32") / (n - 1), 1 + np.arange(n, dtype="float32")
    ds = tf.data.Dataset.from_tensors((x, y, w))
    for out_x, out_y, out_w in with_augmentation(ds, None, mixup=mixup).repeat(3):
        level = out_x.numpy().mean(axis=(1, 2, 3))
        assert np.allclose(out_x.numpy().std(axis=(1, 2, 3)), 0, atol=1e-4)
        np.testing.assert_allclose(out_y.numpy() * (n - 1), level, atol=1e-3)
        np.testing.assert_allclose(out_w.numpy() - 1, level, atol=1e-3)
        assert not np.allclose(level, np.round(level), atol=1e-3)  # something was blended
    only_labels = with_augmentation(tf.data.Dataset.from_tensors((x, y)), None, mixup=mixup)
    assert len(next(iter(only_labels))) == 2
    right = hard_label_accuracy(tf.constant([0.7, 0.2, 1.0, 0.0]), tf.constant([[0.9], [0.6], [0.4], [0.1]]))
    assert right.numpy().tolist() == [1.0, 0.0, 0.0, 1.0]
    with pytest.raises(UserError, match="augmentation.mixup=-0.2 is invalid"):
        validate(compose_cfg("augmentation.mixup=-0.2"))
