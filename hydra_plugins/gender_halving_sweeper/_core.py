"""The halving logic, free of Hydra's plugin machinery so tests call it directly.

Rungs, the search space, who goes on, and the few files of a job directory the sweeper touches
between rungs (the run-directory contract in docs/ARCHITECTURE.md): ``metrics.json``,
``history.csv``, ``checkpoints/fit_complete.json`` and ``checkpoints/backup/`` (the resume state).
Hydra's plugin scan skips modules whose name starts with ``_``, so this one loads only when a
sweep runs.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gender.checkpoints import backup_dir, fit_marker, history_rows, restored_epoch
from gender.io import read_json
from gender.sweep_summary.jobs import RUNG_METRICS, RUNGS_JSON

RUNGS_FILE = RUNGS_JSON  # the sweep summary reads it (gender.sweep_summary.jobs)
DIRECTIONS = ("maximize", "minimize")


class HalvingError(ValueError):
    """A setting or a job directory that successive halving cannot work with."""


# ------------------------------------------------------------------------------------- rungs
def rung_schedule(
    max_epochs: int, min_epochs: int = 1, eta: int = 3, rungs: Sequence[int] | None = None
) -> list[int]:
    """Epochs at the end of each rung, increasing, the last one ``max_epochs``.

    Geometric from ``min_epochs`` by ``eta`` (1, 3, 9, ...); the last rung is stretched to
    ``max_epochs`` instead of adding a short one after it: max 10 gives 1, 3, 10 (not 1, 3, 9,
    10), max 4 gives 1, 4, max 2 gives 1, 2 (the first rung is always ``min_epochs``). Explicit
    ``rungs`` are used as given (sorted, those below max_epochs), followed by max_epochs.
    """
    max_epochs, min_epochs, eta = int(max_epochs), int(min_epochs), int(eta)
    if max_epochs < 1:
        raise HalvingError(f"max_epochs={max_epochs} is invalid: must be >= 1")
    if rungs:
        chosen = sorted({int(r) for r in rungs if 0 < int(r) < max_epochs})
        return [*chosen, max_epochs]
    if min_epochs < 1:
        raise HalvingError(f"hydra.sweeper.min_epochs={min_epochs} is invalid: must be >= 1")
    if eta < 2:
        raise HalvingError(f"hydra.sweeper.eta={eta} is invalid: must be >= 2")
    schedule = []
    epochs = min_epochs
    while epochs < max_epochs:
        schedule.append(epochs)
        epochs *= eta
    if len(schedule) > 1 and max_epochs < schedule[-1] * eta:
        schedule.pop()  # less than eta x before the end: stretch that rung to max_epochs instead
    return [*schedule, max_epochs]


def n_promoted(n: int, eta: int) -> int:
    """How many of a rung's ``n`` configurations go on: the best 1/eta, at least one."""
    return max(1, n // int(eta))


# ------------------------------------------------------------------------------- search space
@dataclass
class SearchSpace:
    """Swept keys -> their values (discrete) or an interval; ``fixed`` overrides go to every job."""

    choices: dict[str, list[str]] = field(default_factory=dict)
    intervals: dict[str, tuple[float, float, bool]] = field(default_factory=dict)  # (lo, hi, log)
    fixed: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # the swept keys, in the order given


def parse_space(overrides: Iterable[Any]) -> SearchSpace:
    """Parsed Hydra overrides (``OverridesParser.parse_overrides``) -> a search space.

    A later override of the same key replaces an earlier one, so the command line beats the
    preset's ``hydra.sweeper.params``, as with Hydra's basic sweeper.
    """
    by_key: dict[str, Any] = {}
    for override in overrides:  # a key keeps its first position, takes its last value
        by_key[override.get_key_element()] = override
    space = SearchSpace()
    for key, override in by_key.items():
        if not override.is_sweep_override():
            space.fixed.append(f"{key}={override.get_value_element_as_str()}")
            continue
        space.keys.append(key)
        if override.is_discrete_sweep():
            space.choices[key] = list(override.sweep_string_iterator())
        elif override.is_interval_sweep():
            sweep = override.value()
            lo, hi = sweep.start, sweep.end
            log = "log" in (sweep.tags or set())
            if log and (lo <= 0 or hi <= 0):
                raise HalvingError(f"{key}: a log interval needs bounds > 0, got ({lo}, {hi})")
            space.intervals[key] = (lo, hi, log)
        else:
            raise HalvingError(f"{key}: unsupported sweep {override.get_value_element_as_str()}")
    return space


def _draw(rng: random.Random, lo: Any, hi: Any, log: bool) -> str:
    if isinstance(lo, int) and isinstance(hi, int) and not log:
        return str(rng.randint(lo, hi))
    value = math.exp(rng.uniform(math.log(lo), math.log(hi))) if log else rng.uniform(lo, hi)
    return format(value, ".4g")


def configurations(space: SearchSpace, n_configs: int | None = None, seed: int = 0) -> list[list[str]]:
    """The swept overrides of every configuration: the grid over the discrete values, or
    ``n_configs`` random draws (intervals uniform / log-uniform, discrete values picked evenly)."""
    if n_configs is None:
        if space.intervals:
            names = ", ".join(space.intervals)
            raise HalvingError(f"{names}: an interval needs random draws: set hydra.sweeper.n_configs=N")
        return [
            [f"{k}={v}" for k, v in zip(space.keys, values, strict=True)]
            for values in itertools.product(*(space.choices[k] for k in space.keys))
        ]
    if int(n_configs) < 1:
        raise HalvingError(f"hydra.sweeper.n_configs={n_configs} is invalid: must be >= 1")
    rng = random.Random(int(seed))
    drawn = []
    for _ in range(int(n_configs)):
        config = []
        for key in space.keys:
            if key in space.choices:
                config.append(f"{key}={rng.choice(space.choices[key])}")
            else:
                config.append(f"{key}={_draw(rng, *space.intervals[key])}")
        drawn.append(config)
    return drawn


# ------------------------------------------------------------------------------ configurations
@dataclass
class Trial:
    """One configuration of the search space and where it got to."""

    id: int
    overrides: list[str]
    dir: str | None = None  # its job directory, relative to the sweep dir (absolute if outside)
    status: str = "pending"  # pending, running, promoted, stopped, finished, failed
    rung: int | None = None  # the last rung it was launched in
    epochs: int = 0  # epochs trained so far (history.csv rows)
    values: dict[int, float | None] = field(default_factory=dict)  # rung epochs -> metric
    job_nums: list[int] = field(default_factory=list)
    error: str | None = None
    note: str | None = None

    @property
    def value(self) -> float | None:
        return self.values[max(self.values)] if self.values else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dir": self.dir,
            "overrides": self.overrides,
            "params": dict(o.split("=", 1) for o in self.overrides),
            "status": self.status,
            "rung": self.rung,
            "epochs": self.epochs,
            "value": self.value,
            "values": {str(k): v for k, v in sorted(self.values.items())},
            "job_nums": self.job_nums,
            "error": self.error,
            "note": self.note,
        }


