"""A quiet, readable console: one format for log lines, and TensorFlow's start-up chatter gone.

* ``ConsoleFormatter`` and ``BelowLevel`` are what ``conf/hydra/job_logging/gender.yaml`` (and
  ``hydra_logging/gender.yaml``) hand to ``logging.config.dictConfig``: the framework's own INFO
  lines are the bare message, like its printed ``data: ...`` lines; warnings and errors say so
  (``warning: ...``, ``error: ...``, on stderr); other libraries' lines name the library
  (``hydra: Launching 2 jobs locally``). The job's log file keeps timestamps and logger names.
* ``quiet_tensorflow()`` imports TensorFlow with its native start-up lines filtered out (absl's
  "All log messages before absl::InitializeLog()", oneDNN, "Could not find cuda drivers", cuInit
  on a machine without a GPU). ``TF_CPP_MIN_LOG_LEVEL=2`` (set in ``gender/__init__.py``) hides
  the rest, but not what TensorFlow writes before its logging starts. Anything else written to
  stderr meanwhile is passed through.

Nothing here imports TensorFlow at module level: Hydra loads this module to configure logging in
the launching process of a sweep too.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from pathlib import Path

#: Lines TensorFlow writes natively while it starts. C++ INFO/WARNING lines (``I0000 ...``,
#: ``W0000 ...``) are the ones TF_CPP_MIN_LOG_LEVEL=2 asks to hide anyway; ERROR lines go only
#: when they are GPU probing on a machine without a usable GPU.
_STARTUP_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] .*"
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\."
)
_GPU_PROBING = re.compile(
    r"E\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] .*"
    r"(cuInit|CUDA|cuda|cuDNN|cuFFT|cuBLAS|Unable to register .* factory|TensorRT)"
)


def startup_lines_to_keep(text: str, gpu_expected: bool) -> list[str]:
    """The lines of TensorFlow's start-up output worth showing (see ``_STARTUP_NOISE``).

    GPU probing errors are kept where a GPU seems installed but TensorFlow found none: then they
    explain why training runs on the CPU."""
    keep = []
    for line in text.splitlines():
        if not line.strip() or _STARTUP_NOISE.fullmatch(line):
            continue
        if not gpu_expected and _GPU_PROBING.match(line):
            continue
        keep.append(line)
    return keep


def _gpu_installed() -> bool:
    """An NVIDIA driver is present (its device nodes exist), whatever TensorFlow makes of it."""
    return Path("/dev/nvidiactl").exists() or Path("/dev/nvidia0").exists()


def quiet_tensorflow() -> None:
    """Import TensorFlow and probe its devices with the native start-up lines filtered out.

    The job's two gates to TensorFlow call it: ``runtime.configure_runtime`` (training, resume,
    bench) and ``inference.load_model`` (evaluate, predict). Not at the job's start: a mistake the
    job finds first (a bad path or setting) is then one line without waiting for the import
    (5-10 s on a small CPU). Later calls, or a call after TensorFlow is already loaded, do nothing.
    Listing the physical devices does not initialise the runtime, so thread settings and logical
    devices can still be set afterwards.
    """
    if "tensorflow" in sys.modules:  # imported already: its start-up lines are out
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    gpus: list = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr descriptor: import as is
        import tensorflow  # noqa: F401

        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            keep = startup_lines_to_keep(text, gpu_expected=not gpus and _gpu_installed())
            if keep:
                print("\n".join(keep), file=sys.stderr, flush=True)


class ConsoleFormatter(logging.Formatter):
    """``message`` for the framework's INFO lines, ``warning: message`` for its warnings,
    ``hydra: message`` / ``warning: optuna: message`` for other libraries'."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        top = record.name.split(".", 1)[0]
        top = "hydra" if top == "hydra_plugins" else top  # sweepers and launchers are Hydra's too
        if top not in ("gender", "__main__", "root"):
            message = f"{top}: {message}"
        if record.levelno >= logging.WARNING:
            message = f"{record.levelname.lower()}: {message}"
        elif record.levelno < logging.INFO:
            message = f"debug: {message}"
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        return message


class BelowLevel(logging.Filter):
    """Pass records below ``level`` only: INFO to stdout, warnings and errors to stderr."""

    def __init__(self, level: str | int = logging.WARNING) -> None:
        super().__init__()
        self.level = logging.getLevelName(level) if isinstance(level, str) else level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level
