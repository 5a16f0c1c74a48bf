"""``python -m gender.evaluate``: score a saved model on a run's test split or on a folder.

Usage::

    # the run's own held-out test files (RUN/split.csv, split=test)
    python -m gender.evaluate model_path=outputs/2025-01-01/12-00-00
    # every image under a folder with one subfolder per class (mapped by data.classes)
    python -m gender.evaluate model_path=RUN/model.keras data.root=/data/other_faces
    # per-group accuracy from a CSV with columns file,group
    python -m gender.evaluate model_path=RUN data.root=DIR groups_csv=groups.csv

Writes into its own Hydra run directory: ``metrics.json`` (``accuracy`` at the top level plus
the full evaluation dict), ``predictions.csv`` (path,true,pred,prob_<class 1>,group: the
probability of class index 1, as in training's ``predictions_test.csv``), ``skipped_files.csv``
when some files could not be read, and ``plots/`` (confusion matrix, reliability, ROC, most
confident mistakes).

``evaluate_model`` is the one code path for scoring a model on samples; training calls it for the
test split so a run's ``test`` numbers and a later ``gender.evaluate`` agree by construction.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from gender.errors import reported_as_one_line
from gender.inference import require_model_path
from gender.scoring import run_evaluation
from gender.task import JobInfo, task_wrapper


def evaluate_job(cfg: DictConfig, job: JobInfo) -> float:
    require_model_path(cfg, "python -m gender.evaluate model_path=outputs/runs/DATE/TIME")
    return run_evaluation(cfg, job.output_dir)["accuracy"]


main = hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")(task_wrapper(evaluate_job))


def cli() -> None:
    with reported_as_one_line():  # Ctrl-C before the task started: one line, no traceback
        main()


if __name__ == "__main__":
    cli()
