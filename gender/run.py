"""``python -m gender.run``: compose the config with Hydra and train one job.

This module stays thin: TensorFlow is imported inside the job (by ``gender.training``), never in
the process that launches a sweep, and the only logic here is turning failures into records.
"""

from __future__ import annotations

import re
import sys
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from gender import CONF_DIR
from gender.errors import UserError, reported_as_one_line
from gender.io import write_json
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
    write_json({"status": "failed", "error": f"{type(error).__name__}: {message}",
                "overrides": overrides}, run_dir / "failure.json")
    (run_dir / "error.txt").write_text("".join(traceback.format_exception(error)))


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
    run_dir = Path(cfg.paths.output_dir)
    try:
        return float(train(cfg)["val_accuracy"])
    except (Exception, KeyboardInterrupt) as e:
        run_dir.mkdir(parents=True, exist_ok=True)
        record_failure(run_dir, e)
        if isinstance(e, KeyboardInterrupt):
            print(f"interrupted: resume with  python -m gender.resume {run_dir}", file=sys.stderr)
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
        raise UserError(f"{key} is not a config key; keys in {parent or 'the config'}: {allowed}") \
            from None


def cli() -> None:
    """The console entrypoint: precheck single runs, then hand over to Hydra."""
    args = sys.argv[1:]
    if not any(a.startswith("-") for a in args):  # -m, --cfg, --help, ...: Hydra's own business
        with reported_as_one_line():
            precheck(args)
    main()


if __name__ == "__main__":
    cli()