def rank(trials: Sequence[Trial], direction: str) -> list[Trial]:
    """Best first by their latest metric; a missing or NaN metric ranks last; ties by id."""
    sign = -1.0 if direction == "maximize" else 1.0

    def key(t: Trial) -> tuple[int, float, int]:
        v = t.value
        bad = v is None or isinstance(v, float) and math.isnan(v)
        return (1 if bad else 0, 0.0 if bad else sign * float(v), t.id)

    return sorted(trials, key=key)


# ------------------------------------------------------------------------------ job directories
def metric_of(job_dir: Path, metric: str, return_value: Any = None) -> float | None:
    """``metric`` from the job's metrics.json, else the job's return value when it is a number."""
    value = (read_json(job_dir / "metrics.json") or {}).get(metric)
    if value is None:
        value = return_value
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def history_epochs(job_dir: Path) -> int:
    """Epochs in the job's history.csv."""
    return len(history_rows(job_dir / "history.csv"))


def resume_epoch(job_dir: Path) -> int | None:
    """The epoch the job's resume state (Keras BackupAndRestore) would continue after, or None."""
    return restored_epoch(job_dir) or None


def archived_metrics(job_dir: Path, epochs: int) -> Path:
    return job_dir / RUNG_METRICS.format(epochs=epochs)


def reopen(job_dir: Path, epochs: int) -> None:
    """Turn a job paused after ``epochs`` back into an interrupted run, which the next launch
    in the same directory continues: its metrics.json is kept as ``metrics.epoch<N>.json`` and
    the finished-fit marker is removed (the resume state in checkpoints/backup stays)."""
    metrics = job_dir / "metrics.json"
    if metrics.exists():
        os.replace(metrics, archived_metrics(job_dir, epochs))
    fit_marker(job_dir).unlink(missing_ok=True)


def drop_resume_state(job_dir: Path) -> None:
    shutil.rmtree(backup_dir(job_dir), ignore_errors=True)


def quote(value: str) -> str:
    """A Hydra override value that stays one string whatever it holds."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
