"""Sweep summary: a ranked table, a figure over the swept keys, every job's curves and two pages,
from the jobs' own files.

Every number comes from what each job wrote into its own folder (``.hydra/``, ``metrics.json``
or ``failure.json``, ``history.csv``), so the summary can be rebuilt at any time
(``python -m gender.report SWEEP_DIR``) and agrees with the jobs even when the sweep crashed.

- ``jobs``: reading job folders (``collect_jobs``, ``JobRecord``, ``swept_keys``);
- ``figures``: the figure over the swept keys and the learning curves of all jobs;
- ``table``: one ``Table`` rendered as CSV, JSON, Markdown, HTML and terminal text;
- ``pages``: ``summary.md`` and ``index.html`` around the table;
- ``summary``: ``summarize(SWEEP_DIR, extra_columns=())``, the one entry point;
- ``callback``: ``SweepSummaryCallback``, the Hydra callback (``hydra.callbacks.sweep_summary``).

Nothing here imports TensorFlow: the callback runs in the launching process, which must stay free
of it so parallel launchers can fork/spawn clean workers.
"""

from gender.sweep_summary.callback import SweepSummaryCallback
from gender.sweep_summary.jobs import JobRecord, collect_jobs, reproduce_command, swept_keys
from gender.sweep_summary.summary import TERMINAL_COLUMNS, NoJobsError, SweepSummary, summarize

__all__ = [
    "TERMINAL_COLUMNS",
    "JobRecord",
    "NoJobsError",
    "SweepSummary",
    "SweepSummaryCallback",
    "collect_jobs",
    "reproduce_command",
    "summarize",
    "swept_keys",
]
