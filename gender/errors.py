"""User-facing errors: a mistake the user can fix gets one clear line, never a traceback."""

from __future__ import annotations

import sys
from contextlib import contextmanager


class UserError(Exception):
    """A problem with the user's data or configuration, reported as one line (exit code 2)."""

    exit_code = 2


@contextmanager
def reported_as_one_line():
    """In a CLI: turn a ``UserError`` into ``error: ...`` on stderr and its exit code."""
    try:
        yield
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
