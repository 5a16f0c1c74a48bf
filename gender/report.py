"""``python -m gender.report SWEEP_DIR``: (re)build a sweep's summary from its jobs' own files.

Useful after a sweep was interrupted, while one is still running, or for a sweep launched
without the summary callback. Never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gender.reporting import TERMINAL_COLUMNS, NoJobsError, format_table, summarize, table_rows


def main(argv: Sequence[str] | None = None) -> int:
    """Print the ranked table and the files written; exit 2 with one line for a dir with no jobs."""
    parser = argparse.ArgumentParser(
        prog="python -m gender.report",
        description="Summarise a Hydra multirun directory: summary.csv/.md/.json, index.html, "
        "heatmap.png, learning_curves.png, written into the sweep directory.",
    )
    parser.add_argument("sweep_dir", type=Path, help="the multirun directory (hydra.sweep.dir)")
    args = parser.parse_args(argv)

    try:
        summary = summarize(args.sweep_dir)
    except NoJobsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    columns = [*TERMINAL_COLUMNS, *summary.swept_keys, "error"]
    print(format_table(table_rows(summary.jobs, summary.swept_keys), columns))
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
