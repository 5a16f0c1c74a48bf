"""Checks on the composed config that Hydra's struct mode cannot express (ranges, sums, choices).

Hydra already rejects unknown keys (struct mode) and unknown group options; this adds the value
checks, so every mistake stops the run before any data is read, with one line naming the key.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gender.errors import UserError
from gender.face import FaceSettings

CHOICES = {  # null is allowed too
    "augmentation.placement": ("pipeline", "model"),
    "data.bad_files": ("skip", "error"),
    "optimizer.schedule": ("constant", "cosine"),
    "trainer.strategy": ("default", "mirrored", "multi_worker"),
    "model.name": ("seed_cnn", "rescnn", "descriptor_mlp"),
    # gender.data.sample_weights
    "trainer.class_weight": ("balanced", "balanced_per_kind", "balanced_per_kind_and_age"),
}


def check_choice(key: str, value: Any) -> None:
    """One line naming ``key`` and its options when ``value`` is neither null nor one of them."""
    if value is not None and value not in CHOICES[key]:
        raise UserError(f"{key}={value} is invalid: allowed values are {', '.join(CHOICES[key])}")


MIXED_PRECISION = {
    False: "float32",
    True: "mixed_float16",
    "float16": "mixed_float16",
    "bfloat16": "mixed_bfloat16",
    "auto": "auto",
}


def dtype_policy(mixed_precision: Any) -> str:
    """Keras policy for ``trainer.mixed_precision``: float16 suits GPUs, bfloat16 CPUs with
    AVX-512 BF16 or AMX (and TPUs); ``true`` means float16. ``auto`` stays ``auto``: the machine
    decides, in ``gender.runtime.native_dtype_policy``."""
    key = mixed_precision if isinstance(mixed_precision, str) else bool(mixed_precision)
    if key not in MIXED_PRECISION:
        raise UserError(
            f"trainer.mixed_precision={mixed_precision} is invalid: allowed values "
            "are false, true, float16, bfloat16, auto"
        )
    return MIXED_PRECISION[key]


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


#: what to say for a mandatory key (``???``) left unset
REQUIRED_HINTS = {
    "data.root": "the folder holding one subfolder per class, e.g. data.root=/data/faces",
    "model_path": "a training run directory or a .keras file",
}


def _missing_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose value is ``???``, without resolving any interpolation (``hydra:`` ones
    only resolve inside a job)."""
    out: list[str] = []
    if not isinstance(node, DictConfig):
        return out
    for key in node.keys():
        full = f"{prefix}{key}"
        if full == "hydra":
            continue
        if OmegaConf.is_missing(node, key):
            out.append(full)
        else:
            child = node._get_node(key)
            if isinstance(child, DictConfig) and not child._is_interpolation():
                out += _missing_keys(child, f"{full}.")
    return out


def _non_finite(node: Any, prefix: str = "") -> list[str]:
    """Dotted keys holding a NaN or infinite number (as written, interpolations unresolved)."""
    if isinstance(node, dict):
        return [k for key, v in node.items() for k in _non_finite(v, f"{prefix}{key}.")]
    if isinstance(node, list):
        return [k for i, v in enumerate(node) for k in _non_finite(v, f"{prefix[:-1]}[{i}].")]
    if isinstance(node, float) and not math.isfinite(node):
        return [prefix[:-1]]
    return []


