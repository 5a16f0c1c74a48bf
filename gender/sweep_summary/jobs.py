"""Reading job folders: what each job of a sweep (or each of many single runs) left behind.

Generic on purpose: a job is any folder holding ``.hydra/overrides.yaml``; its result is whatever
its ``metrics.json`` (or ``failure.json``) says, kept whole in ``JobRecord.metrics`` so that a
sweeper writing extra keys (say a successive-halving ``rung``) can show them as columns without
a change here. Nothing is imported from the training code: this runs in the process that launches
a sweep, which must stay free of TensorFlow.
"""

from __future__ import annotations

import csv
import math
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gender.io import read_json

#: Override prefixes that only make sense inside a sweep; dropped from the reproduce command.
SWEEP_ONLY_PREFIXES = ("hydra.", "hydra/", "+hydra", "~hydra", "++hydra", "hparams_search=")
#: "unfinished": neither metrics.json nor failure.json yet (still running, or killed).
STATUS_ORDER = {"completed": 0, "unfinished": 1, "failed": 2}
RUN_COMMAND = "python -m gender.run"
#: Written by the successive-halving sweeper (hydra_plugins/gender_halving_sweeper): who stopped where.
RUNGS_JSON = "rungs.json"
#: A promoted job's metrics.json from an earlier rung, kept by that sweeper before it continues.
RUNG_METRICS = "metrics.epoch{epochs}.json"
#: The metric jobs are ranked by (higher is better; ties: lower val_loss, then job number).
RANK_METRIC = "val_accuracy"
WANDB_APP = "https://wandb.ai"

_MAX_SEARCH_DEPTH = 3


@dataclass
class JobRecord:
    """One job, as read back from its own folder."""

    num: int | None
    path: Path
    overrides: list[str]
    status: str
    val_accuracy: float | None = None
    val_loss: float | None = None
    test_accuracy: float | None = None
    epochs_run: int | None = None
    wall_seconds: float | None = None
    error: str | None = None
    #: the swept keys' values: from the overrides, else the composed config (``fill_params``)
    params: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    #: metrics.json (or failure.json) as written, for columns this module does not know about
    metrics: dict[str, Any] = field(default_factory=dict)
    #: ``.hydra/config.yaml`` and the group choices of ``.hydra/hydra.yaml``
    config: dict[str, Any] = field(default_factory=dict)
    choices: dict[str, str] = field(default_factory=dict)
    multirun: bool = True
    #: the job's W&B run: ``id``, ``project``, ``entity``, ``url`` (when known), ``synced``
    wandb: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        """``#3`` for a sweep's job; a single run is named by its overrides, like its W&B run."""
        if self.multirun and self.num is not None:
            return f"#{self.num}"
        return " ".join(self.overrides) or self.path.name

    def override_dict(self) -> dict[str, str]:
        """``key=value`` overrides as a dict (group choices included, deletions skipped)."""
        out: dict[str, str] = {}
        for item in self.overrides:
            if "=" not in item or item.startswith("~"):
                continue
            key, value = item.split("=", 1)
            out[key.lstrip("+")] = value
        return out

    def value(self, key: str) -> Any:
        """A column's value: a swept key, else a top-level key of metrics.json."""
        if key in self.params:
            return self.params[key]
        value = self.metrics.get(key)
        return value if isinstance(value, int | float | str | bool) or value is None else str(value)


def read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def number(value: Any) -> float | None:
    """A finite float, or None: missing or broken values must not break the summary."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def scalar(text: str) -> Any:
    """Parse an override value the way YAML would (``0.003`` -> float, ``adam`` -> str)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, int | float | str | bool) or value is None else text


def read_history(path: Path) -> list[dict[str, float]]:
    rows: list[dict[str, float]] = []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            for raw in csv.DictReader(fh):
                row = {k: v for k, v in ((k, number(v)) for k, v in raw.items() if k) if v is not None}
                if row:
                    rows.append(row)
    except (OSError, csv.Error):
        return []
    return rows


