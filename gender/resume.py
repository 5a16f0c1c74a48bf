"""``python -m gender.resume RUN_DIR [KEY=VALUE ...]``: continue an interrupted run from its last
completed epoch.

The run's own ``.hydra/overrides.yaml`` recomposes the same config, and ``hydra.run.dir`` points
back at the same directory, where Keras' BackupAndRestore holds the weights, optimizer state and
epoch of the last completed epoch. SLURM pre-emption (submitit requeues the same job into the same
directory) goes through the same mechanism.

A run continues only with its own configuration: ``check_resumable`` (called by ``gender.run``
before Hydra writes anything) compares the composed config with the recorded
``.hydra/config.yaml`` and refuses any change outside ``SAFE_ON_RESUME`` with one line naming the
keys; ``KEY=VALUE`` overrides given to ``gender.resume`` are checked the same way.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from gender.errors import reported_as_one_line

#: Keys a resume may change: they do not alter what the remaining epochs compute (threads,
#: console output, where the decode cache lives, tracking). ``trainer.epochs`` may grow or shrink
#: (not below the epochs already run) when the learning rate does not depend on it
#: (``optimizer.schedule=constant``); ``trainer.stop_at_epoch`` only says where to pause (the
#: schedule follows ``trainer.epochs``). Anything else means another experiment: a new run.
from gender.run_dir import SAFE_ON_RESUME, check_extra, resume_command


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or any(a.startswith("-") for a in argv[1:]):
        raise SystemExit(
            "usage: python -m gender.resume RUN_DIR [KEY=VALUE ...]  (only "
            f"{', '.join(SAFE_ON_RESUME)} may change on a resume)"
        )
    run_dir, extra = Path(argv[0]).resolve(), argv[1:]
    cmd = resume_command(run_dir, extra)
    if extra:  # refuse unsafe changes here, with the resume's own wording, before anything runs
        with reported_as_one_line():
            check_extra(run_dir, cmd[3:-1], extra)
    print("resuming:", " ".join(cmd[1:]), flush=True)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
