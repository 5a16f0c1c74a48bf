"""Run folders: a new run lands in a new folder, a finished run is never altered, an interrupted
run continues only with its own configuration.

``gender.run`` calls ``guard_run_dir`` / ``guard_sweep_dir`` before Hydra writes anything;
``gender.resume`` builds the resume command and checks its overrides with ``check_extra``.
A resume recomposes the run's own ``.hydra/overrides.yaml`` into the same directory, where Keras'
BackupAndRestore holds the state of the last completed epoch (SLURM pre-emption goes the same way).
"""

from __future__ import annotations

import csv
import os

#: Keys a resume may change: they do not alter what the remaining epochs compute (threads,
#: console output, where the decode cache lives, tracking). ``trainer.epochs`` may grow or shrink
#: (not below the epochs already run) when the learning rate does not depend on it
#: (``optimizer.schedule=constant``); ``trainer.stop_at_epoch`` only says where to pause (the
#: schedule follows ``trainer.epochs``). Anything else means another experiment: a new run.
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from gender import CONF_DIR
from gender.errors import (
    FinishedRunError,
    UserError,
)
from gender.extras import single_run_overrides
from gender.io import explicit_override

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


def check_extra(run_dir: Path, overrides: list[str], extra: list[str]) -> None:

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


def _hydra_dir(overrides: list[str], key: str) -> str:
    """Where Hydra would put this command's output (``hydra.run.dir`` / ``hydra.sweep.dir``)."""

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    return str(OmegaConf.select(cfg, key))


def _quoted(path: str) -> str:
    """``path`` as a Hydra override value (quoted when it holds characters the grammar parses)."""
    if re.fullmatch(r"[\w/.:@~+-]+", path):
        return path
    return "'" + path.replace("\\", "\\\\").replace("'", "\\'") + "'"


def claim_new_dir(default: str) -> str:
    """Create ``default`` (or ``default_2``, ...) so no other command can land in it: two runs
    started in the same second must not share a directory."""
    Path(default).parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        candidate = default if n == 1 else f"{default}_{n}"
        try:
            os.mkdir(candidate)
            return candidate
        except FileExistsError:
            continue
    raise UserError(f"cannot find a new directory next to {default}")


def guard_run_dir(args: list[str]) -> str | None:
    """Before Hydra writes anything (``.hydra/*.yaml``, the log): a new run lands in a new
    directory; a finished run's directory is refused; an interrupted run's directory continues
    only with its recorded configuration. Returns the ``hydra.run.dir`` override to add when the
    run directory was claimed here, else None."""
    given = explicit_override(args, "hydra.run.dir")
    if given is None:  # the dated default: claim it, so a run started the same second gets another
        try:
            return f"hydra.run.dir={_quoted(claim_new_dir(_hydra_dir(args, 'hydra.run.dir')))}"
        except OSError as e:
            raise UserError(f"cannot create the run directory: {e}") from None
    if "${" in given:  # an interpolation (the W&B sweep file's): check where Hydra will write
        given = _hydra_dir(args, "hydra.run.dir")
    run_dir = Path(given).expanduser().absolute()
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"hydra.run.dir={given} is a file, not a folder")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=args)
        print(check_resumable(run_dir, cfg), file=sys.stderr, flush=True)
        return None
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"hydra.run.dir={given}: cannot create it: {e.strerror}") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise UserError(f"hydra.run.dir={given} is not writable; choose a folder you can write to")
    return None


def guard_sweep_dir(args: list[str]) -> str | None:
    """A sweep never writes into an existing sweep's directory (its jobs' ``.hydra`` and results
    would be replaced); the dated default is claimed so two sweeps never share one."""
    overrides = single_run_overrides(args)
    if overrides is None:
        return None
    given = explicit_override(args, "hydra.sweep.dir")
    if given is None:
        try:
            default = _hydra_dir(overrides, "hydra.sweep.dir")
        except Exception:  # noqa: BLE001 - a composition problem is Hydra's to report
            return None
        try:
            return f"hydra.sweep.dir={_quoted(claim_new_dir(default))}"
        except OSError as e:
            raise UserError(f"cannot create the sweep directory: {e}") from None
    if "${" in given:
        given = _hydra_dir(overrides, "hydra.sweep.dir")
    sweep = Path(given).expanduser().absolute()
    if sweep.exists() and (not sweep.is_dir() or any(sweep.iterdir())):
        jobs = sorted(p.name for p in sweep.iterdir() if (p / ".hydra").is_dir()) if sweep.is_dir() else []
        finished = [j for j in jobs if (sweep / j / "metrics.json").exists()]
        raise UserError(
            f"hydra.sweep.dir={given} already holds {len(jobs)} jobs ({len(finished)} finished); "
            "their files are never replaced: choose a new sweep directory"
            + (
                f", and resume an interrupted job with  python -m gender.resume {sweep}/N"
                if len(finished) < len(jobs)
                else ""
            )
        )
    return None