def _lookup(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return None
        cfg = cfg[part]
    return cfg


def read_wandb_run(job_dir: Path) -> dict[str, Any] | None:
    """The job's W&B run as ``gender.tracking`` recorded it (``wandb/run.json``), with its URL
    once an offline run has been synced (W&B leaves ``run-<id>.wandb.synced``) and its entity
    is known."""
    info = read_json(job_dir / "wandb" / "run.json")
    if not info or not info.get("id"):
        return None
    run_id = str(info["id"])
    info["synced"] = bool(info.get("url")) or any(
        (job_dir / "wandb").glob(f"*-{run_id}/run-{run_id}.wandb.synced")
    )
    if not info.get("url") and info["synced"] and info.get("entity") and info.get("project"):
        info["url"] = f"{WANDB_APP}/{info['entity']}/{info['project']}/runs/{run_id}"
    return info


def find_job_dirs(root: Path) -> list[Path]:
    """Folders under ``root`` that Hydra ran a job in (holding ``.hydra/overrides.yaml``)."""
    found: list[Path] = []
    base_depth = len(root.parts)
    for here_str, dirs, _files in os.walk(root):
        here = Path(here_str)
        if (here / ".hydra" / "overrides.yaml").is_file() and here != root:
            found.append(here)
            dirs[:] = []
            continue
        if len(here.parts) - base_depth >= _MAX_SEARCH_DEPTH:
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "wandb")
    return found


def read_job(job_dir: Path) -> JobRecord:
    """Read one job folder; one with neither metrics.json nor failure.json is 'unfinished'."""
    overrides = read_yaml(job_dir / ".hydra" / "overrides.yaml")
    overrides = [str(o) for o in overrides] if isinstance(overrides, list) else []
    metrics = read_json(job_dir / "metrics.json")
    failure = read_json(job_dir / "failure.json")
    history = read_history(job_dir / "history.csv")
    hydra_cfg = (read_yaml(job_dir / ".hydra" / "hydra.yaml") or {}).get("hydra") or {}
    composed = read_yaml(job_dir / ".hydra" / "config.yaml")

    if metrics is not None and metrics.get("status", "completed") == "completed":
        status, source = "completed", metrics
    elif failure is not None or metrics is not None:
        status, source = "failed", (failure or metrics or {})
    else:
        status, source = "unfinished", {}

    num = (hydra_cfg.get("job") or {}).get("num")
    if not isinstance(num, int):
        match = re.match(r"(\d+)(?:$|[_\-=.])", job_dir.name)
        num = int(match.group(1)) if match else None
    job = JobRecord(
        num=num,
        path=job_dir,
        overrides=overrides,
        status=status,
        val_accuracy=number(source.get("val_accuracy")),
        val_loss=number(source.get("val_loss")),
        test_accuracy=number(source.get("test_accuracy")),
        wall_seconds=number(source.get("wall_seconds")),
        history=history,
        metrics=source,
        config=composed if isinstance(composed, dict) else {},
        choices={str(k): str(v) for k, v in ((hydra_cfg.get("runtime") or {}).get("choices") or {}).items()},
        multirun=str(hydra_cfg.get("mode", "MULTIRUN")).upper().endswith("MULTIRUN"),
        wandb=read_wandb_run(job_dir),
    )
    epochs = number(source.get("epochs_run"))
    job.epochs_run = int(epochs) if epochs is not None else (len(history) or None)
    if status == "failed":
        error = str(source.get("error") or "failed (no error message recorded)").strip()
        job.error = error.splitlines()[0] if error else "failed"
    if job.val_accuracy is None and status == "completed" and history:
        job.val_accuracy = number(history[-1].get("val_accuracy"))
    job.params = {key: scalar(value) for key, value in job.override_dict().items()}
    return job


def fill_params(jobs: Sequence[JobRecord], keys: Sequence[str]) -> None:
    """A swept key a job did not override takes the job's own value: its group choice, else its
    composed config (``.hydra/config.yaml``)."""
    for job in jobs:
        for key in keys:
            if key in job.params:
                continue
            if key in job.choices:
                job.params[key] = job.choices[key]
                continue
            value = _lookup(job.config, key)
            if isinstance(value, int | float | str | bool):
                job.params[key] = value


def _sort_key(job: JobRecord) -> tuple[Any, ...]:
    acc = job.val_accuracy if job.val_accuracy is not None else -math.inf
    loss = job.val_loss if job.val_loss is not None else math.inf
    num = job.num if job.num is not None else math.inf
    stopped_early = job.metrics.get("halving") not in (None, "finished")
    return (STATUS_ORDER.get(job.status, 3), stopped_early, -acc, loss, num, str(job.path))


