"""Keras callbacks that report each epoch to W&B and TensorBoard, numbered as ``history.csv``
and ``best_epoch`` number them (from 1). Imported only when a tracked job trains."""

from __future__ import annotations

import os
from typing import Any

import keras


def _learning_rate(model: Any) -> float | None:
    try:  # a schedule is evaluated at the current step; a MirroredVariable goes through numpy
        return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    except Exception:  # noqa: BLE001 - no optimizer (yet): leave it out
        return None


class WandbEpochLogger(keras.callbacks.Callback):
    """``epoch/<metric>`` history rows against ``epoch/epoch``, plus ``epoch/learning_rate``.

    Instead of W&B's ``WandbMetricsLogger``, which numbers epochs from 0 (``history.csv`` and
    ``best_epoch`` count from 1) and logs to the process-global ``wandb.run`` rather than this
    job's run. Under a W&B sweep agent the Keras metrics are also logged under their own names
    (``val_accuracy``) each epoch: hyperband early termination reads the sweep metric's history."""

    def __init__(self, run: Any) -> None:
        super().__init__()
        self.run = run
        self.in_sweep = bool(os.environ.get("WANDB_SWEEP_ID"))  # set by `wandb agent`
        run.define_metric("epoch/epoch")
        run.define_metric("epoch/*", step_metric="epoch/epoch")

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        row = {f"epoch/{k}": float(v) for k, v in (logs or {}).items()}
        if self.in_sweep:
            row.update({k: float(v) for k, v in (logs or {}).items()})
        if "epoch/learning_rate" not in row and (lr := _learning_rate(self.model)) is not None:
            row["epoch/learning_rate"] = lr
        row["epoch/epoch"] = epoch + 1
        self.run.log(row)


class TensorBoardEpochs(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback with epochs numbered from 1, like ``history.csv``."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None and "learning_rate" not in logs:
            lr = _learning_rate(self.model)
            logs = logs if lr is None else {**logs, "learning_rate": lr}
        super().on_epoch_end(epoch + 1, logs)
