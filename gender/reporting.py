"""Sweep summary: one table, a heat map, all learning curves and a page, from the jobs' own files.

Every number comes from what each job wrote into its own directory (``.hydra/overrides.yaml``,
``metrics.json`` or ``failure.json``, ``history.csv``), so the summary can be rebuilt at any time
(``python -m gender.report SWEEP_DIR``) and agrees with the jobs even when the sweep crashed.
This module never imports TensorFlow: the Hydra callback runs in the launching process, which
must stay free of TensorFlow so parallel launchers can fork/spawn clean workers.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import html
import io
import json
import logging
import math
import os
import re
import shlex
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from gender.io import atomic_path

log = logging.getLogger(__name__)

#: The columns every summary shows first (the terminal table of ``gender.report`` stops here).
TERMINAL_COLUMNS = ("rank", "job", "status", "val_accuracy", "test_accuracy", "epochs_run", "wall_seconds")

#: Files written into the sweep directory.
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
SUMMARY_JSON = "summary.json"
INDEX_HTML = "index.html"
HEATMAP_PNG = "heatmap.png"
CURVES_PNG = "learning_curves.png"
LOCK_FILE = ".summary.lock"

#: The two swept hyperparameters the heat map is drawn over (x, y).
HEATMAP_X = "optimizer.lr"
HEATMAP_Y = "model.dropout"

#: Override prefixes that only make sense inside a sweep; dropped from the reproduce command.
SWEEP_ONLY_PREFIXES = ("hydra.", "hydra/", "+hydra", "~hydra", "++hydra", "hparams_search=")

#: "unfinished": neither metrics.json nor failure.json yet (still running, or killed).
STATUS_ORDER = {"completed": 0, "unfinished": 1, "failed": 2}
RUN_COMMAND = "python -m gender.run"

_MAX_SEARCH_DEPTH = 3
_MAX_LEGEND = 20
_MAX_GRID_CELLS = 400


class NoJobsError(ValueError):
    """The directory holds no Hydra job directories (nothing to summarise)."""


@dataclass
class JobRecord:
    """One job of a sweep, as read back from its own directory."""

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
    params: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"#{self.num}" if self.num is not None else self.path.name

    def override_dict(self) -> dict[str, str]:
        """``key=value`` overrides as a dict (group choices included, deletions skipped)."""
        out: dict[str, str] = {}
        for item in self.overrides:
            if "=" not in item or item.startswith("~"):
                continue
            key, value = item.split("=", 1)
            out[key.lstrip("+")] = value
        return out


@dataclass
class SweepSummary:
    """What :func:`summarize_sweep` found; also written as ``summary.json``."""

    sweep_dir: Path
    jobs: list[JobRecord]
    swept_keys: list[str]
    best: JobRecord | None
    best_command: str | None
    optuna: dict[str, Any] | None
    files: dict[str, Path]


# --------------------------------------------------------------------------------------------
# reading the jobs' own files


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def _num(value: Any) -> float | None:
    """A finite float, or None: missing or broken values must not break the summary."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _scalar(text: str) -> Any:
    """Parse an override value the way YAML would (``0.003`` -> float, ``adam`` -> str)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float, str, bool)) or value is None else text


def _read_history(path: Path) -> list[dict[str, float]]:
    rows: list[dict[str, float]] = []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            for raw in csv.DictReader(fh):
                row = {k: v for k, v in ((k, _num(v)) for k, v in raw.items() if k) if v is not None}
                if row:
                    rows.append(row)
    except (OSError, csv.Error):
        return []
    return rows


def _job_num(job_dir: Path) -> int | None:
    hydra_cfg = _read_yaml(job_dir / ".hydra" / "hydra.yaml")
    if isinstance(hydra_cfg, dict):
        num = ((hydra_cfg.get("hydra") or {}).get("job") or {}).get("num")
        if isinstance(num, int):
            return num
    match = re.match(r"(\d+)(?:$|[_\-=.])", job_dir.name)
    return int(match.group(1)) if match else None


def _lookup(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return None
        cfg = cfg[part]
    return cfg


def find_job_dirs(sweep_dir: Path) -> list[Path]:
    """Directories under ``sweep_dir`` that Hydra ran a job in (holding .hydra/overrides.yaml)."""
    found: list[Path] = []
    base_depth = len(sweep_dir.parts)
    for root, dirs, _files in os.walk(sweep_dir):
        here = Path(root)
        if (here / ".hydra" / "overrides.yaml").is_file() and here != sweep_dir:
            found.append(here)
            dirs[:] = []
            continue
        if len(here.parts) - base_depth >= _MAX_SEARCH_DEPTH:
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "wandb"]
    return found


def read_job(job_dir: Path) -> JobRecord:
    """Read one job directory; one with neither metrics.json nor failure.json is 'unfinished'."""
    overrides = _read_yaml(job_dir / ".hydra" / "overrides.yaml")
    overrides = [str(o) for o in overrides] if isinstance(overrides, list) else []
    metrics = _read_json(job_dir / "metrics.json")
    failure = _read_json(job_dir / "failure.json")
    history = _read_history(job_dir / "history.csv")

    if metrics is not None and metrics.get("status", "completed") == "completed":
        status, source = "completed", metrics
    elif failure is not None or metrics is not None:
        status, source = "failed", (failure or metrics or {})
    else:
        status, source = "unfinished", {}

    job = JobRecord(
        num=_job_num(job_dir),
        path=job_dir,
        overrides=overrides,
        status=status,
        val_accuracy=_num(source.get("val_accuracy")),
        val_loss=_num(source.get("val_loss")),
        test_accuracy=_num(source.get("test_accuracy")),
        wall_seconds=_num(source.get("wall_seconds")),
        history=history,
    )
    epochs = _num(source.get("epochs_run"))
    job.epochs_run = int(epochs) if epochs is not None else (len(history) or None)
    if status == "failed":
        error = source.get("error") or "failed (no error message recorded)"
        job.error = str(error).strip().splitlines()[0] if str(error).strip() else "failed"
    if job.val_accuracy is None and status == "completed" and history:
        job.val_accuracy = _num(history[-1].get("val_accuracy"))

    params = source.get("params")
    if isinstance(params, dict):
        job.params.update({str(k): v for k, v in params.items()})
    for key, value in job.override_dict().items():
        job.params.setdefault(key, _scalar(value))
    composed = _read_yaml(job_dir / ".hydra" / "config.yaml")
    for key in (HEATMAP_X, HEATMAP_Y):
        if key not in job.params:
            value = _lookup(composed, key)
            if _num(value) is not None:
                job.params[key] = value
    return job


def _sort_key(job: JobRecord) -> tuple[Any, ...]:
    acc = job.val_accuracy if job.val_accuracy is not None else -math.inf
    loss = job.val_loss if job.val_loss is not None else math.inf
    num = job.num if job.num is not None else math.inf
    return (STATUS_ORDER.get(job.status, 3), -acc, loss, num, job.path.name)


def collect_jobs(sweep_dir: Path) -> list[JobRecord]:
    """All jobs of a sweep, best validation accuracy first, failed jobs last."""
    return sorted((read_job(d) for d in find_job_dirs(Path(sweep_dir))), key=_sort_key)


def swept_keys(jobs: Sequence[JobRecord]) -> list[str]:
    """Override keys whose value differs between jobs (what the sweep varied), first seen first."""
    seen: dict[str, set[str]] = {}
    for job in sorted(jobs, key=lambda j: (j.num is None, j.num or 0)):
        for key, value in job.override_dict().items():
            seen.setdefault(key, set()).add(value)
    keys = [k for k, values in seen.items() if len(values) > 1]
    # a key set in only some jobs varies too
    keys += [k for k in seen if k not in keys and any(k not in j.override_dict() for j in jobs)]
    return keys


def reproduce_command(job: JobRecord) -> str:
    """The single-run command that reproduces ``job``: its overrides minus sweep-only ones."""
    kept = [o for o in job.overrides if not o.lstrip().startswith(SWEEP_ONLY_PREFIXES)]
    return " ".join([RUN_COMMAND, *(shlex.quote(o) for o in kept)])


# --------------------------------------------------------------------------------------------
# atomic writes and the lock


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Readers (and a concurrent job's summary) never see half a file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


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


# --------------------------------------------------------------------------------------------
# figures (object-oriented matplotlib, Agg only: no pyplot global state, no display needed)


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def _fmt(value: Any, digits: int = 4) -> str:
    number = _num(value)
    if number is None:
        return "" if value is None else str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{number:.{digits}g}"


def _grid_axes(jobs: Sequence[JobRecord]) -> tuple[list[float], list[float]] | None:
    """Sorted unique x/y values when the jobs form a full grid over (x, y), else None."""
    pairs = {(_num(j.params.get(HEATMAP_X)), _num(j.params.get(HEATMAP_Y))) for j in jobs}
    if any(x is None or y is None for x, y in pairs):
        return None
    xs = sorted({x for x, _ in pairs})
    ys = sorted({y for _, y in pairs})
    if len(xs) * len(ys) != len(pairs) or len(pairs) > _MAX_GRID_CELLS:
        return None
    return xs, ys  # type: ignore[return-value]


def plot_heatmap(jobs: Sequence[JobRecord], path: Path) -> str:
    """Val accuracy over lr x dropout: heat map for a grid, scatter otherwise; returns which."""
    import numpy as np

    have = [
        j
        for j in jobs
        if _num(j.params.get(HEATMAP_X)) is not None or _num(j.params.get(HEATMAP_Y)) is not None
    ]
    grid = _grid_axes(jobs) if len(have) == len(jobs) else None

    if grid is not None:
        xs, ys = grid
        fig = _new_figure(1.6 + 1.1 * len(xs), 1.4 + 0.7 * len(ys))
        ax = fig.add_subplot()
        cells: dict[tuple[int, int], list[JobRecord]] = {}
        for job in jobs:
            key = (ys.index(_num(job.params[HEATMAP_Y])), xs.index(_num(job.params[HEATMAP_X])))
            cells.setdefault(key, []).append(job)
        values = np.full((len(ys), len(xs)), np.nan)
        for (r, c), members in cells.items():
            accs = [j.val_accuracy for j in members if j.val_accuracy is not None]
            if accs:
                values[r, c] = float(np.mean(accs))
        masked = np.ma.masked_invalid(values)
        finite = values[np.isfinite(values)]
        vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if vmin == vmax:
            vmin, vmax = vmin - 0.01, vmax + 0.01
        image = ax.imshow(masked, cmap="viridis", vmin=vmin, vmax=vmax, origin="lower", aspect="auto")
        ax.set_facecolor("#dddddd")
        for (r, c), members in cells.items():
            if np.isfinite(values[r, c]):
                text, colour = f"{values[r, c]:.3f}", "white"
                if (values[r, c] - vmin) / (vmax - vmin) > 0.6:
                    colour = "black"
            else:
                text = "failed" if all(j.status == "failed" for j in members) else members[0].status
                colour = "#aa0000"
            ax.text(c, r, text, ha="center", va="center", color=colour, fontsize=9)
        ax.set_xticks(range(len(xs)), [_fmt(x) for x in xs])
        ax.set_yticks(range(len(ys)), [_fmt(y) for y in ys])
        fig.colorbar(image, ax=ax, label="val_accuracy")
        kind = "grid"
    elif have:
        fig = _new_figure(6.4, 4.6)
        ax = fig.add_subplot()
        ok = [j for j in have if j.val_accuracy is not None]
        bad = [j for j in have if j.val_accuracy is None]
        xs_all = [_num(j.params.get(HEATMAP_X)) for j in have]
        if ok:
            points = ax.scatter(
                [_num(j.params.get(HEATMAP_X)) or 0.0 for j in ok],
                [_num(j.params.get(HEATMAP_Y)) or 0.0 for j in ok],
                c=[j.val_accuracy for j in ok],
                cmap="viridis",
                s=70,
                edgecolors="black",
            )
            fig.colorbar(points, ax=ax, label="val_accuracy")
            best = ok[int(np.argmax([j.val_accuracy for j in ok]))]
            ax.scatter(
                [_num(best.params.get(HEATMAP_X)) or 0.0],
                [_num(best.params.get(HEATMAP_Y)) or 0.0],
                s=260,
                facecolors="none",
                edgecolors="red",
                linewidths=2,
                label="best",
            )
        if bad:
            ax.scatter(
                [_num(j.params.get(HEATMAP_X)) or 0.0 for j in bad],
                [_num(j.params.get(HEATMAP_Y)) or 0.0 for j in bad],
                marker="x",
                color="#aa0000",
                s=60,
                label="failed / no result",
            )
        for job in have:
            ax.annotate(
                job.label,
                (_num(job.params.get(HEATMAP_X)) or 0.0, _num(job.params.get(HEATMAP_Y)) or 0.0),
                textcoords="offset points",
                xytext=(5, 5),
                fontsize=7,
            )
        positive = [x for x in xs_all if x is not None and x > 0]
        if positive and len(positive) == len(xs_all) and max(positive) / min(positive) >= 10:
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on short ranges
        if ok or bad:
            ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
        kind = "scatter"
    else:
        fig = _new_figure(6.4, 4.0)
        ax = fig.add_subplot()
        ax.bar([j.label for j in jobs], [j.val_accuracy or 0.0 for j in jobs], color="tab:blue")
        ax.set_ylabel("val_accuracy")
        kind = "bar"
    if kind != "bar":
        ax.set_xlabel(HEATMAP_X)
        ax.set_ylabel(HEATMAP_Y)
    ax.set_title("val_accuracy per job")
    _save_figure(fig, path)
    return kind


def _job_caption(job: JobRecord, keys: Sequence[str]) -> str:
    parts = [f"{k.split('.')[-1]}={_fmt(job.params.get(k))}" for k in keys if k in job.params]
    return " ".join([job.label, *parts]) + (" (failed)" if job.status == "failed" else "")


def plot_learning_curves(jobs: Sequence[JobRecord], path: Path, keys: Sequence[str]) -> None:
    """Every job's val_accuracy and loss per epoch in one figure; the best job drawn thicker."""
    fig = _new_figure(12.0, 4.8)
    ax_acc, ax_loss = fig.subplots(1, 2)
    from matplotlib import colormaps

    cmap = colormaps["tab20" if len(jobs) > 10 else "tab10"]
    best = jobs[0] if jobs and jobs[0].status == "completed" else None
    drawn = 0
    for i, job in enumerate(jobs):
        if not job.history:
            continue
        epochs = [row.get("epoch", n) for n, row in enumerate(job.history)]
        offset = 1 if min(epochs) == 0 else 0  # Keras counts epochs from 0, people from 1
        epochs = [e + offset for e in epochs]
        colour = cmap(i % cmap.N)
        width = 2.8 if job is best else 1.3
        style = ":" if job.status == "failed" else "-"
        label = _job_caption(job, keys) if drawn < _MAX_LEGEND else None
        val_acc = [row.get("val_accuracy", math.nan) for row in job.history]
        ax_acc.plot(epochs, val_acc, style, color=colour, lw=width, marker="o", ms=3, label=label)
        loss = [row.get("loss", math.nan) for row in job.history]
        val_loss = [row.get("val_loss", math.nan) for row in job.history]
        ax_loss.plot(epochs, loss, style, color=colour, lw=width, marker="o", ms=3)
        ax_loss.plot(epochs, val_loss, "--", color=colour, lw=width, alpha=0.8)
        drawn += 1
    ax_acc.set_title("val_accuracy per epoch")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("val_accuracy")
    ax_loss.set_title("loss per epoch (solid: train, dashed: val)")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if drawn:
        ax_acc.legend(fontsize=7, loc="best")
    else:
        ax_acc.text(0.5, 0.5, "no history.csv yet", ha="center", va="center", transform=ax_acc.transAxes)
    if drawn > _MAX_LEGEND:
        ax_acc.set_title(f"val_accuracy per epoch (legend: first {_MAX_LEGEND} of {drawn})")
    _save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# table and page


