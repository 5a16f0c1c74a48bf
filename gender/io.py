"""Safe file writes: atomic (a crash never leaves a half-written file that looks complete) and
locked where parallel jobs share a folder."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from gender.errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the temp name ends with the real name, so writers that check suffixes (Keras' ``.keras`` and
    # ``.weights.h5``) accept it as it is
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{path.name}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are for the whole team
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def deferred_interrupt():
    """Hold back Ctrl-C (SIGINT) until the block is done, then raise it.

    For checkpoint writes: h5py turns a KeyboardInterrupt raised inside its writes into an
    unrelated TypeError, so the user would see a traceback instead of the resume line. Only the
    main thread can set signal handlers; elsewhere, or where Ctrl-C is ignored (a background job),
    the block runs as is.
    """
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    ):
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:  # None: a handler not set from Python; Python's own raises KeyboardInterrupt
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if received:
        raise KeyboardInterrupt


@contextmanager
def directory_lock(directory: str | os.PathLike):
    """One writer per shared folder at a time (jobs of a parallel sweep share the caches); a
    killed writer's lock goes with its process."""
    with open(Path(directory) / ".lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    return Path(path)


def read_json(path: str | os.PathLike) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when the file is missing, unreadable, or not an object
    (a job folder being written, or damaged)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_csv(rows: Iterable[Sequence[Any]], header: Sequence[str], path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return Path(path)


def _json_default(value: Any) -> Any:
    """Make numpy scalars/arrays and paths JSON-serialisable."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ------------------------------------------------------------------ outputs the user points at
def is_run_dir(folder: str | os.PathLike) -> bool:
    """A folder Hydra wrote a job into (a training run, an evaluation, a prediction)."""
    return (Path(folder) / ".hydra").is_dir()


def _enclosing_run(path: Path) -> Path | None:
    for folder in path.parents:
        if is_run_dir(folder):
            return folder
    return None


def _check_writable(folder: Path, what: str, given: str | os.PathLike) -> None:
    """The first existing folder on the way to ``folder`` must be a writable folder."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{what}={given}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{what}={given}: {existing} is not writable; choose a folder you can write to")


def check_output_file(path: str | os.PathLike, overwrite: bool = False, what: str = "output") -> Path:
    """Refuse before any work to write ``path`` where that would replace a file this command did
    not create: an existing file needs ``overwrite=true``, and the files of a run (a folder
    holding ``.hydra/``: its model, metrics, manifest, ...) or a model file are never replaced."""
    given = path
    target = Path(path).expanduser().absolute()
    real = target.resolve()  # a symlink is judged by what it points at
    if real.is_dir():
        raise UserError(f"{what}={given} is a folder; give a file name (e.g. {what}=predictions.csv)")
    if real.exists():
        run = _enclosing_run(real)
        if run is not None or real.suffix in (".keras", ".h5"):
            owner = f"the run in {run}" if run is not None else "a model"
            raise UserError(
                f"{what}={given} is a file of {owner} and is never replaced; write to another file"
            )
        if not overwrite:
            raise UserError(
                f"{what}={given} already exists; pass overwrite=true to replace it, or choose another file"
            )
    _check_writable(real.parent, what, given)
    return target


def check_new_output_dir(path: str | os.PathLike, what: str = "hydra.run.dir") -> Path:
    """A command's own output folder must be new (or empty): writing into an existing run would
    replace its files (``.hydra/config.yaml``, ``metrics.json``, ...)."""
    folder = Path(path).expanduser().absolute()
    if folder.exists():
        if not folder.is_dir():
            raise UserError(f"{what}={path} is a file, not a folder")
        if any(folder.iterdir()):
            kind = "a run" if is_run_dir(folder) else "files"
            raise UserError(
                f"{what}={path} already holds {kind}; its files are never replaced: choose a new folder"
            )
    _check_writable(folder, what, path)
    return folder


def explicit_override(args: Sequence[str], key: str) -> str | None:
    """The value the command line gives ``key`` (``key=v``, ``+key=v``, ``++key=v``), else None."""

    overrides = [a for a in args if not a.startswith("-") and "=" in a]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - a malformed override is Hydra's to report
        return None
    values = [o.value() for o in parsed if o.key_or_group == key and not o.is_delete()]
    return None if not values or values[-1] is None else str(values[-1])


def _hydra_callback_base() -> type:

    return Callback


class NewOutputDir(_hydra_callback_base()):
    """Hydra callback (``hydra.callbacks`` of evaluate, predict and bench): before Hydra writes
    ``.hydra/*.yaml`` or a log into ``hydra.run.dir``, refuse a folder that already holds files,
    such as a training run (whose recorded config predict reads its class order from)."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:

        folder = OmegaConf.select(config, "hydra.run.dir")
        try:
            check_new_output_dir(folder)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(e.exit_code) from None
