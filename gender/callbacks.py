"""The Keras callbacks of a training run, each importable and testable on its own.

``gender.training.make_callbacks`` picks them from the config. Where Keras has the callback
(``EarlyStopping``, ``BackupAndRestore``) it is used as is; each one here says what the Keras
equivalent cannot do.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from gender.checkpoints import (
    HISTORY_KEYS,
    best_weights_path,
    epoch_rank,
    fit_marker,
    history_rows,
    stamp_epoch,
    write_history,
)
from gender.io import atomic_path, deferred_interrupt, write_json


class EpochSeeds(keras.callbacks.Callback):
    """Derive every random draw of epoch e from (seed, e) alone: shuffle order, augmentation and
    dropout. A run resumed at epoch e then trains exactly as an uninterrupted one would (Keras
    seeds once per process, so a resumed run would draw differently)."""

    def __init__(self, seed: int, epoch_var, random_states: Sequence) -> None:
        super().__init__()
        self.seed, self.epoch_var, self.random_states = int(seed), epoch_var, list(random_states)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_var.assign(epoch)
        for i, state in enumerate(self.random_states):
            state.assign(np.array([self.seed * 1000 + epoch, i], dtype=state.dtype))


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the current learning rate to the epoch logs (Keras 3 does not)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:  # the property evaluates a schedule at the current step; a
            # MirroredVariable (trainer.strategy=mirrored) has no __float__: go through numpy
            lr = self.model.optimizer.learning_rate
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))


class HistoryCSV(keras.callbacks.Callback):
    """history.csv, one row per epoch with the training seconds so far. Unlike Keras'
    ``CSVLogger(append=True)``, a resumed run drops the rows of epochs it trains again (no
    duplicate epochs), the seconds continue across resumes, and every write is atomic."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.rows = history_rows(self.path)

    def on_train_begin(self, logs=None):
        self.offset = float(self.rows[-1].get("elapsed_seconds") or 0) if self.rows else 0.0
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        logs["elapsed_seconds"] = self.offset + time.perf_counter() - self.started
        row = {"epoch": str(epoch + 1), **{k: f"{float(logs[k]):.6g}" for k in HISTORY_KEYS if k in logs}}
        self.rows = [r for r in self.rows if int(r["epoch"]) <= epoch] + [row]
        write_history(self.rows, self.path)


class BestWeights(keras.callbacks.Callback):
    """The best epoch's weights by ``monitor``. Keras' ``ModelCheckpoint(save_best_only=True,
    initial_value_threshold=...)`` writes in place, so a kill mid-write leaves a corrupt file to
    resume from; this one writes atomically and stamps the epoch it holds into the file."""

    def __init__(self, run_dir: Path, monitor: str, best: Mapping[str, Any] | None) -> None:
        """``best``: the metrics of the best epoch so far (a resumed run's), or None."""
        super().__init__()
        self.path, self.monitor = best_weights_path(Path(run_dir)), monitor
        self.best = epoch_rank(best, monitor) if best else None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if logs.get(self.monitor) is None:
            return
        rank = epoch_rank(logs, self.monitor)  # ties on accuracy go to the lower validation loss
        if self.best is not None and rank <= self.best:
            return
        self.best = rank
        with deferred_interrupt(), atomic_path(self.path) as tmp:  # Ctrl-C lands after the write
            self.model.save_weights(tmp)
            stamp_epoch(tmp, epoch + 1)


class FitComplete(keras.callbacks.Callback):
    """Marks a finished fit, so a run that dies later (evaluation) resumes without retraining.
    Placed before BackupAndRestore, whose on_train_end deletes the resume state: a kill between
    the two must not leave a run with neither."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)

    def on_train_end(self, logs=None):
        epochs = len(history_rows(self.run_dir / "history.csv"))
        write_json({"epochs": epochs}, fit_marker(self.run_dir))


class StopAtEpoch(keras.callbacks.Callback):
    """Pause after ``epoch`` on the learning-rate schedule of the whole run (successive halving's
    rungs); the resume state is kept so a later run in the same folder goes on."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = int(epoch)

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self.epoch:
            self.model.stop_training = True


class AveragedWeights(keras.callbacks.SwapEMAWeights):
    """The optimizer's moving average of the weights (``optimizer.use_ema``) in the model from
    each epoch's end to the next one's start, so validation, ``BestWeights`` and the saved model
    all see the average while training steps move the raw weights.

    What Keras' ``SwapEMAWeights(swap_on_epoch=True)`` cannot do: a resumed run restores a state
    saved at an epoch's end, i.e. with the average in the model, and Keras would train on from
    the average; here the first epoch swaps the raw weights back. A run stopped early (not
    paused) ends with the average, where Keras leaves the raw weights of its last step. The swap
    is exact (Keras' TensorFlow swap adds and subtracts, which rounds the raw weights at every
    swap). And the average restarts from the raw weights at every epoch before ``start_epoch``:
    Keras' average has no warm-up, so at momentum 0.999 the nearly random weights of the first
    steps still made up 22% of it after five epochs, and our BatchNorm network then called every
    validation image a man.
    """

    def __init__(self, resuming: bool, paused: bool, start_epoch: int) -> None:
        super().__init__(swap_on_epoch=True)
        self.resuming, self.paused, self.start_epoch = resuming, paused, int(start_epoch)

    def _swap_variables(self):
        self._apply_to_ema_optimizers(self._backend_swap_variables, self._backend_swap_variables)

    def on_train_begin(self, logs=None):
        self._ema_weights_in_model = self.resuming  # BackupAndRestore restores after this hook

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)  # the raw weights back in the model
        # (before the first step there is no average yet: that step starts it from the weights)
        if epoch + 1 < self.start_epoch and int(self.model.optimizer.iterations) > 0:
            self._finalize_ema_values()  # the average restarts from them

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        last = epoch == self.params["epochs"] - 1  # Keras already kept the average there
        if self.model.stop_training and not (last or self.paused):
            self._finalize_ema_values()  # fit's finalize_variable_values then keeps the average
