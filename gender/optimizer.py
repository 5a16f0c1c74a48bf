"""Optimizer and learning-rate schedule from ``cfg.optimizer`` via Hydra's instantiate.

Every option keeps the learning rate at ``optimizer.lr`` (what sweeps vary); the rest of the group
is the optimizer's own keyword arguments, so any ``keras.optimizers`` class is one YAML file away.
"""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import OmegaConf

from gender.errors import UserError

SCHEDULE_KEYS = ("lr", "schedule", "warmup_epochs", "min_lr_ratio")
OWN_KEYS = (*SCHEDULE_KEYS, "ema_start_epoch")  # ours, not the Keras class's (AveragedWeights)


def learning_rate(opt_cfg: Any, steps_per_epoch: int, epochs: int):
    """A float for ``schedule=constant``, else a Keras schedule over the whole run."""
    import keras

    lr = float(opt_cfg.lr)
    kind = opt_cfg.get("schedule", "constant")
    if kind == "constant":
        return lr
    total = max(1, steps_per_epoch * epochs)
    warmup = min(total - 1, int(steps_per_epoch * float(opt_cfg.get("warmup_epochs", 0))))
    if kind == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=lr if warmup == 0 else lr / 10,
            decay_steps=max(1, total - warmup),
            alpha=float(opt_cfg.get("min_lr_ratio", 0.0)),
            warmup_target=lr if warmup else None,
            warmup_steps=warmup,
        )

    raise UserError(f"optimizer.schedule={kind} is unknown; allowed: constant, cosine")


def build_optimizer(opt_cfg: Any, steps_per_epoch: int, epochs: int):
    """Instantiate ``optimizer._target_`` with every key but ours (``OWN_KEYS``)."""

    kwargs = OmegaConf.to_container(opt_cfg, resolve=True)
    for key in OWN_KEYS:
        kwargs.pop(key, None)
    return instantiate(kwargs, learning_rate=learning_rate(opt_cfg, steps_per_epoch, epochs))
