"""``python -m gender.report DIR``: (re)build the summary of a sweep, or of many single runs
(``outputs/runs``), from the jobs' own files.

Useful after a sweep was interrupted, while one is still running, or for a sweep launched
without the summary callback. Never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gender.sweep_summary import TERMINAL_COLUMNS, NoJobsError, summarize


def main(argv: Sequence[str] | None = None) -> int:
    """Print the ranked table and the files written; exit 2 with one line for a dir with no jobs."""
    parser = argparse.ArgumentParser(
        prog="python -m gender.report",
        description="Summarise a Hydra multirun directory (or a folder of single runs): "
        "summary.csv/.md/.json, index.html, a figure over the swept keys and learning_curves.png, "
        "written into that directory.",
    )
    parser.add_argument(
        "sweep_dir",
        type=Path,
        help="the multirun directory (hydra.sweep.dir), "
        "or a folder holding run directories such as outputs/runs",
    )
    parser.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="KEY",
        help="also show this key of the jobs' metrics.json (repeatable)",
    )
    args = parser.parse_args(argv)

    try:
        summary = summarize(args.sweep_dir, args.column)
    except NoJobsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    halving = [c for c in ("halving", "by_rung") if c in summary.table.columns]
    print(summary.table.to_text([*TERMINAL_COLUMNS, *summary.swept_keys, *halving, *args.column, "error"]))
    print()
    if summary.best is not None:
        print(f"best: job {summary.best.label}, val_accuracy {summary.best.val_accuracy:.4f}")
        print(f"reproduce: {summary.best_command}")
    else:
        print("best: no job has completed yet")
    print("written:")
    for path in summary.files.values():
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
