"""User-facing errors: a mistake the user can fix gets one clear line, never a traceback."""

from __future__ import annotations

import errno
import gc
import os
import re
import sys
from contextlib import contextmanager


class UserError(Exception):
    """A problem with the user's data or configuration, reported as one line (exit code 2)."""

    exit_code = 2


class FinishedRunError(UserError):
    """A command was aimed at a finished run's directory: refused, and nothing is recorded there."""


#: OSError numbers that mean "the output cannot be written here" (full disk, quota, file size
#: limit, read-only or unwritable folder): the user's to fix, never a traceback
WRITE_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EFBIG,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.ENOTDIR,
    errno.EISDIR,
}
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


def write_error(error: BaseException | None) -> OSError | None:
    """The OSError behind ``error`` (itself, or a cause or context: libraries wrap them) whose
    errno says the disk is full or the folder is not writable; None otherwise."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
            return error
        error = error.__cause__ or error.__context__
    return None


def describe_write_error(error: OSError) -> str:
    """One line for a full disk or an unwritable path (h5py puts a whole report in strerror)."""
    name = error.filename
    if name is None:  # h5py: "... filename = '/path/x.h5', file descriptor = ..."
        match = re.search(r"filename = '([^']+)'", str(error))
        name = match.group(1) if match else None
    what = os.strerror(error.errno) if error.errno else str(error).splitlines()[0]
    where = f"{name}: " if name else ""
    hint = (
        "free some space or write elsewhere (hydra.run.dir=..., paths.cache_dir=...)"
        if error.errno in DISK_FULL_ERRNOS
        else "choose a folder you can write to (hydra.run.dir=..., paths.cache_dir=...)"
    )
    return f"cannot write {where}{what}; {hint}"


def silence_unraisable() -> None:
    """After a write failure, libraries that still hold the file (h5py) complain while being
    garbage-collected ("Exception ignored in ..."): the one-line error says it all."""

    sys.unraisablehook = lambda *_: None
    gc.collect()


@contextmanager
def reported_as_one_line():
    """In a CLI: turn a ``UserError`` into ``error: ...`` on stderr and its exit code; a full disk
    or an unwritable folder into one ``error:`` line (exit 1); Ctrl-C into ``interrupted`` (130)."""
    try:
        yield
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except OSError as e:
        problem = write_error(e)
        if problem is None:
            raise
        silence_unraisable()
        print(f"error: {describe_write_error(problem)}", file=sys.stderr)
        raise SystemExit(1) from None