def table_rows(jobs: Sequence[JobRecord], keys: Sequence[str]) -> list[dict[str, Any]]:
    """The summary table, one dict per job in ranking order (what summary.csv holds)."""
    rows = []
    for rank, job in enumerate(jobs, start=1):
        row: dict[str, Any] = {
            "rank": rank,
            "job": job.num if job.num is not None else job.path.name,
            "status": job.status,
            "val_accuracy": job.val_accuracy,
            "test_accuracy": job.test_accuracy,
            "epochs_run": job.epochs_run,
            "wall_seconds": None if job.wall_seconds is None else round(job.wall_seconds, 2),
        }
        for key in keys:
            row[key] = job.params.get(key)
        row["overrides"] = " ".join(job.overrides)
        row["error"] = job.error or ""
        row["dir"] = job.path.name
        rows.append(row)
    return rows


def _csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return buf.getvalue()


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Plain fixed-width text table for the terminal."""
    cells = [[_fmt(row.get(c)) if c != "overrides" else str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _md_cell(value: Any) -> str:
    text = _fmt(value) if not isinstance(value, str) else value
    return text.replace("|", "\\|").replace("\n", " ")


def _read_optuna(sweep_dir: Path) -> dict[str, Any] | None:
    data = _read_yaml(sweep_dir / "optimization_results.yaml")
    return data if isinstance(data, dict) else None


def _counts(jobs: Sequence[JobRecord]) -> str:
    counts = {s: sum(j.status == s for j in jobs) for s in STATUS_ORDER}
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n)


def _markdown(summary: SweepSummary, rows: list[dict[str, Any]], columns: list[str]) -> str:
    jobs, best = summary.jobs, summary.best
    out = [f"# Sweep summary: `{summary.sweep_dir.name}`", ""]
    out.append(
        f"{len(jobs)} jobs ({_counts(jobs)}) in `{summary.sweep_dir}`. "
        f"Generated {datetime.now().isoformat(timespec='seconds')} from each job's "
        "`metrics.json` / `failure.json` / `history.csv` / `.hydra/overrides.yaml`."
    )
    out += ["", "## Best configuration", ""]
    if best is None:
        out.append("No job has completed yet.")
    else:
        extra = f", test_accuracy {_fmt(best.test_accuracy)}" if best.test_accuracy is not None else ""
        out.append(
            f"Job {best.label} (`{best.path.name}/`): val_accuracy "
            f"**{_fmt(best.val_accuracy)}**{extra}, epochs run {best.epochs_run}."
        )
        params = ", ".join(f"`{k}={_fmt(best.params.get(k))}`" for k in summary.swept_keys)
        if params:
            out += ["", f"Swept values: {params}."]
        out += [
            "",
            "Reproduce it as a single run:",
            "",
            "```bash",
            summary.best_command or "",
            "```",
        ]
    if summary.optuna:
        out += [
            "",
            "Optuna (`optimization_results.yaml`): best value "
            f"{_fmt(summary.optuna.get('best_value'))}, best params "
            f"`{summary.optuna.get('best_params')}`.",
        ]
    failed = [j for j in jobs if j.status == "failed"]
    if failed:
        out += ["", "## Failed jobs", ""]
        out += [f"- {j.label} (`{j.path.name}/`): {j.error}" for j in failed]
    out += [
        "",
        f"## val_accuracy over {HEATMAP_X} x {HEATMAP_Y}",
        "",
        f"![heat map]({HEATMAP_PNG})",
        "",
        "## Learning curves",
        "",
        f"![learning curves]({CURVES_PNG})",
        "",
        "## All jobs",
        "",
    ]
    out.append("| " + " | ".join(columns) + " |")
    out.append("|" + "|".join("---" for _ in columns) + "|")
    out += ["| " + " | ".join(_md_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _html(summary: SweepSummary, rows: list[dict[str, Any]], columns: list[str]) -> str:
    esc = html.escape
    jobs, best = summary.jobs, summary.best
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Sweep {esc(summary.sweep_dir.name)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1300px}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
        "tr.failed{background:#fde8e8}tr.best{background:#e6f6e6}pre{background:#f4f4f4;padding:8px;"
        "white-space:pre-wrap}img{max-width:100%}</style></head><body>",
        f"<h1>Sweep summary: {esc(summary.sweep_dir.name)}</h1>",
        f"<p>{len(jobs)} jobs ({esc(_counts(jobs))}) in <code>{esc(str(summary.sweep_dir))}</code>."
        " Derived from each job's own files.</p>",
        "<h2>Best configuration</h2>",
    ]
    if best is None:
        parts.append("<p>No job has completed yet.</p>")
    else:
        parts.append(
            f"<p>Job {esc(best.label)}: val_accuracy <b>{_fmt(best.val_accuracy)}</b>"
            f", test_accuracy {_fmt(best.test_accuracy)}, epochs run {best.epochs_run}.</p>"
        )
        parts.append(f"<pre>{esc(summary.best_command or '')}</pre>")
    if summary.optuna:
        parts.append(
            f"<p>Optuna best value {_fmt(summary.optuna.get('best_value'))}, best params "
            f"<code>{esc(str(summary.optuna.get('best_params')))}</code></p>"
        )
    parts += [
        f"<h2>val_accuracy over {HEATMAP_X} x {HEATMAP_Y}</h2>",
        f"<img src='{HEATMAP_PNG}' alt='heat map'>",
        "<h2>Learning curves</h2>",
        f"<img src='{CURVES_PNG}' alt='learning curves'>",
        "<h2>All jobs</h2><table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr>",
    ]
    for row, job in zip(rows, jobs, strict=True):
        cls = "best" if job is best else ("failed" if job.status == "failed" else "")
        cells = "".join(f"<td>{esc(_md_cell(row.get(c)).replace(chr(92) + '|', '|'))}</td>" for c in columns)
        parts.append(f"<tr class='{cls}'>{cells}</tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts) + "\n"


def _summary_json(summary: SweepSummary, rows: list[dict[str, Any]]) -> str:
    best = summary.best
    doc = {
        "sweep_dir": str(summary.sweep_dir),
        "n_jobs": len(summary.jobs),
        "status_counts": {s: sum(j.status == s for j in summary.jobs) for s in STATUS_ORDER},
        "swept_keys": summary.swept_keys,
        "best": None
        if best is None
        else {
            "job": best.num,
            "dir": best.path.name,
            "val_accuracy": best.val_accuracy,
            "test_accuracy": best.test_accuracy,
            "overrides": best.overrides,
            "params": {k: best.params.get(k) for k in summary.swept_keys},
            "command": summary.best_command,
        },
        "optuna": summary.optuna,
        "jobs": rows,
    }
    return json.dumps(doc, indent=2, default=str) + "\n"


def build_summary(sweep_dir: Path) -> SweepSummary:
    """Read every job and write all summary files (no locking: see :func:`summarize_sweep`)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise NoJobsError(f"{sweep_dir} is not a directory")
    jobs = collect_jobs(sweep_dir)
    if not jobs:
        raise NoJobsError(f"no Hydra jobs in {sweep_dir} (expected job dirs with .hydra/overrides.yaml)")
    keys = swept_keys(jobs)
    best = jobs[0] if jobs[0].status == "completed" and jobs[0].val_accuracy is not None else None
    files = {
        name: sweep_dir / name
        for name in (SUMMARY_CSV, SUMMARY_MD, INDEX_HTML, SUMMARY_JSON, HEATMAP_PNG, CURVES_PNG)
    }
    summary = SweepSummary(
        sweep_dir=sweep_dir,
        jobs=jobs,
        swept_keys=keys,
        best=best,
        best_command=reproduce_command(best) if best else None,
        optuna=_read_optuna(sweep_dir),
        files=files,
    )
    rows = table_rows(jobs, keys)
    columns = [
        *TERMINAL_COLUMNS,
        *keys,
        "overrides",
        "error",
        "dir",
    ]
    plot_heatmap(jobs, files[HEATMAP_PNG])
    plot_learning_curves(jobs, files[CURVES_PNG], keys)
    atomic_write_text(files[SUMMARY_CSV], _csv_text(rows, columns))
    atomic_write_text(files[SUMMARY_JSON], _summary_json(summary, rows))
    atomic_write_text(files[SUMMARY_MD], _markdown(summary, rows, columns))
    atomic_write_text(files[INDEX_HTML], _html(summary, rows, columns))
    return summary


