"""The one wrapper every command's Hydra task runs in, and the one reader of Hydra's job state.

``task_wrapper`` (after lightning-hydra-template's) hands the task its ``JobInfo`` and turns a
failure into what the user should see: one ``error:`` line for a mistake they can fix, the resume
command after Ctrl-C, ``failure.json`` + ``error.txt`` in a training run's folder so sweep
summaries list it. ``job_info`` is the only place that reads ``HydraConfig``; outside a Hydra job
(tests, other tools calling the library) it is empty. TensorFlow is not started here but where the
task first needs it (``log.quiet_tensorflow``).
"""

from __future__ import annotations

import functools
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from gender.errors import (
    EXIT_INTERRUPTED,
    FinishedRunError,
    UserError,
    describe_write_error,
    silence_unraisable,
    write_error,
)
from gender.io import atomic_path, write_json

T = TypeVar("T")


@dataclass(frozen=True)
class JobInfo:
    """What Hydra knows about the running job."""

    output_dir: Path | None = None
    overrides: tuple[str, ...] = ()  # the command line's overrides (``hydra.overrides.task``)
    multirun: bool = False
    sweep_dir: Path | None = None  # in a multirun: ``hydra.sweep.dir``
    hydra: Any = None  # the whole ``hydra`` node, for the reader that needs more (W&B run names)


def job_info() -> JobInfo:
    """The running Hydra job's state; an empty ``JobInfo`` outside one."""
    if not HydraConfig.initialized():
        return JobInfo()
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    return JobInfo(
        output_dir=Path(str(hc.runtime.output_dir)) if hc.runtime.output_dir else None,
        overrides=tuple(map(str, hc.overrides.task)),
        multirun=multirun,
        sweep_dir=Path(str(hc.sweep.dir)).resolve() if multirun else None,
        hydra=hc,
    )


def record_failure(run_dir: Path, error: BaseException, overrides: tuple[str, ...]) -> None:
    """Leave ``failure.json`` + ``error.txt`` so sweep summaries and people see what went wrong."""
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    write_json(
        {"status": "failed", "error": f"{type(error).__name__}: {message}", "overrides": list(overrides)},
        run_dir / "failure.json",
    )
    with atomic_path(run_dir / "error.txt") as tmp:
        tmp.write_text("".join(traceback.format_exception(error)))


def task_wrapper(
    task: Callable[[DictConfig, JobInfo], T], *, records_failures: bool = False, resume_hint: bool = False
) -> Callable[[DictConfig], T]:
    """Run ``task(cfg, job)`` as a command's Hydra task.

    ``records_failures``: a failed job leaves ``failure.json`` + ``error.txt`` in its folder
    (never in a finished run's). ``resume_hint``: Ctrl-C prints the ``gender.resume`` command.
    In a single run a ``UserError`` or an unwritable output is one ``error:`` line and its exit
    code; in a multirun the error goes on to Hydra, which records the job as failed and runs
    the others."""

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> T:
        job = job_info()
        try:
            return task(cfg, job)
        except (Exception, KeyboardInterrupt) as e:
            interrupted = isinstance(e, KeyboardInterrupt)
            if interrupted:  # a second Ctrl-C must not cut the record short with a traceback
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            problem = write_error(e)
            if records_failures and job.output_dir and not isinstance(e, FinishedRunError):
                try:  # a finished run's directory is never written
                    job.output_dir.mkdir(parents=True, exist_ok=True)
                    record_failure(job.output_dir, e, job.overrides)
                except OSError:  # the disk is full or the folder unwritable: the line below says so
                    pass
            if interrupted:
                hint = f": resume with  python -m gender.resume {job.output_dir}" if resume_hint else ""
                print(f"interrupted{hint}", file=sys.stderr)
                sys.exit(EXIT_INTERRUPTED)
            if problem is not None and not job.multirun:
                silence_unraisable()
                print(f"error: {describe_write_error(problem)}", file=sys.stderr)
                sys.exit(1)
            if isinstance(e, UserError) and not job.multirun:
                print(f"error: {e}", file=sys.stderr)
                sys.exit(e.exit_code)
            raise

    return wrapped
