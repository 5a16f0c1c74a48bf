"""Build the sweep summary: read every job, make the table, the figures and the pages.

``summarize(SWEEP_DIR)`` is the one entry point (the Hydra callback, ``python -m gender.report``
and any sweeper call it); ``extra_columns`` adds keys of the jobs' ``metrics.json`` to the table
(say ``rung`` and ``budget`` for a successive-halving sweeper).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gender.io import atomic_path
from gender.sweep_summary import pages
from gender.sweep_summary.figures import CURVES_PNG, plot_by_params, plot_sweep_curves
from gender.sweep_summary.jobs import (
    RUNGS_JSON,
    JobRecord,
    collect_jobs,
    read_yaml,
    reproduce_command,
    swept_keys,
)
from gender.sweep_summary.table import Table

#: The columns every summary shows first (the terminal table of ``gender.report`` stops here).
TERMINAL_COLUMNS = ("rank", "job", "status", "val_accuracy", "test_accuracy", "epochs_run", "wall_seconds")

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
SUMMARY_JSON = "summary.json"
INDEX_HTML = "index.html"
LOCK_FILE = ".summary.lock"


class NoJobsError(ValueError):
    """The directory holds no Hydra job directories (nothing to summarise)."""


@dataclass
class SweepSummary:
    """What :func:`summarize` found and wrote (``summary.json`` holds the same)."""

    sweep_dir: Path
    jobs: list[JobRecord]
    swept_keys: list[str]
    best: JobRecord | None
    best_command: str | None
    optuna: dict[str, Any] | None
    table: Table
    figure_kind: str
    files: dict[str, Path]

    @property
    def figure(self) -> Path:
        return self.files["figure"]

    @property
    def curves(self) -> Path:
        return self.files["curves"]

    def relative(self, job: JobRecord) -> str:
        return pages.relative_to(job.path, self.sweep_dir)


def make_table(
    jobs: Sequence[JobRecord], keys: Sequence[str], root: Path, extra_columns: Sequence[str] = ()
) -> Table:
    """The summary table, one row per job in ranking order (what summary.csv holds)."""
    extra = [c for c in extra_columns if c not in keys]
    columns = [*TERMINAL_COLUMNS, *keys, *extra, "overrides", "error", "dir"]
    rows = []
    for rank, job in enumerate(jobs, start=1):
        rel = pages.relative_to(job.path, root)
        row: dict[str, Any] = {
            "rank": rank,
            "job": job.num if job.multirun and job.num is not None else rel,
            "status": job.status,
            "val_accuracy": job.val_accuracy,
            "test_accuracy": job.test_accuracy,
            "epochs_run": job.epochs_run,
            "wall_seconds": None if job.wall_seconds is None else round(job.wall_seconds, 2),
            **{key: job.value(key) for key in [*keys, *extra]},
            "overrides": " ".join(job.overrides),
            "error": job.error or "",
            "dir": rel,
        }
        rows.append(row)
    return Table(columns, rows)


def build_summary(sweep_dir: Path, extra_columns: Sequence[str] = ()) -> SweepSummary:
    """Read every job and write all summary files (no locking: see :func:`summarize`)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise NoJobsError(f"{sweep_dir} is not a directory")
    jobs = collect_jobs(sweep_dir)
    if not jobs:
        raise NoJobsError(f"no Hydra jobs in {sweep_dir} (expected job dirs with .hydra/overrides.yaml)")
    keys = swept_keys(jobs, sweep_dir)
    if (sweep_dir / RUNGS_JSON).exists():  # successive halving: where each configuration stopped
        extra_columns = [*extra_columns, "halving", "by_rung"]
    best = jobs[0] if jobs[0].status == "completed" and jobs[0].val_accuracy is not None else None
    optuna = read_yaml(sweep_dir / "optimization_results.yaml")
    kind, figure = plot_by_params(jobs, keys, sweep_dir)
    curves = plot_sweep_curves(jobs, sweep_dir / CURVES_PNG, keys)
    files = {name: sweep_dir / name for name in (SUMMARY_CSV, SUMMARY_MD, INDEX_HTML, SUMMARY_JSON)}
    summary = SweepSummary(
        sweep_dir=sweep_dir,
        jobs=jobs,
        swept_keys=keys,
        best=best,
        best_command=reproduce_command(best) if best else None,
        optuna=optuna if isinstance(optuna, dict) else None,
        table=make_table(jobs, keys, sweep_dir, extra_columns),
        figure_kind=kind,
        files={**files, "figure": figure, "curves": curves},
    )
    write_text(files[SUMMARY_CSV], summary.table.to_csv())
    write_text(files[SUMMARY_JSON], json.dumps(pages.summary_doc(summary), indent=2, default=str) + "\n")
    write_text(files[SUMMARY_MD], pages.markdown(summary))
    write_text(files[INDEX_HTML], pages.index_html(summary))
    return summary


def write_text(path: Path, text: str) -> None:
    """Readers (and a concurrent job's summary) never see half a file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def sweep_lock(sweep_dir: Path) -> Iterator[None]:
    """Exclusive flock on ``sweep_dir/.summary.lock``: parallel jobs summarise one at a time."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / LOCK_FILE, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def summarize(sweep_dir: Path, extra_columns: Sequence[str] = ()) -> SweepSummary:
    """:func:`build_summary` under the sweep lock: safe to call from several jobs at once (joblib,
    submitit); every file is replaced atomically."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise NoJobsError(f"{sweep_dir} is not a directory")
    with sweep_lock(sweep_dir):
        return build_summary(sweep_dir, extra_columns)
