"""The Hydra callback that keeps ``SWEEP_DIR/summary.*`` current during a multirun."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from gender.sweep_summary.summary import NoJobsError, summarize
from gender.task import record_failure

log = logging.getLogger(__name__)


def _is_multirun(config: DictConfig) -> bool:
    mode = OmegaConf.select(config, "hydra.mode", default=None)
    return mode == RunMode.MULTIRUN or str(mode) in ("MULTIRUN", "RunMode.MULTIRUN")


def _sweep_dir(config: DictConfig) -> Path | None:
    sweep = OmegaConf.select(config, "hydra.sweep.dir", default=None)
    return Path(str(sweep)).absolute() if sweep else None


def record_job_failure(job_dir: Path, job_return: Any) -> None:
    """failure.json + error.txt for a job that raised before it could write them itself (a job
    of another app, or one that failed before ``gender.task.task_wrapper`` ran)."""
    if (job_dir / "failure.json").exists() or (job_dir / "metrics.json").exists():
        return
    exc = getattr(job_return, "_return_value", None)
    if not isinstance(exc, BaseException):
        exc = RuntimeError("job failed (no exception object)")
    record_failure(job_dir, exc, tuple(getattr(job_return, "overrides", None) or ()))


class SweepSummaryCallback(Callback):
    """Keeps ``SWEEP_DIR/summary.*`` current during a multirun.

    ``on_job_end`` runs after every job, failed ones included, *before* the basic sweeper raises
    the first failure (which skips ``on_multirun_end`` and makes Hydra exit non-zero): so the
    summary exists even for a sweep that failed. ``on_multirun_end`` rebuilds it once more after
    all jobs (and after the Optuna sweeper wrote ``optimization_results.yaml``). Single runs are
    left alone. A summary error is logged, never raised: it must not cost a job its result.
    ``extra_columns``: keys of the jobs' ``metrics.json`` shown as table columns.
    """

    def __init__(
        self, enabled: bool = True, record_failures: bool = True, extra_columns: Sequence[str] = ()
    ) -> None:
        self.enabled = enabled
        self.record_failures = record_failures
        self.extra_columns = [str(c) for c in extra_columns or ()]

    def _summarize(self, sweep_dir: Path | None, when: str) -> None:
        if sweep_dir is None or not sweep_dir.is_dir():
            return
        try:
            summary = summarize(sweep_dir, self.extra_columns)
        except NoJobsError:
            return
        except Exception as exc:  # the summary is a by-product: never fail a job over it
            log.warning("sweep summary (%s) failed: %s: %s", when, type(exc).__name__, exc)
            return
        log.info("Sweep summary (%s): %s", when, summary.files["summary.md"])

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if not self.enabled or not _is_multirun(config):
            return
        sweep_dir = _sweep_dir(config)
        out = OmegaConf.select(config, "hydra.runtime.output_dir", default=None)
        job_dir = Path(str(out)) if out else None
        if (
            self.record_failures
            and job_dir is not None
            and job_return is not None
            and getattr(job_return, "status", None) == JobStatus.FAILED
        ):
            try:
                record_job_failure(job_dir, job_return)
            except OSError as exc:
                log.warning("could not record failure in %s: %s", job_dir, exc)
        if job_dir is not None and (sweep_dir is None or sweep_dir not in job_dir.parents):
            sweep_dir = job_dir.parent
        self._summarize(sweep_dir, "job end")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled or not _is_multirun(config):
            return
        self._summarize(_sweep_dir(config), "multirun end")
