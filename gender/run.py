"""``python -m gender.run``: compose the config with Hydra and train one job.

This module stays thin: TensorFlow is imported inside the job (by ``gender.training``), never in
the process that launches a sweep, and the only logic here is turning failures into records.
"""

from __future__ import annotations

import re
import signal
import sys
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from gender import CONF_DIR
from gender.errors import (
    EXIT_INTERRUPTED,
    FinishedRunError,
    UserError,
    describe_write_error,
    reported_as_one_line,
    silence_unraisable,
    write_error,
)
from gender.extras import any_plugin_missing, missing_extra, single_run_overrides
from gender.io import atomic_path, write_json
from gender.log import quiet_tensorflow
from gender.run_dir import guard_run_dir, guard_sweep_dir
from gender.training import train


def record_failure(run_dir: Path, error: BaseException) -> None:
    """Leave ``failure.json`` + ``error.txt`` so sweep summaries and people see what went wrong."""
    overrides: list[str] = []
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:
        pass
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    write_json(
        {"status": "failed", "error": f"{type(error).__name__}: {message}", "overrides": overrides},
        run_dir / "failure.json",
    )
    with atomic_path(run_dir / "error.txt") as tmp:
        tmp.write_text("".join(traceback.format_exception(error)))


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Train and evaluate; return validation accuracy so sweepers (Optuna) can maximise it."""
    quiet_tensorflow()
    run_dir = Path(cfg.paths.output_dir)
    try:
        return float(train(cfg)["val_accuracy"])
    except (Exception, KeyboardInterrupt) as e:
        interrupted = isinstance(e, KeyboardInterrupt)
        if interrupted:  # a second Ctrl-C must not cut the record short with a traceback
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        problem = write_error(e)
        if not isinstance(e, FinishedRunError):  # a finished run's directory is never written
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
                record_failure(run_dir, e)
            except OSError:  # the disk is full or the folder unwritable: the line below says so
                pass
        if interrupted:
            print(f"interrupted: resume with  python -m gender.resume {run_dir}", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)
        if problem is not None and not _is_multirun():
            silence_unraisable()
            print(f"error: {describe_write_error(problem)}", file=sys.stderr)
            sys.exit(1)
        if isinstance(e, UserError) and not _is_multirun():
            print(f"error: {e}", file=sys.stderr)
            sys.exit(e.exit_code)
        raise


def precheck(overrides: list[str]) -> None:
    """Compose and validate a single run's config before Hydra starts, so that a mistake (an unknown
    option or key, a bad value) is one line naming the key and what is allowed, with no run dir."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, MissingConfigException

    from gender.config import validate

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
    from hydra import compose, initialize_config_dir

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