def summarize(sweep_dir: Path) -> SweepSummary:
    """:func:`build_summary` under the sweep lock.

    Safe to call from several jobs at once (joblib launcher): callers are serialised with an
    ``fcntl.flock`` on ``SWEEP_DIR/.summary.lock`` and every file is replaced atomically.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise NoJobsError(f"{sweep_dir} is not a directory")
    with sweep_lock(sweep_dir):
        return build_summary(sweep_dir)


def summarize_sweep(sweep_dir: Path) -> Path:
    """Summarise a Hydra multirun directory (locked, atomic); returns the path of ``summary.md``."""
    return summarize(sweep_dir).files[SUMMARY_MD]


# --------------------------------------------------------------------------------------------
# the Hydra callback


def _is_multirun(config: DictConfig) -> bool:
    from hydra.types import RunMode

    mode = OmegaConf.select(config, "hydra.mode", default=None)
    return mode == RunMode.MULTIRUN or str(mode) in ("MULTIRUN", "RunMode.MULTIRUN")


def _sweep_dir(config: DictConfig) -> Path | None:
    sweep = OmegaConf.select(config, "hydra.sweep.dir", default=None)
    return Path(str(sweep)).absolute() if sweep else None


def _record_failure(job_dir: Path, job_return: Any) -> None:
    """Write failure.json + error.txt when a job raised before the job itself could write them."""
    if (job_dir / "failure.json").exists() or (job_dir / "metrics.json").exists():
        return
    exc = getattr(job_return, "_return_value", None)
    if isinstance(exc, BaseException):
        message = f"{type(exc).__name__}: {exc}".strip()
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    else:
        message, trace = "job failed", "job failed (no exception object)\n"
    doc = {
        "status": "failed",
        "error": message.splitlines()[0] if message else "job failed",
        "overrides": list(getattr(job_return, "overrides", None) or []),
        "recorded_by": "gender.reporting.SweepSummaryCallback",
    }
    atomic_write_text(job_dir / "failure.json", json.dumps(doc, indent=2) + "\n")
    atomic_write_text(job_dir / "error.txt", trace)


class SweepSummaryCallback(Callback):
    """Keeps ``SWEEP_DIR/summary.*`` current during a multirun.

    ``on_job_end`` runs after every job, failed ones included, *before* the basic sweeper raises
    the first failure (which skips ``on_multirun_end`` and makes Hydra exit non-zero): so the
    summary exists even for a sweep that failed. ``on_multirun_end`` rebuilds it once more after
    all jobs (and after the Optuna sweeper wrote ``optimization_results.yaml``). Single runs are
    left alone. A summary error is logged, never raised: it must not cost a job its result.
    """

    def __init__(self, enabled: bool = True, record_failures: bool = True) -> None:
        self.enabled = enabled
        self.record_failures = record_failures

    def _summarize(self, sweep_dir: Path | None, when: str) -> None:
        if sweep_dir is None or not sweep_dir.is_dir():
            return
        try:
            path = summarize_sweep(sweep_dir)
        except NoJobsError:
            return
        except Exception as exc:  # the summary is a by-product: never fail a job over it
            log.warning("sweep summary (%s) failed: %s: %s", when, type(exc).__name__, exc)
            return
        log.info("Sweep summary (%s): %s", when, path)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if not self.enabled or not _is_multirun(config):
            return
        from hydra.core.utils import JobStatus

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
                _record_failure(job_dir, job_return)
            except OSError as exc:
                log.warning("could not record failure in %s: %s", job_dir, exc)
        if job_dir is not None and (sweep_dir is None or sweep_dir not in job_dir.parents):
            sweep_dir = job_dir.parent
        self._summarize(sweep_dir, "job end")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled or not _is_multirun(config):
            return
        self._summarize(_sweep_dir(config), "multirun end")
