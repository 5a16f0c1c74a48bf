"""Model presets built from ``cfg.model``; image models take raw RGB pixels in [0, 255].

Rescaling lives inside the model (it has no weights), so a saved ``model.keras`` is self-contained:
evaluation and prediction feed it decoded pixels without knowing the training recipe. The one
model for ``data.face=descriptor`` (``descriptor_mlp``) takes the face's 128 descriptor numbers.
"""

from __future__ import annotations

from typing import Any

import keras

from gender.config import VECTOR_MODELS
from gender.errors import UserError


@keras.saving.register_keras_serializable(package="gender")
class MirrorImage(keras.layers.Layer):
    """Left-right mirror of an NHWC batch; a named layer (not a Lambda) so safe mode loads it."""

    def call(self, images):
        return keras.ops.flip(images, axis=2)


@keras.saving.register_keras_serializable(package="gender")
def hard_label_accuracy(y_true, y_pred):
    """Binary accuracy against each label rounded to its class: Keras' own for 0/1 labels, and the
    share right for the dominant image when mixup blends labels (Keras' compares them exactly)."""
    right = keras.ops.equal(keras.ops.reshape(y_true, (-1,)) > 0.5, keras.ops.reshape(y_pred, (-1,)) > 0.5)
    return keras.ops.cast(right, "float32")


def with_test_time_flip(model):
    """The same network predicting the mean of the image's and its mirror image's probability.

    Faces are left-right symmetric in meaning, so averaging the two views cancels part of the
    error for free at prediction time. The wrapper is what gets saved, so evaluate, predict and
    anyone loading ``model.keras`` get the same predictions (import ``gender.model`` first, which
    registers the mirror layer).
    """
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    views = [model(inputs), model(MirrorImage(name="mirror")(inputs))]
    prob = keras.layers.Average(name="prob_mean_of_mirrors", dtype="float32")(views)
    return keras.Model(inputs, prob, name=f"{model.name}_flip_average")


def build_model(
    model_cfg: Any, input_shape: int | tuple[int, ...], augmentation=None, dtype_policy: str | None = None
):
    """Dispatch on ``model.name``; ``input_shape`` is an image side (square RGB) or the shape the
    face stage gives (``FaceSettings.input_shape``); ``augmentation`` (a Keras layer) is
    prepended when given."""
    builders = {"seed_cnn": _seed_cnn, "rescnn": _rescnn, "descriptor_mlp": _descriptor_mlp}
    if model_cfg.name not in builders:
        raise UserError(f"model.name={model_cfg.name} is unknown; allowed: {', '.join(builders)}")
    shape = (input_shape, input_shape, 3) if isinstance(input_shape, int) else tuple(input_shape)
    vectors = len(shape) == 1
    if vectors != (model_cfg.name in VECTOR_MODELS):
        kind = "a face descriptor" if vectors else "an image"
        raise UserError(f"model={model_cfg.name} does not take {kind} input (see data.face=descriptor)")
    inputs = keras.Input(shape=shape, name="descriptor" if vectors else "image")
    x = inputs
    if augmentation is not None:
        x = augmentation(x)
    if not vectors:
        x = keras.layers.Rescaling(1.0 / 255, name="rescale")(x)
    x = builders[model_cfg.name](model_cfg, x)
    # The output layer stays float32 under mixed precision: a float16 sigmoid saturates.
    outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="prob")(x)
    return keras.Model(inputs, outputs, name=model_cfg.name)


def _seed_cnn(c: Any, x):
    """The seed architecture: (Conv-BN-MaxPool) x2, Flatten, (Dense-BN-Dropout) x2."""
    from keras import layers

    for f in c.filters:
        x = layers.Conv2D(f, c.kernel_size, padding="same", activation="relu")(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    for units in c.dense_units:
        x = layers.Dense(units, activation="relu")(x)
        x = layers.BatchNormalization()(x)
        x = layers.Dropout(c.dropout)(x)
    return x


def _rescnn(c: Any, x):
    """A compact residual CNN: a strided stem, residual stages, global average pooling.

    Global pooling instead of Flatten keeps the parameter count small and independent of the
    image size; ``separable`` swaps in depthwise-separable convolutions for speed.
    """
    from keras import layers, regularizers

    reg = regularizers.L2(c.weight_decay) if c.get("weight_decay") else None
    conv = layers.SeparableConv2D if c.get("separable") else layers.Conv2D

    def bn_relu(y):
        y = layers.BatchNormalization()(y)
        return layers.Activation("relu")(y)

    # A list of stem filters stacks strided convs: higher input resolution at the same stage cost.
    stem = [c.stem_filters] if isinstance(c.stem_filters, int) else list(c.stem_filters)
    for filters in stem:
        x = layers.Conv2D(
            int(filters),
            3,
            strides=c.get("stem_stride", 2),
            padding="same",
            use_bias=False,
            kernel_regularizer=reg,
        )(x)
        x = bn_relu(x)
    blocks = c.blocks_per_stage
    blocks = [blocks] * len(c.widths) if isinstance(blocks, int) else list(blocks)
    if len(blocks) != len(c.widths):
        raise UserError(
            f"model.blocks_per_stage={blocks} must be one integer or one per stage "
            f"of model.widths={list(c.widths)}"
        )
    for stage, (width, n_blocks) in enumerate(zip(c.widths, blocks, strict=True)):
        for block in range(int(n_blocks)):
            stride = 2 if block == 0 and stage > 0 else 1
            shortcut = x
            y = conv(width, 3, strides=stride, padding="same", use_bias=False)(x)
            y = bn_relu(y)
            y = conv(width, 3, padding="same", use_bias=False)(y)
            y = layers.BatchNormalization()(y)
            if stride != 1 or shortcut.shape[-1] != width:
                shortcut = layers.Conv2D(width, 1, strides=stride, use_bias=False, kernel_regularizer=reg)(
                    shortcut
                )
                shortcut = layers.BatchNormalization()(shortcut)
            x = layers.Activation("relu")(layers.Add()([y, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    if c.dropout:
        x = layers.Dropout(c.dropout)(x)
    return x


def _descriptor_mlp(c: Any, x):
    """A small head on dlib's 128-d face descriptor: standardised by batch statistics (the
    descriptor's components are small, about +-0.2), then (Dense-Dropout) per hidden layer."""
    from keras import layers, regularizers

    reg = regularizers.L2(c.weight_decay) if c.get("weight_decay") else None
    x = layers.BatchNormalization(name="standardize")(x)
    for units in c.hidden_units:
        x = layers.Dense(int(units), activation="relu", kernel_regularizer=reg)(x)
        if c.dropout:
            x = layers.Dropout(c.dropout)(x)
    return x
