"""``python -m gender.run``: compose the config with Hydra and train one job.

This module stays thin: the task is ``gender.training.train`` in ``gender.task.task_wrapper``
(one ``error:`` line, failure records, the resume hint); the checks before Hydra starts are the
only logic here. TensorFlow is imported inside the job, never in the process that launches a sweep.
"""

from __future__ import annotations

import re
import sys

import hydra
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import DictConfig, OmegaConf

from gender import CONF_DIR
from gender.config import validate
from gender.errors import EXIT_INTERRUPTED, UserError, reported_as_one_line
from gender.extras import any_plugin_missing, missing_extra, single_run_overrides
from gender.run_dir import guard_run_dir, guard_sweep_dir
from gender.task import JobInfo, task_wrapper
from gender.training import train


def train_job(cfg: DictConfig, job: JobInfo) -> float:
    """Train and evaluate; return validation accuracy so sweepers (Optuna) can maximise it."""
    return float(train(cfg)["val_accuracy"])


main = hydra.main(version_base="1.3", config_path="conf", config_name="config")(
    task_wrapper(train_job, records_failures=True, resume_hint=True)
)


def precheck(overrides: list[str]) -> None:
    """Compose and validate a single run's config before Hydra starts, so that a mistake (an unknown
    option or key, a bad value) is one line naming the key and what is allowed, with no run dir."""

    def composed(ovs: list[str]):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=ovs)

    try:
        validate(composed(overrides))
    except MissingConfigException as e:
        if needs_extra := missing_extra(e):
            raise needs_extra from None
        group = (e.missing_cfg_file or "?").rsplit("/", 1)
        allowed = ", ".join(e.options or [])
        raise UserError(f"{group[0]}={group[-1]} is not an option; allowed: {allowed}") from None
    except ConfigCompositionException as e:
        match = re.search(r"override '([^']+)'", str(e))
        if not match:
            raise UserError(" ".join(str(e).split())) from None
        key = match.group(1)
        rest = [o for o in overrides if not o.lstrip("+~").startswith(key + "=")]
        try:
            base = composed(rest)
        except Exception:  # noqa: BLE001 - the listing is a courtesy
            base = None
        parent = key.rpartition(".")[0]
        while parent and OmegaConf.select(base, parent) is None:  # the first level that exists
            parent = parent.rpartition(".")[0]
        node = OmegaConf.select(base, parent) if parent else base
        allowed = ", ".join(str(k) for k in node) if node is not None else "?"
        raise UserError(f"{key} is not a config key; keys in {parent or 'the config'}: {allowed}") from None


def require_extras(args: list[str]) -> None:
    """A sweep (``-m``) whose sweeper or launcher is an optional extra that is not installed:
    one line naming the extra, before Hydra fails with "Could not find 'hydra/sweeper/optuna'"."""

    overrides = single_run_overrides(args)
    if overrides is None or not any_plugin_missing():
        return
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            compose(config_name="config", overrides=overrides)
    except Exception as e:  # noqa: BLE001 - anything else is Hydra's to report
        if needs_extra := missing_extra(e):
            raise needs_extra from None


def cli() -> None:
    """The console entrypoint (``gender-run``, ``python -m gender.run``): precheck single runs,
    then hand over to Hydra."""
    args = sys.argv[1:]
    try:
        with reported_as_one_line():
            claimed = None
            if not any(a.startswith("-") for a in args):  # -m, --cfg, --help: Hydra's business
                precheck(args)
                claimed = guard_run_dir(args)
            else:
                require_extras(args)
                if {a for a in args if a.startswith("-")} <= {"-m", "--multirun"}:
                    claimed = guard_sweep_dir(args)
            if claimed:  # pin the directory checked here, whatever the clock says when Hydra starts
                sys.argv.append(claimed)
        main()
    except KeyboardInterrupt:  # before the job started (composition, imports): nothing to resume
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    cli()
