"""The two pages a person opens: ``summary.md`` and ``index.html``, around the one table."""

from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gender.sweep_summary.jobs import RANK_METRIC, STATUS_ORDER, JobRecord
from gender.sweep_summary.table import format_value

if TYPE_CHECKING:
    from gender.sweep_summary.summary import SweepSummary

#: The per-run plots linked from each job's row in index.html (those that exist).
JOB_PLOTS = ("learning_curves", "confusion_matrix", "roc", "reliability")


def counts(jobs: list[JobRecord]) -> str:
    found = {s: sum(j.status == s for j in jobs) for s in STATUS_ORDER}
    return ", ".join(f"{n} {s}" for s, n in found.items() if n)


def figure_heading(kind: str, keys: list[str]) -> str:
    return {
        "by_job": f"{RANK_METRIC} per job",
        "by_param": f"{RANK_METRIC} by {keys[0] if keys else ''}",
        "heatmap": f"{RANK_METRIC} over {' x '.join(keys[:2])}",
        "scatter": f"{RANK_METRIC} over {' x '.join(keys[:2])}",
        "parallel": f"{RANK_METRIC} across {', '.join(keys)} (parallel coordinates)",
    }[kind]


def _best_sentence(summary: SweepSummary) -> str:
    best = summary.best
    assert best is not None
    extra = f", test_accuracy {format_value(best.test_accuracy)}" if best.test_accuracy is not None else ""
    return (
        f"Job {best.label} (`{summary.relative(best)}/`) is best by {RANK_METRIC} (the validation "
        f"accuracy of its checkpointed epoch; ties go to the lower val_loss): "
        f"**{format_value(best.val_accuracy)}**{extra}, epochs run {best.epochs_run}."
    )


def markdown(summary: SweepSummary) -> str:
    jobs, best = summary.jobs, summary.best
    out = [
        f"# Sweep summary: `{summary.sweep_dir.name}`",
        "",
        f"{len(jobs)} jobs ({counts(jobs)}) in `{summary.sweep_dir}`. "
        f"Generated {datetime.now().isoformat(timespec='seconds')} from each job's "
        "`metrics.json` / `failure.json` / `history.csv` / `.hydra/`.",
        "",
        "## Best configuration",
        "",
    ]
    if best is None:
        out.append("No job has completed yet.")
    else:
        out.append(_best_sentence(summary))
        params = ", ".join(f"`{k}={format_value(best.params.get(k))}`" for k in summary.swept_keys)
        if params:
            out += ["", f"Swept values: {params}."]
        out += ["", "Reproduce it as a single run:", "", "```bash", summary.best_command or "", "```"]
    if summary.optuna:
        out += [
            "",
            "Optuna (`optimization_results.yaml`): best value "
            f"{format_value(summary.optuna.get('best_value'))}, best params "
            f"`{summary.optuna.get('best_params')}`.",
        ]
    failed = [j for j in jobs if j.status == "failed"]
    if failed:
        out += ["", "## Failed jobs", ""]
        out += [f"- {j.label} (`{summary.relative(j)}/`): {j.error}" for j in failed]
    out += [
        "",
        f"## {figure_heading(summary.figure_kind, summary.swept_keys)}",
        "",
        f"![{summary.figure_kind}]({summary.figure.name})",
        "",
        "## Learning curves",
        "",
        f"![learning curves]({summary.curves.name})",
        "",
        "## All jobs",
        "",
        summary.table.to_markdown(),
    ]
    return "\n".join(out)


def _job_links(summary: SweepSummary, job: JobRecord) -> tuple[dict[str, str], str]:
    """(cell links, the links column's HTML) for one job: its folder, plots and W&B run."""
    rel = summary.relative(job)
    links = {"job": f"{rel}/", "dir": f"{rel}/"}
    parts = [f"<a href='{html.escape(rel, quote=True)}/'>folder</a>"]
    for name in JOB_PLOTS:
        if (job.path / "plots" / f"{name}.png").is_file():
            href = html.escape(f"{rel}/plots/{name}.png", quote=True)
            parts.append(f"<a href='{href}'>{name.replace('_', ' ')}</a>")
    run = job.wandb or {}
    if run.get("url"):
        parts.append(f"<a href='{html.escape(run['url'], quote=True)}'>W&amp;B run</a>")
    elif run.get("id"):
        parts.append(f"W&amp;B run <code>{html.escape(str(run['id']))}</code> (not synced)")
    return links, " · ".join(parts)


def index_html(summary: SweepSummary) -> str:
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
        f"<p>{len(jobs)} jobs ({esc(counts(jobs))}) in <code>{esc(str(summary.sweep_dir))}</code>."
        " Derived from each job's own files.</p>",
        "<h2>Best configuration</h2>",
    ]
    if best is None:
        parts.append("<p>No job has completed yet.</p>")
    else:
        sentence = esc(_best_sentence(summary)).replace("**", "")
        parts.append(f"<p>{sentence}</p>")
        parts.append(f"<pre>{esc(summary.best_command or '')}</pre>")
    if summary.optuna:
        parts.append(
            f"<p>Optuna best value {format_value(summary.optuna.get('best_value'))}, best "
            f"params <code>{esc(str(summary.optuna.get('best_params')))}</code></p>"
        )
    heading = figure_heading(summary.figure_kind, summary.swept_keys)
    parts += [
        f"<h2>{esc(heading)}</h2>",
        f"<img src='{esc(summary.figure.name, quote=True)}' alt='{esc(heading, quote=True)}'>",
        "<h2>Learning curves</h2>",
        f"<img src='{esc(summary.curves.name, quote=True)}' alt='learning curves'>",
        "<h2>All jobs</h2>",
    ]
    classes, links, extra = [], [], []
    for job in jobs:
        classes.append("best" if job is best else ("failed" if job.status == "failed" else ""))
        cell_links, column = _job_links(summary, job)
        links.append(cell_links)
        extra.append(column)
    parts.append(summary.table.to_html(classes, links, ("links", extra)))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def relative_to(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def summary_doc(summary: SweepSummary) -> dict[str, Any]:
    best = summary.best
    return {
        "sweep_dir": str(summary.sweep_dir),
        "n_jobs": len(summary.jobs),
        "status_counts": {s: sum(j.status == s for j in summary.jobs) for s in STATUS_ORDER},
        "swept_keys": summary.swept_keys,
        "rank_metric": RANK_METRIC,
        "figure": summary.figure.name,
        "best": None
        if best is None
        else {
            "job": best.num,
            "dir": summary.relative(best),
            "val_accuracy": best.val_accuracy,
            "test_accuracy": best.test_accuracy,
            "overrides": best.overrides,
            "params": {k: best.params.get(k) for k in summary.swept_keys},
            "command": summary.best_command,
            "wandb_run": (best.wandb or {}).get("url") or (best.wandb or {}).get("id"),
        },
        "optuna": summary.optuna,
        "jobs": summary.table.to_records(),
    }
