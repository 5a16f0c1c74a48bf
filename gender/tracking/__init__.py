"""Experiment tracking for one job: a Weights & Biases run and/or TensorBoard logs.

- ``lifecycle``: ``Tracker``, which starts, feeds and finishes the job's tracking and never
  costs a result (see its docstring for the fallbacks);
- ``media``: the W&B objects built from results (charts, predictions table, model artifact);
- ``config``: the config made safe to upload, and the run's name and group from the Hydra job;
- ``callbacks`` / ``tensorboard``: the per-epoch Keras callbacks (TensorFlow imported only there).

What a W&B run holds (docs/tracking.md shows how to read it back): the resolved job config
(secrets removed), one history row per epoch (``epoch/*`` against ``epoch/epoch``, from 1 like
``history.csv``), the final metrics and ``test/*`` in the summary, ``test/confusion_matrix``,
``test/roc`` and the ``test/predictions`` table, the job's ``.hydra/`` files, and the model as
artifact ``model-<run id>`` aliased ``best`` and ``latest``.
"""

from gender.tracking.config import flatten, redact_secrets, resolved_config
from gender.tracking.lifecycle import Tracker

__all__ = ["Tracker", "flatten", "redact_secrets", "resolved_config"]