def _int_value(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_common(cfg: DictConfig) -> None:
    """Checks every command's config gets: mandatory keys set, numbers finite."""
    missing = _missing_keys(cfg)
    if missing:
        key = missing[0]
        hint = REQUIRED_HINTS.get(key, f"give it on the command line: {key}=...")
        group = "data=" + str(_get(cfg, "data.name")) + ": " if key.startswith("data.") else ""
        raise UserError(f"{key} must be set ({group}{hint})")
    container = OmegaConf.to_container(cfg, resolve=False)
    if isinstance(container, dict):
        container.pop("hydra", None)
    bad = _non_finite(container)
    if bad:
        raise UserError(f"{bad[0]}={_get(cfg, bad[0])} is invalid: must be a finite number")


def is_probability(value: Any) -> bool:
    """A number in [0, 1] (a YAML ``true`` is not one)."""
    return not isinstance(value, bool) and isinstance(value, int | float) and 0.0 <= value <= 1.0


def validate_scoring(cfg: DictConfig, command: str) -> None:
    """``gender.evaluate`` / ``gender.predict`` settings, checked before any file is read."""
    check_common(cfg)
    for key in ("batch_size", "sample", "image_size"):
        value = _get(cfg, key)
        if key != "batch_size" and value is None:
            continue
        if not _int_value(value) or value < 1:
            raise UserError(f"{key}={value} is invalid: must be a positive integer")
    threshold = _get(cfg, "threshold")
    if threshold is not None and not is_probability(threshold):
        raise UserError(f"threshold={threshold} is invalid: must be a probability in [0, 1] or null")
    mistakes = _get(cfg, "mistakes")
    if mistakes is not None and (not _int_value(mistakes) or mistakes < 0):
        raise UserError(f"mistakes={mistakes} is invalid: must be an integer >= 0")
    no_face = _get(cfg, "no_face")
    if no_face is not None and no_face not in ("whole", "skip"):
        raise UserError(f"no_face={no_face} is invalid: allowed values are whole, skip")
    seed = _get(cfg, "seed")
    if seed is not None and (not _int_value(seed) or seed < 0):
        raise UserError(f"seed={seed} is invalid: must be an integer >= 0")
    if _get(cfg, "data.max_pixels") is not None:
        _check_max_pixels(cfg)
    del command


def _check_max_pixels(cfg: DictConfig) -> None:
    value = _get(cfg, "data.max_pixels")
    if value is not None and (not _int_value(value) or value < 1):
        raise UserError(
            f"data.max_pixels={value} is invalid: must be a positive integer "
            "(pixels per image) or null for the default"
        )


def validate(cfg: DictConfig) -> None:
    """Raise ``UserError`` for the first invalid value, naming the key and what is allowed."""
    check_common(cfg)
    seed = _get(cfg, "seed")
    if not _int_value(seed) or not 0 <= seed < 2**32:
        raise UserError(f"seed={seed} is invalid: must be an integer in [0, 2^32)")
    positive = {
        "optimizer.lr": float,
        "data.image_size": int,
        "data.batch_size": int,
        "trainer.epochs": int,
    }
    for key, kind in positive.items():
        value = _get(cfg, key)
        try:
            ok = (
                value is not None
                and not isinstance(value, bool)
                and math.isfinite(float(value))
                and kind(value) == float(value)
                and kind(value) > 0
            )
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            what = "a positive integer" if kind is int else "a number > 0"
            raise UserError(f"{key}={value} is invalid: must be {what}")
    dropout = _get(cfg, "model.dropout")
    if dropout is not None and not (isinstance(dropout, int | float) and 0 <= dropout < 1):
        raise UserError(f"model.dropout={dropout} is invalid: must be in [0, 1)")
    for key in CHOICES:
        check_choice(key, _get(cfg, key))
    dtype_policy(_get(cfg, "trainer.mixed_precision"))
    _check_trainer_and_model(cfg)
    _check_augmentation(cfg)
    split = dict(_get(cfg, "data.split") or {})
    if "holdout_kind" in split and not split.pop("holdout_kind"):  # a kind name, not a ratio
        raise UserError(
            "data/split=holdout_kind needs data.split.holdout_kind=KIND: an original "
            "image size such as 128x128, or other (sizes rarer than 5% of the images)"
        )
    split_seed = split.pop("seed", None)
    if split_seed is not None and (
        isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0
    ):
        raise UserError(
            f"data.split.seed={split_seed} is invalid: a non-negative integer, or null for the run's seed"
        )
    try:
        ratios = {k: float(v) for k, v in split.items()}
    except (TypeError, ValueError):
        raise UserError(f"data.split={dict(split)} is invalid: ratios must be numbers") from None
    if set(ratios) != {"train", "val", "test"}:
        raise UserError(f"data.split must have exactly train, val and test, got {sorted(ratios)}")
    if any(not 0 <= v <= 1 for v in ratios.values()):
        raise UserError(f"data.split={ratios} is invalid: each ratio must be in [0, 1]")
    if abs(sum(ratios.values()) - 1) > 1e-6 and not _get(cfg, "data.test_dir"):
        raise UserError(
            f"data.split={ratios} is invalid: ratios must sum to 1 (they sum to {sum(ratios.values()):.4g})"
        )
    for name in ("train", "val"):
        if ratios[name] <= 0:
            raise UserError(
                f"data.split.{name}={ratios[name]} is invalid: the {name} split must not be empty (ratio > 0)"
            )


MONITORS = ("val_accuracy", "val_loss", "accuracy", "loss")


def _check_augmentation(cfg: DictConfig) -> None:
    """Shares, the erasing area and the JPEG quality range fail here, before the data is read."""
    for key in ("augmentation.low_resolution", "augmentation.jpeg", "augmentation.erasing"):
        share = _get(cfg, key)
        if share is not None and not (isinstance(share, int | float) and 0 <= share <= 1):
            raise UserError(f"{key}={share} is invalid: a share of the images, in [0, 1]")
    alpha = _get(cfg, "augmentation.mixup")
    if alpha is not None and not (isinstance(alpha, int | float) and alpha >= 0):
        raise UserError(f"augmentation.mixup={alpha} is invalid: mixup's alpha, >= 0 (0: off)")
    ranges = (  # [low, high] pairs: key, upper bound, check of each value, what the values are
        ("augmentation.erasing_area", 1, lambda v: isinstance(v, int | float), "shares of the image,"),
        ("augmentation.jpeg_quality", 100, _int_value, "with"),
    )
    for key, top, is_value, meaning in ranges:
        pair = _get(cfg, key)
        if pair is None:
            continue
        v = list(pair) if not isinstance(pair, str | int | float) else [pair]
        if len(v) != 2 or not all(is_value(x) for x in v) or not 0 <= v[0] <= v[1] <= top:
            raise UserError(f"{key}={v} is invalid: [low, high] {meaning} 0 <= low <= high <= {top}")


#: augmentation keys that set how, not how much: every other one switches an image transform on
AUGMENTATION_SETTINGS = (
    "placement",
    "fill_mode",
    "fused",
    "low_resolution_min_scale",
    "jpeg_quality",
    "erasing_area",
)
VECTOR_MODELS = ("descriptor_mlp",)  # models whose input is the face descriptor, not an image


def _check_inputs_fit(cfg: DictConfig, face: FaceSettings) -> None:
    """A descriptor is 128 numbers, not an image: the model, image augmentation and the mirror
    average must fit what the face stage gives, or the run fails after the data was decoded."""
    name = _get(cfg, "model.name")
    if name is not None and face.describes != (name in VECTOR_MODELS):
        if face.describes:
            raise UserError(
                f"data.face=descriptor gives the model 128 numbers per face, not an image: use "
                f"model={VECTOR_MODELS[0]} (model={name} takes images), e.g. experiment=face_descriptor"
            )
        raise UserError(
            f"model={name} takes face descriptors: set data.face=descriptor (or use an image model)"
        )
    if not face.describes:
        return
    aug = _get(cfg, "augmentation") or {}
    on = [k for k, v in aug.items() if k not in AUGMENTATION_SETTINGS and v]
    if on:
        raise UserError(
            f"augmentation.{on[0]}={aug[on[0]]}: image augmentation does not apply to data.face=descriptor "
            "(the model sees 128 numbers per face); use augmentation=none"
        )
    if _get(cfg, "model.test_time_flip"):
        raise UserError("model.test_time_flip=true mirrors images; with data.face=descriptor set it to false")


def _check_trainer_and_model(cfg: DictConfig) -> None:
    """Values that otherwise fail (or silently do nothing) only after the data was read."""
    for key in ("trainer.checkpoint.monitor", "trainer.early_stopping.monitor"):
        value = _get(cfg, key)
        if value is not None and value not in MONITORS:
            raise UserError(f"{key}={value} is invalid: allowed values are {', '.join(MONITORS)}")
    patience = _get(cfg, "trainer.early_stopping.patience")
    if patience is not None and (not _int_value(patience) or patience < 0):
        raise UserError(f"trainer.early_stopping.patience={patience} is invalid: must be an integer >= 0")
    smoothing = _get(cfg, "trainer.label_smoothing")
    if smoothing is not None and not (isinstance(smoothing, int | float) and 0 <= smoothing < 1):
        raise UserError(f"trainer.label_smoothing={smoothing} is invalid: must be in [0, 1)")
    decision = _get(cfg, "trainer.decision_threshold")
    if decision is not None and decision != "balanced" and not is_probability(decision):
        raise UserError(
            f"trainer.decision_threshold={decision} is invalid: must be balanced or a probability in [0, 1]"
        )
    for key in ("trainer.limit_batches", "trainer.logical_cpus"):
        value = _get(cfg, key)
        if value is not None and (not _int_value(value) or value < 1):
            raise UserError(f"{key}={value} is invalid: must be a positive integer or null")
    _check_max_pixels(cfg)
    warmup = _get(cfg, "optimizer.warmup_epochs")
    if warmup is not None and not (isinstance(warmup, int | float) and warmup >= 0):
        raise UserError(f"optimizer.warmup_epochs={warmup} is invalid: must be >= 0")
    ratio = _get(cfg, "optimizer.min_lr_ratio")
    if ratio is not None and not (isinstance(ratio, int | float) and 0 <= ratio <= 1):
        raise UserError(f"optimizer.min_lr_ratio={ratio} is invalid: must be in [0, 1]")
    momentum = _get(cfg, "optimizer.ema_momentum")
    if momentum is not None and not (isinstance(momentum, int | float) and 0 <= momentum <= 1):
        raise UserError(f"optimizer.ema_momentum={momentum} is invalid: must be in [0, 1]")
    start = _get(cfg, "optimizer.ema_start_epoch")
    if start is not None and (not _int_value(start) or start < 1):
        raise UserError(f"optimizer.ema_start_epoch={start} is invalid: must be an integer >= 1")
    if _get(cfg, "data") is not None:
        face = FaceSettings.from_config(cfg.data)  # data.face, data.face_margin, data.face_detector
        _check_inputs_fit(cfg, face)
    # the seed CNN halves the image at each of its pooling layers: below 2^n pixels a side,
    # Keras fails while building the model, after the data was decoded
    if _get(cfg, "model.name") == "seed_cnn":
        pools = len(_get(cfg, "model.filters") or [])
        size = _get(cfg, "data.image_size")
        if _int_value(size) and size < 2**pools:
            raise UserError(
                f"data.image_size={size} is too small for model=seed_cnn: its "
                f"{pools} pooling layers need at least {2**pools} pixels a side"
            )
