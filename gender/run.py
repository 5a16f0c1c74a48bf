"""``python -m gender.run``: compose the config with Hydra and train one job.

This module stays thin: TensorFlow is imported inside the job (by ``gender.training``), never in
the process that launches a sweep, and the only logic here is turning failures into records.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig

from gender.errors import UserError
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


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
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


if __name__ == "__main__":
    main()
