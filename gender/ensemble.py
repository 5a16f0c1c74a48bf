"""``python -m gender.ensemble 'members=[RUN_A,RUN_B]'``: several training runs as one model.

Writes into its own run directory a model that averages the members' probabilities, with the
files ``evaluate`` and ``predict`` read from a training run (see ``gender.ensembling``)::

    python -m gender.run experiment=best hydra.run.dir=outputs/runs/a
    python -m gender.run experiment=best seed=43 data.split.seed=42 hydra.run.dir=outputs/runs/b
    python -m gender.ensemble 'members=[outputs/runs/a,outputs/runs/b]' hydra.run.dir=outputs/runs/ab
    python -m gender.evaluate model_path=outputs/runs/ab
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from gender.ensembling import build_ensemble
from gender.errors import UserError, reported_as_one_line
from gender.task import JobInfo, task_wrapper

log = logging.getLogger(__name__)


def ensemble_job(cfg: DictConfig, job: JobInfo) -> None:
    if OmegaConf.is_missing(cfg, "members") or not OmegaConf.is_list(cfg.members):
        raise UserError(
            "members is required: a list of training run directories, e.g. 'members=[RUN_A,RUN_B]'"
        )
    summary = build_ensemble(list(cfg.members), job.output_dir, cfg.get("threshold"))
    log.info(
        "ensemble of %d runs (%d px, threshold %g): %s",
        len(summary["members"]),
        summary["image_size"],
        summary["decision_threshold"],
        summary["model"],
    )
    log.info("score it: python -m gender.evaluate model_path=%s", job.output_dir)


main = hydra.main(version_base="1.3", config_path="conf", config_name="ensemble")(task_wrapper(ensemble_job))


def cli() -> None:
    with reported_as_one_line():
        main()


if __name__ == "__main__":
    cli()
