"""Model presets built from ``cfg.model``; every model takes raw RGB pixels in [0, 255].

Rescaling lives inside the model (it has no weights), so a saved ``model.keras`` is self-contained:
evaluation and prediction feed it decoded pixels without knowing the training recipe.
"""

from __future__ import annotations

from typing import Any


def build_model(model_cfg: Any, image_size: int, augmentation=None, dtype_policy: str | None = None):
    """Dispatch on ``model.name``; ``augmentation`` (a Keras layer) is prepended when given."""
    import keras

    builders = {"seed_cnn": _seed_cnn, "rescnn": _rescnn}
    if model_cfg.name not in builders:
        from gender.errors import UserError

        raise UserError(f"model.name={model_cfg.name} is unknown; allowed: {', '.join(builders)}")
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = inputs
    if augmentation is not None:
        x = augmentation(x)
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

    x = layers.Conv2D(c.stem_filters, 3, strides=c.get("stem_stride", 2), padding="same",
                      use_bias=False, kernel_regularizer=reg)(x)
    x = bn_relu(x)
    for stage, width in enumerate(c.widths):
        for block in range(c.blocks_per_stage):
            stride = 2 if block == 0 and stage > 0 else 1
            shortcut = x
            y = conv(width, 3, strides=stride, padding="same", use_bias=False)(x)
            y = bn_relu(y)
            y = conv(width, 3, padding="same", use_bias=False)(y)
            y = layers.BatchNormalization()(y)
            if stride != 1 or shortcut.shape[-1] != width:
                shortcut = layers.Conv2D(width, 1, strides=stride, use_bias=False,
                                         kernel_regularizer=reg)(shortcut)
                shortcut = layers.BatchNormalization()(shortcut)
            x = layers.Activation("relu")(layers.Add()([y, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    if c.dropout:
        x = layers.Dropout(c.dropout)(x)
    return x
