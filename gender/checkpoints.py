"""A run's training state on disk: history.csv, the best epoch's weights, Keras' resume state.

Everything that decides what a resumed or finished run holds lives here, so the callbacks that
write the state (gender.callbacks) and the code that reads it (training, resume) agree.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py

from gender.errors import UserError
from gender.io import atomic_path, write_csv

log = logging.getLogger(__name__)

HISTORY_KEYS = ("accuracy", "loss", "val_accuracy", "val_loss", "learning_rate", "elapsed_seconds")
HISTORY_COLUMNS = ("epoch", *HISTORY_KEYS)
EPOCH_ATTR = "gender_epoch"


def history_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_history(rows: list[dict[str, str]], path: Path) -> None:
    """history.csv, written atomically: a kill mid-write leaves the previous file."""
    write_csv(([r.get(k, "") for k in HISTORY_COLUMNS] for r in rows), list(HISTORY_COLUMNS), path)


def monitor_mode(monitor: str) -> str:
    """Accuracies are maximised, losses minimised."""
    return "max" if "acc" in monitor else "min"


def epoch_rank(values: Mapping[str, Any], monitor: str) -> tuple[float, float]:
    """How good an epoch is, larger better: ``monitor``, then, for an accuracy, the lower
    validation loss. Accuracy on a few thousand images ties often (a small head on descriptors
    tied its first epoch, whose probabilities were far off, with later ones); the first of a tie
    is not the one to keep."""
    if monitor_mode(monitor) == "min":
        return -float(values[monitor]), 0.0
    loss = values.get("val_loss")
    return float(values[monitor]), -float(loss) if loss not in (None, "") else -math.inf


def best_epoch(history: list[dict[str, str]], monitor: str) -> dict[str, str] | None:
    """The history row of the best epoch by ``monitor``: the one ``BestWeights`` checkpointed."""
    rows = [r for r in history if r.get(monitor)]
    if not rows:
        return None
    return max(rows, key=lambda r: epoch_rank(r, monitor))


def fit_marker(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "fit_complete.json"


def backup_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "backup"


def best_weights_path(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "best.weights.h5"


def stamp_epoch(weights: Path, epoch: int) -> None:
    with h5py.File(weights, "a") as f:
        f.attrs[EPOCH_ATTR] = int(epoch)


def best_weights_epoch(run_dir: Path) -> int | None:
    """The epoch whose weights ``best.weights.h5`` holds; None when absent or not stamped
    (written before the stamp existed)."""
    path = best_weights_path(run_dir)
    if not path.exists():
        return None
    try:
        with h5py.File(path, "r") as f:
            return int(f.attrs[EPOCH_ATTR]) if EPOCH_ATTR in f.attrs else None
    except (OSError, KeyError, ValueError):
        return None


def best_weights_row(run_dir: Path, history: list[dict[str, str]], monitor: str) -> dict[str, str] | None:
    """The history row of the epoch the best weights hold: what metrics.json must describe.
    Without a stamp (older runs), the history's best by ``monitor``; None without weights."""
    if not best_weights_path(run_dir).exists():
        return None
    epoch = best_weights_epoch(run_dir)
    if epoch is None:
        return best_epoch(history, monitor)
    return next((r for r in history if int(r["epoch"]) == epoch), None)


def restored_epoch(run_dir: Path) -> int:
    """Epochs the resume state holds (Keras continues after them); 0 for a fresh start."""
    metadata = backup_dir(run_dir) / "training_metadata.json"
    try:
        return int(json.loads(metadata.read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def prepare_resume(run_dir: Path) -> int:
    """Before ``fit`` continues a run: a loadable resume state (``repair_backup``), and records
    that agree with it. Epochs after the restored one will be trained again, so their history
    rows go, and best weights from such an epoch (or from any epoch, when training starts over)
    go with them: metrics.json then describes weights that exist. Returns the restored epoch."""
    note = repair_backup(run_dir)
    if note:
        log.warning("%s", note)
        print(f"warning: {note}", file=sys.stderr, flush=True)
    restored = restored_epoch(run_dir)
    history_path = run_dir / "history.csv"
    rows = history_rows(history_path)
    kept = [r for r in rows if int(r["epoch"]) <= restored]
    if len(kept) < len(rows):
        log.info(
            "resuming after epoch %d: the %d later epochs in history.csv (interrupted before "
            "their state was saved) are trained again",
            restored,
            len(rows) - len(kept),
        )
        write_history(kept, history_path)
    stamped = best_weights_epoch(run_dir)
    best = best_weights_path(run_dir)
    if best.exists() and (
        (stamped is not None and stamped > restored) or (stamped is None and restored == 0)
    ):
        best.unlink()
    return restored


def _state_problem(weights: Path, metadata: Path) -> str | None:
    """Why the resume state (weights + ``training_metadata.json``) cannot be trusted, or None.

    Keras' BackupAndRestore only falls back to its earlier state when the weights fail to load
    (OSError); an empty or truncated metadata file stops it with a JSONDecodeError, and metadata
    without weights would silently continue from fresh weights at a later epoch."""
    if not metadata.exists():
        return f"{metadata.name} is missing" if weights.exists() else None
    try:
        epoch = json.loads(metadata.read_text())["epoch"]
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(epoch)
    except (OSError, ValueError, KeyError, TypeError):
        return f"{metadata.name} is unreadable (empty or truncated)"
    if not weights.exists():
        return f"{weights.name} is missing"
    try:
        with h5py.File(weights, "r") as f:
            f.visititems(lambda _, obj: obj.shape if isinstance(obj, h5py.Dataset) else None)
    except Exception:  # noqa: BLE001 - h5py raises OSError, KeyError, RuntimeError for damage
        return f"{weights.name} is unreadable (truncated or damaged)"
    return None


def repair_backup(run_dir: Path) -> str | None:
    """Make the resume state in ``checkpoints/backup`` loadable before ``fit`` reads it.

    A damaged latest state (a kill or a full disk while Keras wrote it) is replaced by the earlier
    one (``double_checkpoint``): returns a one-line note saying so. Without a readable earlier
    state: a UserError that says what to delete. None when there is nothing to repair."""
    folder = backup_dir(run_dir)
    latest = (folder / "latest.weights.h5", folder / "training_metadata.json")
    earlier = tuple(Path(f"{p}.bkp") for p in latest)
    if not any(p.exists() for p in (*latest, *earlier)):
        return None  # a fresh start
    problem = _state_problem(*latest)
    if problem is None and latest[1].exists():
        return None
    problem = problem or "the latest state is missing"
    if all(p.exists() for p in earlier) and _state_problem(*earlier) is None:
        for src, dst in zip(earlier, latest, strict=True):
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
        epoch = json.loads(earlier[1].read_text())["epoch"]
        return (
            f"{folder}: the latest resume state is damaged ({problem}); resuming from the "
            f"earlier one, after epoch {epoch}"
        )
    raise UserError(
        f"cannot resume {run_dir}: its resume state is damaged ({problem}) and no "
        f"earlier state is readable; delete {folder} to train this run again from "
        "epoch 1, or start a new run"
    )
