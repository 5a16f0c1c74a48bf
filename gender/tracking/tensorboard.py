"""TensorBoard logs of one job (``logger=tensorboard``): Keras' own TensorBoard callback for the
epochs, and at the end the final metrics with the job's hyperparameters for TensorBoard's HParams
tab, so ``tensorboard --logdir outputs/multirun/<date>/<time>`` compares a sweep's jobs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gender.tracking.config import jsonable

log = logging.getLogger(__name__)

LOG_DIR = "tensorboard"


class TensorBoardLogs:
    """Event files under ``RUN/tensorboard/`` (``train/``, ``validation/`` and the job's final
    metrics with its hyperparameters at the top)."""

    def __init__(
        self, log_dir: Path, options: Mapping[str, Any], hparams: Mapping[str, Any], name: str | None
    ) -> None:
        self.log_dir = Path(log_dir)
        self.options = dict(options)
        self.hparams = {
            k: v for k, v in jsonable(dict(hparams)).items() if isinstance(v, bool | int | float | str)
        }
        self.name = name

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], run_dir: Path, hparams: Mapping[str, Any], name: str | None
    ) -> TensorBoardLogs:
        return cls(Path(options.get("log_dir") or Path(run_dir) / LOG_DIR), options, hparams, name)

    def keras_callback(self) -> Any:
        from gender.tracking.callbacks import TensorBoardEpochs

        return TensorBoardEpochs(
            log_dir=str(self.log_dir),
            histogram_freq=int(self.options.get("histogram_freq") or 0),
            write_graph=bool(self.options.get("write_graph", True)),
            update_freq="epoch",
        )

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        """The job's final numbers at its best epoch, with its hyperparameters (HParams tab)."""
        import tensorflow as tf
        from tensorboard.plugins.hparams import api as hp

        step = int(metrics.get("best_epoch") or 0)
        with tf.summary.create_file_writer(str(self.log_dir)).as_default():
            hp.hparams(self.hparams, trial_id=self.name)
            for key, value in jsonable(dict(metrics)).items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    tf.summary.scalar(key, value, step=step)
