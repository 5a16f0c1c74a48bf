"""User-facing errors: a mistake the user can fix gets one clear line, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's data or configuration, reported as one line (exit code 2)."""

    exit_code = 2
