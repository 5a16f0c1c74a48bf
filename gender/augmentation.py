"""Training-time augmentation as Keras preprocessing layers, built from ``cfg.augmentation``.

The same layers run either in parallel ``tf.data`` calls (``augmentation.placement=pipeline``, best
on a CPU where they overlap the training step) or inside the model (``placement=model``, where they
run on the accelerator and are inactive at inference). They work on pixels in [0, 255].

Every factor means the same whichever implementation runs: ``contrast`` and ``saturation`` scale
by a factor drawn from [1 - f, 1 + f], ``brightness`` shifts by up to f * 255. With
``augmentation.fused=true`` the geometric options (flip, rotation, zoom, translation) resample each
image once (``RandomAffine``) and the colour options run in one elementwise pass (``RandomColor``):
2-3.5x the throughput of one Keras layer per option, which matters on a CPU where augmentation
shares the cores with the training step.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from gender.errors import UserError


@keras.saving.register_keras_serializable(package="gender")
class RandomAffine(keras.layers.Layer):
    """Flip, rotation, zoom and translation as one projective transform per image: one resampling
    (one interpolation blur) instead of one per Keras layer. Factors as in the Keras layers:
    ``rotation`` a fraction of a full turn, ``zoom`` and ``translation`` fractions of the size."""

    def __init__(
        self,
        flip: str | None = None,
        rotation: float = 0.0,
        zoom: float = 0.0,
        translation: float = 0.0,
        fill_mode: str = "reflect",
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.flip, self.rotation, self.zoom, self.translation = flip, rotation, zoom, translation
        self.fill_mode, self.seed = fill_mode, seed
        self.generator = keras.random.SeedGenerator(seed)

    def _uniform(self, n, limit: float):
        return keras.random.uniform((n,), -limit, limit, seed=self.generator)

    def _mirror(self, n, axis: str):
        if self.flip not in (axis, "horizontal_and_vertical"):
            return ops.ones((n,))
        return ops.where(keras.random.uniform((n,), seed=self.generator) < 0.5, -1.0, 1.0)

    def call(self, images, training=True):
        if not training:
            return images
        n = ops.shape(images)[0]
        h = ops.cast(ops.shape(images)[1], "float32")
        w = ops.cast(ops.shape(images)[2], "float32")
        angle = self._uniform(n, self.rotation) * 2 * math.pi
        scale = 1.0 + self._uniform(n, self.zoom)  # > 1 samples a larger area: zooms out
        fx, fy = self._mirror(n, "horizontal"), self._mirror(n, "vertical")
        cos, sin = ops.cos(angle), ops.sin(angle)
        # output pixel -> input pixel: centre + rotation . diag(scale * mirror) . (p - centre) + shift
        a0, a1 = scale * fx * cos, -scale * fy * sin
        b0, b1 = scale * fx * sin, scale * fy * cos
        cx, cy = (w - 1) / 2, (h - 1) / 2
        a2 = cx - a0 * cx - a1 * cy + self._uniform(n, self.translation) * w
        b2 = cy - b0 * cx - b1 * cy + self._uniform(n, self.translation) * h
        zeros = ops.zeros((n,))
        transform = ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
        out = ops.image.affine_transform(
            ops.cast(images, "float32"), transform, interpolation="bilinear", fill_mode=self.fill_mode
        )
        return ops.cast(out, images.dtype)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "flip": self.flip,
            "rotation": self.rotation,
            "zoom": self.zoom,
            "translation": self.translation,
            "fill_mode": self.fill_mode,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="gender")
class RandomColor(keras.layers.Layer):
    """Brightness, contrast, saturation and grayscale in one elementwise pass on [0, 255] pixels.

    Saturation blends each pixel with its luminance (factor 0 is grayscale, which is how the
    ``grayscale`` share is drawn), contrast scales around the image's mean luminance.
    """

    def __init__(
        self,
        brightness: float = 0.0,
        contrast: float = 0.0,
        saturation: float = 0.0,
        grayscale: float = 0.0,
        seed: int | None = None,
        white_balance: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.brightness, self.contrast = brightness, contrast
        self.saturation, self.grayscale, self.seed = saturation, grayscale, seed
        self.white_balance = white_balance
        self.generator = keras.random.SeedGenerator(seed)

    def _factor(self, n, spread: float):
        return 1.0 + keras.random.uniform((n, 1, 1, 1), -spread, spread, seed=self.generator)

    def call(self, images, training=True):
        if not training:
            return images
        x = ops.cast(images, "float32")
        n = ops.shape(x)[0]
        if self.white_balance:  # another camera's colour cast: one gain per channel
            x = x * (
                1.0
                + keras.random.uniform(
                    (n, 1, 1, 3), -self.white_balance, self.white_balance, seed=self.generator
                )
            )
        luma = ops.sum(x * ops.convert_to_tensor([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
        if self.saturation or self.grayscale:
            saturation = self._factor(n, self.saturation)
            if self.grayscale:
                gray = keras.random.uniform((n, 1, 1, 1), seed=self.generator) < self.grayscale
                saturation = ops.where(gray, 0.0, saturation)
            x = luma + saturation * (x - luma)
        if self.contrast:
            mean = ops.mean(luma, axis=(1, 2, 3), keepdims=True)
            x = mean + self._factor(n, self.contrast) * (x - mean)
        if self.brightness:
            x = x + 255.0 * keras.random.uniform(
                (n, 1, 1, 1), -self.brightness, self.brightness, seed=self.generator
            )
        return ops.cast(ops.clip(x, 0.0, 255.0), images.dtype)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "brightness": self.brightness,
            "contrast": self.contrast,
            "saturation": self.saturation,
            "grayscale": self.grayscale,
            "seed": self.seed,
            "white_balance": self.white_balance,
        }


class _ShareOfImages(keras.layers.Layer):
    """Degrades each image of a batch with probability ``share`` (``degrade`` does the whole
    batch at once); what RandomResolution and RandomJpeg have in common."""

    def __init__(self, share: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.share, self.seed = share, seed
        self.generator = keras.random.SeedGenerator(seed)

    def degrade(self, x):  # float32 pixels in [0, 255] -> the same shape, degraded
        raise NotImplementedError

    def call(self, images, training=True):
        if not training or not self.share:
            return images
        x = ops.cast(images, "float32")
        degraded = self.degrade(x)  # drawn before the pick, the order earlier runs drew in
        pick = keras.random.uniform((ops.shape(x)[0], 1, 1, 1), seed=self.generator) < self.share
        return ops.cast(ops.where(pick, degraded, x), images.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "share": self.share, "seed": self.seed}


@keras.saving.register_keras_serializable(package="gender")
class RandomResolution(_ShareOfImages):
    """A share of the images downscaled to a random fraction of their size and scaled back up:
    the detail lost by a low-resolution camera, a small face in a large photo or an upscaled crop.

    Keras has no such layer. One scale is drawn per batch (a batch resizes as one tensor), and
    each image of the batch is degraded with probability ``share``.
    """

    def __init__(self, share: float = 0.0, min_scale: float = 0.35, seed: int | None = None, **kwargs):
        super().__init__(share, seed, **kwargs)
        self.min_scale = min_scale

    def degrade(self, x):
        import tensorflow as tf  # a size drawn at run time: keras.ops.image.resize wants static sizes

        size = tf.shape(x)[1:3]
        scale = tf.random.stateless_uniform((), self.generator.next(), self.min_scale, 1.0)
        small = tf.maximum(8, tf.cast(tf.cast(size, tf.float32) * scale, tf.int32))
        return tf.image.resize(tf.image.resize(x, small, method="area"), size, method="bilinear")

    def get_config(self) -> dict:
        return {**super().get_config(), "min_scale": self.min_scale}


@keras.saving.register_keras_serializable(package="gender")
class RandomJpeg(_ShareOfImages):
    """A share of the images re-encoded as JPEG at a quality drawn from [min_quality, max_quality]:
    the blocks and ringing of another camera's compression or a photo saved again after download.

    Keras has no such layer, and ``tf.image.adjust_jpeg_quality`` takes one image at a time: one
    quality is drawn per batch, each image of the batch is re-encoded with probability ``share``.
    """

    def __init__(
        self,
        share: float = 0.0,
        min_quality: int = 30,
        max_quality: int = 90,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(share, seed, **kwargs)
        self.min_quality, self.max_quality = min_quality, max_quality

    def degrade(self, x):
        import tensorflow as tf  # JPEG coding has no keras.ops counterpart

        quality = tf.random.stateless_uniform(
            (), self.generator.next(), self.min_quality, self.max_quality + 1, dtype=tf.int32
        )

        def recode(image):
            return tf.image.adjust_jpeg_quality(tf.clip_by_value(image, 0.0, 255.0) / 255.0, quality) * 255.0

        return tf.reshape(tf.map_fn(recode, x, fn_output_signature=tf.float32), tf.shape(x))

    def get_config(self) -> dict:
        return {**super().get_config(), "min_quality": self.min_quality, "max_quality": self.max_quality}


def build_augmentation(aug_cfg: Any, seed: int | None = None):
    """A ``keras.Sequential`` of the enabled layers, or None when nothing is enabled."""
    c = aug_cfg
    fill = c.get("fill_mode", "reflect")
    layers: list = []
    if c.get("fused"):
        if c.get("flip") or c.get("rotation") or c.get("zoom") or c.get("translation"):
            layers.append(
                RandomAffine(
                    c.get("flip"),
                    c.get("rotation", 0.0),
                    c.get("zoom", 0.0),
                    c.get("translation", 0.0),
                    fill_mode=fill,
                    seed=seed,
                )
            )
        if (
            c.get("brightness")
            or c.get("contrast")
            or c.get("saturation")
            or c.get("grayscale")
            or c.get("white_balance")
        ):
            layers.append(
                RandomColor(
                    c.get("brightness", 0.0),
                    c.get("contrast", 0.0),
                    c.get("saturation", 0.0),
                    c.get("grayscale", 0.0),
                    seed=seed,
                    white_balance=c.get("white_balance", 0.0),
                )
            )
    else:
        if c.get("white_balance"):
            raise UserError("augmentation.white_balance needs augmentation.fused=true")
        layers += _keras_layers(c, fill, seed)
    if c.get("low_resolution"):
        layers.append(RandomResolution(c.low_resolution, c.get("low_resolution_min_scale", 0.35), seed=seed))
    if c.get("jpeg"):
        low, high = (int(q) for q in c.get("jpeg_quality", (30, 90)))
        layers.append(RandomJpeg(c.jpeg, low, high, seed=seed))
    if c.get("hue"):
        layers.append(keras.layers.RandomHue(c.hue, value_range=(0, 255), seed=seed))
    if c.get("blur"):
        layers.append(keras.layers.RandomGaussianBlur(c.blur, value_range=(0, 255), seed=seed))
    if c.get("erasing"):  # last, so no later layer moves or recolours the noise patch
        share, (low, high) = float(c.erasing), (float(a) for a in c.get("erasing_area", (0.02, 0.33)))
        layers.append(
            keras.layers.RandomErasing((share, share), scale=(low, high), value_range=(0, 255), seed=seed)
        )
    if not layers:
        return None
    return keras.Sequential(layers, name="augmentation")


def build_mixup(aug_cfg: Any, seed: int | None = None):
    """Keras' ``MixUp`` for ``augmentation.mixup`` (its alpha), or None when it is 0.

    It blends whole batches (images with their labels), so it runs in the input pipeline after the
    per-image layers, never inside the model."""
    alpha = float(aug_cfg.get("mixup") or 0.0)
    # float32 whatever the precision policy: Keras' MixUp draws its weights in float32 and would
    # fail to multiply them into bfloat16 images.
    return keras.layers.MixUp(alpha=alpha, seed=seed, dtype="float32") if alpha else None


def _keras_layers(c: Any, fill: str, seed: int | None) -> list:
    """One Keras layer per option (what the seed used), with factors mapped to our meaning."""
    L = keras.layers
    layers: list = []
    if c.get("flip"):
        layers.append(L.RandomFlip(c.flip, seed=seed))
    if c.get("rotation"):
        layers.append(L.RandomRotation(c.rotation, fill_mode=fill, seed=seed))
    if c.get("zoom"):
        layers.append(L.RandomZoom(c.zoom, fill_mode=fill, seed=seed))
    if c.get("translation"):
        layers.append(L.RandomTranslation(c.translation, c.translation, fill_mode=fill, seed=seed))
    if c.get("brightness"):
        layers.append(L.RandomBrightness(c.brightness, value_range=(0, 255), seed=seed))
    if c.get("contrast"):  # a single float only raises contrast ([1, 1 + f]); a pair spans both ways
        layers.append(L.RandomContrast((c.contrast, c.contrast), value_range=(0, 255), seed=seed))
    if c.get("saturation"):
        # Keras draws k in its factor range and scales saturation by k / (1 - k) (0.5 is a no-op);
        # a single float f draws k in [-f, f], which turns almost every image gray.
        s = float(c.saturation)
        layers.append(
            L.RandomSaturation(((1 - s) / (2 - s), (1 + s) / (2 + s)), value_range=(0, 255), seed=seed)
        )
    if c.get("grayscale"):
        layers.append(L.RandomGrayscale(factor=c.grayscale, seed=seed))
    return layers