def collect_jobs(root: Path) -> list[JobRecord]:
    """Every job under ``root``, best ``val_accuracy`` first, failed jobs last; the swept keys'
    values filled in for every job. In a successive-halving sweep (``rungs.json``), the jobs that
    reached the full epochs rank before those stopped at an earlier rung, whose accuracy is
    that of fewer epochs, and each job says where it stopped."""
    root = Path(root)
    jobs = [read_job(d) for d in find_job_dirs(root)]
    rungs = read_json(root / RUNGS_JSON)
    if rungs:
        add_rungs(jobs, root, rungs)
    jobs.sort(key=_sort_key)
    fill_params(jobs, swept_keys(jobs, root))
    return jobs


def add_rungs(jobs: Sequence[JobRecord], root: Path, rungs: dict[str, Any]) -> None:
    """Each job's fate in the halving sweep (``halving``: finished, stopped, failed, ...) and its
    metric at the end of each rung it ran (``by_rung``: ``1: 0.88, 4: 0.93``), as columns; a
    promoted job's ``wall_seconds`` sums its launches."""
    trials = {str(c.get("dir")): c for c in rungs.get("configs") or [] if isinstance(c, dict)}
    for job in jobs:
        trial = trials.get(_relative(job.path, root))
        if trial is None:
            continue
        values = dict(trial.get("values") or {})
        if job.status == "completed" and job.epochs_run:  # its own latest rung, maybe not recorded yet
            values[str(job.epochs_run)] = job.val_accuracy
        values = dict(sorted(values.items(), key=lambda kv: int(kv[0])))
        earlier = [read_json(job.path / RUNG_METRICS.format(epochs=e)) for e in values]
        spent = [m["wall_seconds"] for m in earlier if isinstance((m or {}).get("wall_seconds"), int | float)]
        if spent and job.wall_seconds is not None:  # every launch of the configuration, not the last
            job.wall_seconds += sum(spent)
        if job.path.name.isdigit():  # a promoted job is launched again: its folder names it
            job.num = int(job.path.name)
        status = trial.get("status")
        full = rungs.get("max_epochs")
        if job.status == "completed" and isinstance(full, int) and (job.epochs_run or 0) >= full:
            status = "finished"  # the sweeper records it after the job's own summary update
        job.metrics["halving"] = status
        job.metrics["by_rung"] = ", ".join(
            f"{epochs}: {v:.4g}" if isinstance(v, int | float) else f"{epochs}: -"
            for epochs, v in values.items()
        )


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def declared_keys(root: Path) -> list[str]:
    """The keys the sweeper was given (``hydra.sweeper.params`` in ``multirun.yaml``), in order:
    swept even while the jobs so far share a value."""
    doc = read_yaml(Path(root) / "multirun.yaml")
    sweeper = ((doc or {}).get("hydra") or {}).get("sweeper") if isinstance(doc, dict) else None
    params = sweeper.get("params") if isinstance(sweeper, dict) else None
    return [str(k) for k in params] if isinstance(params, dict) else []


def swept_keys(jobs: Sequence[JobRecord], root: Path | None = None) -> list[str]:
    """What the sweep varied: the sweeper's declared keys (when ``root`` holds ``multirun.yaml``),
    then override keys whose value differs between jobs, first seen first. A halving sweeper's
    pause key (``trainer.stop_at_epoch``, set on jobs stopped at a rung) is bookkeeping, not a
    swept key."""
    ignore: set[str] = set()
    keys: list[str] = []
    if root is not None:
        keys = declared_keys(root)
        rungs = read_json(Path(root) / RUNGS_JSON)
        if rungs:
            ignore.add(str(rungs.get("pause_key") or "trainer.stop_at_epoch"))
    seen: dict[str, set[str]] = {}
    for job in sorted(jobs, key=lambda j: (j.num is None, j.num or 0, str(j.path))):
        for key, value in job.override_dict().items():
            seen.setdefault(key, set()).add(value)
    keys += [k for k, values in seen.items() if len(values) > 1 and k not in keys]
    # a key set in only some jobs varies too
    keys += [k for k in seen if k not in keys and any(k not in j.override_dict() for j in jobs)]
    return [k for k in keys if k not in ignore]


def reproduce_command(job: JobRecord) -> str:
    """The single-run command that reproduces ``job``: its overrides minus sweep-only ones."""
    kept = [o for o in job.overrides if not o.lstrip().startswith(SWEEP_ONLY_PREFIXES)]
    return " ".join([RUN_COMMAND, *(shlex.quote(o) for o in kept)])
