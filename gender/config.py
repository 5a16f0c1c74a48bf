"""Checks on the composed config that Hydra's struct mode cannot express (ranges, sums, choices).

Hydra already rejects unknown keys (struct mode) and unknown group options; this adds the value
checks, so every mistake stops the run before any data is read, with one line naming the key.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from gender.errors import UserError

CHOICES = {
    "augmentation.placement": ("pipeline", "model"),
    "data.bad_files": ("skip", "error"),
    "optimizer.schedule": ("constant", "cosine"),
    "trainer.strategy": ("default", "mirrored", "multi_worker"),
    "model.name": ("seed_cnn", "rescnn"),
}


MIXED_PRECISION = {False: "float32", True: "mixed_float16", "float16": "mixed_float16",
                   "bfloat16": "mixed_bfloat16", "auto": "auto"}


def dtype_policy(mixed_precision: Any) -> str:
    """Keras policy for ``trainer.mixed_precision``: float16 suits GPUs, bfloat16 CPUs with
    AVX-512 BF16 or AMX (and TPUs); ``true`` means float16. ``auto`` stays ``auto``: the machine
    decides, in ``gender.training.native_dtype_policy``."""
    key = mixed_precision if isinstance(mixed_precision, str) else bool(mixed_precision)
    if key not in MIXED_PRECISION:
        raise UserError(f"trainer.mixed_precision={mixed_precision} is invalid: allowed values "
                        "are false, true, float16, bfloat16, auto")
    return MIXED_PRECISION[key]


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


def validate(cfg: DictConfig) -> None:
    """Raise ``UserError`` for the first invalid value, naming the key and what is allowed."""
    positive = {
        "optimizer.lr": float, "data.image_size": int, "data.batch_size": int,
        "trainer.epochs": int,
    }
    for key, kind in positive.items():
        value = _get(cfg, key)
        try:
            ok = value is not None and kind(value) == float(value) and kind(value) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            what = "a positive integer" if kind is int else "a number > 0"
            raise UserError(f"{key}={value} is invalid: must be {what}")
    dropout = _get(cfg, "model.dropout")
    if dropout is not None and not (isinstance(dropout, int | float) and 0 <= dropout < 1):
        raise UserError(f"model.dropout={dropout} is invalid: must be in [0, 1)")
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value is not None and value not in allowed:
            raise UserError(f"{key}={value} is invalid: allowed values are {', '.join(allowed)}")
    dtype_policy(_get(cfg, "trainer.mixed_precision"))
    split = dict(_get(cfg, "data.split") or {})
    if "holdout_kind" in split and not split.pop("holdout_kind"):  # a kind name, not a ratio
        raise UserError("data/split=holdout_kind needs data.split.holdout_kind=KIND: an original "
                        "image size such as 128x128, or other (sizes rarer than 5% of the images)")
    try:
        ratios = {k: float(v) for k, v in split.items()}
    except (TypeError, ValueError):
        raise UserError(f"data.split={dict(split)} is invalid: ratios must be numbers") from None
    if set(ratios) != {"train", "val", "test"}:
        raise UserError(f"data.split must have exactly train, val and test, got {sorted(ratios)}")
    if any(not 0 <= v <= 1 for v in ratios.values()):
        raise UserError(f"data.split={ratios} is invalid: each ratio must be in [0, 1]")
    if abs(sum(ratios.values()) - 1) > 1e-6 and not _get(cfg, "data.test_dir"):
        raise UserError(f"data.split={ratios} is invalid: ratios must sum to 1 "
                        f"(they sum to {sum(ratios.values()):.4g})")
    for name in ("train", "val"):
        if ratios[name] <= 0:
            raise UserError(f"data.split.{name}={ratios[name]} is invalid: the {name} split "
                            "must not be empty (ratio > 0)")
