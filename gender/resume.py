"""``python -m gender.resume RUN_DIR``: continue an interrupted run from its last completed epoch.

The run's own ``.hydra/overrides.yaml`` recomposes the same config, and ``hydra.run.dir`` points
back at the same directory, where Keras' BackupAndRestore holds the weights, optimizer state and
epoch of the last completed epoch. SLURM pre-emption (submitit requeues the same job into the same
directory) goes through the same mechanism.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml


def resume_command(run_dir: Path) -> list[str]:
    """The command that continues ``run_dir``: its own overrides plus its own directory."""
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        raise SystemExit(f"error: {run_dir} is not a run directory (no .hydra/overrides.yaml)")
    if (run_dir / "metrics.json").exists():
        raise SystemExit(f"error: {run_dir} already finished (metrics.json exists); nothing to resume")
    overrides = [o for o in yaml.safe_load(overrides_file.read_text()) or []
                 if not o.startswith(("hydra.run.dir=", "hydra.sweep."))]
    return [sys.executable, "-m", "gender.run", *overrides, f"hydra.run.dir={run_dir}"]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        raise SystemExit("usage: python -m gender.resume RUN_DIR")
    cmd = resume_command(Path(argv[0]).resolve())
    print("resuming:", " ".join(cmd[1:]), flush=True)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
