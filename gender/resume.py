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

import csv
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from gender.errors import FinishedRunError, UserError

#: Keys a resume may change: they do not alter what the remaining epochs compute (threads,
#: console output, where the decode cache lives, tracking). ``trainer.epochs`` may grow or shrink
#: (not below the epochs already run) when the learning rate does not depend on it
#: (``optimizer.schedule=constant``); ``trainer.stop_at_epoch`` only says where to pause (the
#: schedule follows ``trainer.epochs``). Anything else means another experiment: a new run.
SAFE_ON_RESUME = (
    "trainer.epochs",
    "trainer.stop_at_epoch",
    "trainer.verbose",
    "trainer.intra_op_threads",
    "trainer.inter_op_threads",
    "data.decode_workers",
    "data.cache_in_memory",
    "paths.cache_dir",
    "logger.*",
)


def _safe(key: str) -> bool:
    return any(key == k or (k.endswith(".*") and key.startswith(k[:-1])) for k in SAFE_ON_RESUME)


def is_finished(run_dir: Path) -> bool:
    return (Path(run_dir) / "metrics.json").exists()


def recorded_config_file(run_dir: Path) -> Path:
    return Path(run_dir) / ".hydra" / "config.yaml"


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def _epochs_done(run_dir: Path) -> int:
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        return 0
    with open(path, newline="") as f:
        return sum(1 for _ in csv.DictReader(f))


def _show(value: Any) -> str:
    return "(unset)" if value is _ABSENT else str(value)


_ABSENT = object()


def config_changes(run_dir: Path, cfg: Any) -> tuple[list[str], list[str]]:
    """Compare a newly composed config with the one recorded in ``run_dir/.hydra/config.yaml``.

    Returns (refused, allowed): one ``key (recorded -> new)`` entry per difference. Values are
    compared as written (interpolations unresolved), so only what the user or the config files
    changed counts. A key only one side has (the code added or removed a config key since the run
    started) is allowed: it is reported, not refused.
    """
    from omegaconf import OmegaConf

    try:
        recorded = _flat(OmegaConf.to_container(OmegaConf.load(recorded_config_file(run_dir)), resolve=False))
    except Exception as e:  # noqa: BLE001 - a damaged record: say which file, do not guess
        raise UserError(
            f"cannot read the recorded configuration {recorded_config_file(run_dir)} "
            f"({type(e).__name__}); restore it or start a new run"
        ) from None
    new = OmegaConf.to_container(cfg, resolve=False)
    new.pop("hydra", None)
    new = _flat(new)
    refused, allowed = [], []
    schedule = recorded.get("optimizer.schedule", "constant")
    for key in sorted(set(recorded) | set(new)):
        old, now = recorded.get(key, _ABSENT), new.get(key, _ABSENT)
        if old == now:
            continue
        entry = f"{key} ({_show(old)} -> {_show(now)})"
        if old is _ABSENT or now is _ABSENT:
            allowed.append(entry)
        elif key == "trainer.epochs":
            done = _epochs_done(run_dir)
            if schedule != "constant":
                refused.append(
                    f"{entry}: optimizer.schedule={schedule} spreads the learning rate over trainer.epochs"
                )
            elif not isinstance(now, int) or now < done:
                refused.append(f"{entry}: {done} epochs already ran")
            else:
                allowed.append(entry)
        elif _safe(key):
            allowed.append(entry)
        else:
            refused.append(entry)
    return refused, allowed


def check_resumable(run_dir: Path, cfg: Any) -> str:
    """What a command aimed at an existing run directory may do, before anything is written there.

    A finished run (``metrics.json``) is never touched: FinishedRunError. An interrupted run
    continues only with its own configuration (up to ``SAFE_ON_RESUME``): otherwise a UserError
    names the differing keys and the resume command. Returns a one-line note for the console.
    """
    run_dir = Path(run_dir)
    if is_finished(run_dir):
        raise FinishedRunError(
            f"{run_dir} holds a finished run (metrics.json); a finished run is never altered: "
            "choose another hydra.run.dir"
        )
    if not recorded_config_file(run_dir).is_file():
        raise UserError(
            f"hydra.run.dir={run_dir} already holds files and is not a run of this "
            "project (no .hydra/config.yaml); its files are never replaced: choose a "
            "new folder"
        )
    refused, allowed = config_changes(run_dir, cfg)
    if refused:
        raise UserError(
            f"{run_dir} holds an interrupted run recorded with other settings: "
            f"{'; '.join(refused)}. Continue it as recorded with  python -m gender.resume "
            f"{run_dir}  (a resume may change only {', '.join(SAFE_ON_RESUME)}; KEY=VALUE with "
            "the recorded value keeps it), or start a new run in another directory"
        )
    changed = f" ({'; '.join(allowed)})" if allowed else ""
    return f"resuming the interrupted run in {run_dir} with its recorded configuration{changed}"


def _key(override: str) -> str:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(override).key_or_group
    except Exception:  # noqa: BLE001 - let Hydra report a malformed override
        return override.split("=", 1)[0].lstrip("+~")


def resume_command(run_dir: Path, extra: list[str] | None = None) -> list[str]:
    """The command that continues ``run_dir``: its own overrides plus its own directory; ``extra``
    overrides (e.g. ``trainer.epochs=20``) replace the recorded ones for the same key."""
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        raise SystemExit(f"error: {run_dir} is not a run directory (no .hydra/overrides.yaml)")
    if is_finished(run_dir):
        raise SystemExit(f"error: {run_dir} already finished (metrics.json exists); nothing to resume")
    extra = list(extra or [])
    replaced = {_key(o) for o in extra}
    overrides = [
        o
        for o in yaml.safe_load(overrides_file.read_text()) or []
        if not o.startswith(("hydra.run.dir=", "hydra.sweep.")) and _key(o) not in replaced
    ]
    return [sys.executable, "-m", "gender.run", *overrides, *extra, f"hydra.run.dir={run_dir}"]


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
        from gender.errors import reported_as_one_line

        with reported_as_one_line():
            _check_extra(run_dir, cmd[3:-1], extra)
    print("resuming:", " ".join(cmd[1:]), flush=True)
    os.execv(cmd[0], cmd)


def _check_extra(run_dir: Path, overrides: list[str], extra: list[str]) -> None:
    from hydra import compose, initialize_config_dir

    from gender import CONF_DIR

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
    except Exception:  # noqa: BLE001 - gender.run reports a bad override in its own words
        return
    refused, _ = config_changes(run_dir, cfg)
    if refused:
        raise UserError(
            f"cannot change {'; '.join(refused)} on a resume (a resume may change only "
            f"{', '.join(SAFE_ON_RESUME)}): start a new run for another configuration"
        )


if __name__ == "__main__":
    main()
