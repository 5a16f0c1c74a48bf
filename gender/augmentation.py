"""Training-time augmentation as Keras preprocessing layers, built from ``cfg.augmentation``.

The same layers run either in parallel ``tf.data`` calls (``augmentation.placement=pipeline``, best
on a CPU where they overlap the training step) or inside the model (``placement=model``, where they
run on the accelerator and are inactive at inference). They work on pixels in [0, 255].
"""

from __future__ import annotations

from typing import Any


def build_augmentation(aug_cfg: Any, seed: int | None = None):
    """A ``keras.Sequential`` of the enabled layers, or None when nothing is enabled."""
    import keras

    layers: list = []
    c = aug_cfg
    if c.get("flip"):
        layers.append(keras.layers.RandomFlip(c.flip, seed=seed))
    if c.get("rotation"):
        layers.append(keras.layers.RandomRotation(c.rotation, fill_mode=c.get("fill_mode", "reflect"),
                                                  seed=seed))
    if c.get("zoom"):
        layers.append(keras.layers.RandomZoom(c.zoom, fill_mode=c.get("fill_mode", "reflect"),
                                              seed=seed))
    if c.get("translation"):
        layers.append(keras.layers.RandomTranslation(c.translation, c.translation,
                                                     fill_mode=c.get("fill_mode", "reflect"),
                                                     seed=seed))
    if c.get("brightness"):
        layers.append(keras.layers.RandomBrightness(c.brightness, value_range=(0, 255), seed=seed))
    if c.get("contrast"):
        layers.append(keras.layers.RandomContrast(c.contrast, value_range=(0, 255), seed=seed))
    if c.get("saturation"):
        layers.append(keras.layers.RandomSaturation(c.saturation, value_range=(0, 255), seed=seed))
    if c.get("hue"):
        layers.append(keras.layers.RandomHue(c.hue, value_range=(0, 255), seed=seed))
    if c.get("grayscale"):
        layers.append(keras.layers.RandomGrayscale(factor=c.grayscale, seed=seed))
    if c.get("blur"):
        layers.append(keras.layers.RandomGaussianBlur(c.blur, value_range=(0, 255), seed=seed))
    if not layers:
        return None
    return keras.Sequential(layers, name="augmentation")

