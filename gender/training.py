"""``train(cfg) -> metrics``: data, model, fit, evaluate, outputs and tracking for one job.

The function is plain (no Hydra state) so tests and other tools call it directly; the Hydra
entrypoint in ``gender.run`` only composes the config and hands it over.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from gender.config import dtype_policy
from gender.errors import FinishedRunError, UserError
from gender.io import atomic_path, write_csv, write_json

log = logging.getLogger(__name__)

HISTORY_KEYS = ("accuracy", "loss", "val_accuracy", "val_loss", "learning_rate", "elapsed_seconds")


def configure_runtime(trainer_cfg: Any, seed: int) -> None:
    """Threads, determinism, precision and seeds: process-wide TF state, set before any op runs."""
    import keras
    import tensorflow as tf

    logical_cpus = int(trainer_cfg.get("logical_cpus") or 1)
    if logical_cpus > 1:  # several CPU replicas: runs strategy=mirrored code paths without GPUs
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(logical_cpus)]
            )
        except RuntimeError:  # a second job in the same process: TF is already running
            log.warning(
                "trainer.logical_cpus=%d ignored: TensorFlow already initialised in this process",
                logical_cpus,
            )
    for name, setter, getter in (
        (
            "intra_op_threads",
            tf.config.threading.set_intra_op_parallelism_threads,
            tf.config.threading.get_intra_op_parallelism_threads,
        ),
        (
            "inter_op_threads",
            tf.config.threading.set_inter_op_parallelism_threads,
            tf.config.threading.get_inter_op_parallelism_threads,
        ),
    ):
        value = trainer_cfg.get(name)
        if value and getter() != int(value):
            try:
                setter(int(value))
            except RuntimeError:  # a second job in the same process: TF is already running
                log.warning(
                    "trainer.%s=%s ignored: TensorFlow already initialised in this process", name, value
                )
    from tensorflow.python.framework import config as tf_config

    if trainer_cfg.get("deterministic"):
        tf.config.experimental.enable_op_determinism()
    elif tf_config.is_op_determinism_enabled():
        # process-wide: an earlier job of a sequential sweep turned it on (and it disables XLA)
        tf_config.disable_op_determinism()
    policy = dtype_policy(trainer_cfg.get("mixed_precision"))
    keras.mixed_precision.set_global_policy(native_dtype_policy() if policy == "auto" else policy)
    keras.utils.set_random_seed(int(seed))


def native_dtype_policy() -> str:
    """What ``trainer.mixed_precision=auto`` picks: float16 on GPUs with tensor cores (compute
    capability 7.0+), bfloat16 on CPUs that run it natively (AVX-512 BF16 or AMX, as listed in
    /proc/cpuinfo), else float32: half precision only pays off where the hardware runs it."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
        return "mixed_float16" if capability and capability >= (7, 0) else "float32"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap way to tell
        return "float32"
    return "mixed_bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


def distribution_strategy(name: str):
    """``tf.distribute`` strategy by name; ``default`` is the no-op strategy."""
    import tensorflow as tf

    if name in (None, "default", "none"):
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    from gender.errors import UserError

    raise UserError(f"trainer.strategy={name} is unknown; allowed: default, mirrored, multi_worker")


def _history_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def make_callbacks(cfg: DictConfig, run_dir: Path, epoch_var, random_states: list) -> list:
    """Keras callbacks: per-epoch seeds, learning rate, history CSV, best checkpoint, early stop, resume."""
    import keras

    t = cfg.trainer
    history_path = run_dir / "history.csv"
    previous = _history_rows(history_path)
    best_row = best_weights_row(run_dir, previous, t.checkpoint.monitor)
    best_so_far = float(best_row[t.checkpoint.monitor]) if best_row else None

    class EpochSeeds(keras.callbacks.Callback):
        """Derive every random draw of epoch e from (seed, e) alone: shuffle order, augmentation and
        dropout. A run resumed at epoch e then trains exactly as an uninterrupted one would."""

        def on_epoch_begin(self, epoch, logs=None):
            epoch_var.assign(epoch)
            for i, state in enumerate(random_states):
                state.assign(np.array([int(cfg.seed) * 1000 + epoch, i], dtype=state.dtype))

    class LearningRateLogger(keras.callbacks.Callback):
        """Adds the current learning rate to the epoch logs (Keras 3 does not)."""

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:  # the property evaluates a schedule at the current step; a
                # MirroredVariable (trainer.strategy=mirrored) has no __float__: go through numpy
                lr = self.model.optimizer.learning_rate
                logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))

    class HistoryCSV(keras.callbacks.Callback):
        """Rewrites history.csv atomically each epoch; on resume it keeps the earlier epochs."""

        def __init__(self):
            super().__init__()
            self.rows = previous

        def on_train_begin(self, logs=None):
            # training seconds so far (time-to-accuracy); a resumed run continues the count
            self.offset = float(previous[-1].get("elapsed_seconds") or 0) if previous else 0.0
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            logs["elapsed_seconds"] = self.offset + time.perf_counter() - self.started
            row = {"epoch": str(epoch + 1), **{k: f"{float(logs[k]):.6g}" for k in HISTORY_KEYS if k in logs}}
            self.rows = [r for r in self.rows if int(r["epoch"]) <= epoch] + [row]
            write_csv(
                ([r.get(k, "") for k in ("epoch", *HISTORY_KEYS)] for r in self.rows),
                ["epoch", *HISTORY_KEYS],
                history_path,
            )

    class BestWeights(keras.callbacks.Callback):
        """Keeps the best epoch's weights (``trainer.checkpoint.monitor``), written atomically: a
        process killed mid-write must not leave a corrupt checkpoint to resume from."""

        def __init__(self, monitor: str, best: float | None):
            super().__init__()
            self.monitor, self.best = monitor, best
            self.sign = 1.0 if monitor_mode(monitor) == "max" else -1.0

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(self.monitor)
            if value is None or (self.best is not None and self.sign * (value - self.best) <= 0):
                return
            self.best = float(value)
            with atomic_path(best_weights_path(run_dir)) as tmp:
                self.model.save_weights(tmp)
                _stamp_epoch(tmp, epoch + 1)  # one file says which epoch it holds

    callbacks = [
        EpochSeeds(),
        LearningRateLogger(),
        HistoryCSV(),
        BestWeights(t.checkpoint.monitor, best_so_far),
    ]
    if t.early_stopping.enabled:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=t.early_stopping.monitor,
                patience=int(t.early_stopping.patience),
                min_delta=float(t.early_stopping.min_delta),
                mode=monitor_mode(t.early_stopping.monitor),
            )
        )

    class FitComplete(keras.callbacks.Callback):
        """Marks a finished fit, so a run that dies later (evaluation) resumes without retraining.
        Placed before BackupAndRestore, whose on_train_end deletes the resume state: a kill
        between the two must not leave a run with neither."""

        def on_train_end(self, logs=None):
            write_json({"epochs": len(_history_rows(history_path))}, fit_marker(run_dir))

    callbacks.append(FitComplete())
    # trainer.stop_at_epoch (successive halving): pause after that epoch, on the schedule of the
    # whole trainer.epochs, keeping the resume state so a later run in this directory goes on
    stop_at = int(t.get("stop_at_epoch") or 0)
    paused = 0 < stop_at < int(t.epochs)
    if paused:

        class StopAtEpoch(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch + 1 >= stop_at:
                    self.model.stop_training = True

        callbacks.insert(0, StopAtEpoch())
    # double_checkpoint: if a kill corrupts the latest backup, resume from the one before it
    callbacks.append(
        keras.callbacks.BackupAndRestore(
            str(backup_dir(run_dir)), double_checkpoint=True, delete_checkpoint=not paused
        )
    )
    return callbacks


def monitor_mode(monitor: str) -> str:
    """Accuracies are maximised, losses minimised."""
    return "max" if "acc" in monitor else "min"


def best_epoch(history: list[dict[str, str]], monitor: str) -> dict[str, str] | None:
    """The history row of the best epoch by ``monitor``: the one ``BestWeights`` checkpointed."""
    rows = [r for r in history if r.get(monitor)]
    if not rows:
        return None
    pick = max if monitor_mode(monitor) == "max" else min
    return pick(rows, key=lambda r: float(r[monitor]))


def fit_marker(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "fit_complete.json"


def backup_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "backup"


def best_weights_path(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "best.weights.h5"


EPOCH_ATTR = "gender_epoch"


def _stamp_epoch(weights: Path, epoch: int) -> None:
    import h5py

    with h5py.File(weights, "a") as f:
        f.attrs[EPOCH_ATTR] = int(epoch)


def best_weights_epoch(run_dir: Path) -> int | None:
    """The epoch whose weights ``best.weights.h5`` holds; None when absent or not stamped
    (written before the stamp existed)."""
    import h5py

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
    rows = _history_rows(history_path)
    kept = [r for r in rows if int(r["epoch"]) <= restored]
    if len(kept) < len(rows):
        log.info(
            "resuming after epoch %d: the %d later epochs in history.csv (interrupted before "
            "their state was saved) are trained again",
            restored,
            len(rows) - len(kept),
        )
        write_csv(
            ([r.get(k, "") for k in ("epoch", *HISTORY_KEYS)] for r in kept),
            ["epoch", *HISTORY_KEYS],
            history_path,
        )
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
    import h5py

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


def compile_model(cfg: DictConfig, image_size: int, steps_per_epoch: int, augmentation=None):
    """Build and compile the configured model; training and the benchmark share this."""
    import keras

    from gender.model import build_model
    from gender.optimizer import build_optimizer

    t = cfg.trainer
    model = build_model(cfg.model, image_size, augmentation=augmentation)
    model.compile(
        optimizer=build_optimizer(cfg.optimizer, steps_per_epoch, int(t.epochs)),
        loss=keras.losses.BinaryCrossentropy(label_smoothing=float(t.label_smoothing)),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
        jit_compile=bool(t.jit_compile),
    )
    return model


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train and evaluate one configuration; write every output into ``cfg.paths.output_dir``."""
    from gender.config import validate

    validate(cfg)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "metrics.json").exists():
        raise FinishedRunError(
            f"{run_dir} already holds a finished run (metrics.json); "
            "a finished run is never overwritten: choose another hydra.run.dir"
        )
    (run_dir / "failure.json").unlink(missing_ok=True)  # a resumed run is no longer failed
    env = environment(int(cfg.seed))
    write_json(env, run_dir / "environment.json")
    from gender.tracking import Tracker

    with Tracker.start(cfg, run_dir, job_type="train") as tracker:
        tracker.log_config({"environment": env})
        return _train(cfg, run_dir, tracker)


def _train(cfg: DictConfig, run_dir: Path, tracker) -> dict[str, Any]:
    started = time.perf_counter()
    configure_runtime(cfg.trainer, cfg.seed)
    import warnings

    import keras
    import tensorflow as tf

    from gender import data as gdata
    from gender.augmentation import build_augmentation

    # Keras warns that fit's shuffle does not apply to a tf.data input: ours shuffles per epoch itself
    warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")

    ds = gdata.prepare(cfg.data, int(cfg.seed), cfg.paths.cache_dir)
    print(ds.report.summary(), flush=True)
    gdata.write_manifest(ds.splits, ds.class_names, run_dir / "split.csv", ds.digests)
    gdata.write_data_report(ds.report, run_dir)
    log.info("split: %s", {k: len(v) for k, v in ds.splits.items()})

    t = cfg.trainer
    strategy = distribution_strategy(t.get("strategy", "default"))
    placement = cfg.augmentation.get("placement", "pipeline")
    with strategy.scope():
        augment = build_augmentation(cfg.augmentation, seed=int(cfg.seed))
        train_ds = gdata.with_augmentation(
            ds.train, augment if placement == "pipeline" else None, parallel=not t.deterministic
        )
        if t.get("limit_batches"):
            train_ds = train_ds.take(int(t.limit_batches))
        steps = int(train_ds.cardinality().numpy())  # known: the dataset asserts its cardinality
        model = compile_model(
            cfg, ds.image_size, steps, augmentation=augment if placement == "model" else None
        )
    val_ds = ds.val.prefetch(tf.data.AUTOTUNE)
    if t.get("limit_batches"):
        val_ds = val_ds.take(int(t.limit_batches))
    random_states = [
        v
        for v in [*model.variables, *(augment.variables if augment else [])]
        if "seed_generator_state" in v.path
    ]
    refit = not fit_marker(run_dir).exists()
    if refit:  # before the callbacks read history.csv and the best weights
        prepare_resume(run_dir)
    callbacks = make_callbacks(cfg, run_dir, ds.epoch, random_states) + tracker.keras_callbacks()
    fit_started = time.perf_counter()
    if refit:
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=int(t.epochs),
            callbacks=callbacks,
            verbose=int(t.verbose),
            class_weight=class_weights(t.get("class_weight"), ds.labels("train")),
        )
    else:
        log.info("training already finished in %s: evaluating its best epoch only", run_dir)
    history = _history_rows(run_dir / "history.csv")
    if not history:
        raise UserError("training ran no epoch (trainer.epochs must be >= 1)")
    # training seconds across resumes come from the history; None if the fit predates that column
    elapsed = history[-1].get("elapsed_seconds")
    fit_seconds = float(elapsed) if elapsed else (time.perf_counter() - fit_started if refit else None)
    best_weights = best_weights_path(run_dir)
    # the reported epoch is the one whose weights are saved, so metrics.json describes model.keras
    row = best_weights_row(run_dir, history, t.checkpoint.monitor) if t.checkpoint.restore_best else None
    best = row or history[-1]
    if row is not None:
        model.load_weights(str(best_weights))
    jit_compiled = bool(model.jit_compile)  # what ran: Keras may fall back from XLA
    if cfg.model.get("test_time_flip"):
        from gender.model import with_test_time_flip

        with strategy.scope():
            model = with_test_time_flip(model)
    with atomic_path(run_dir / "model.keras") as tmp:
        model.save(tmp)

    result, rows = {}, []
    if ds.splits["test"]:
        from gender.evaluation import format_report
        from gender.scoring import auto_groups, evaluate_model_with_rows

        test = ds.splits["test"]
        groups = {"source": auto_groups(test)} if auto_groups(test) else {}
        kinds = gdata.image_kinds(ds.cache.kinds)
        test_kinds = [kinds[i] for i in ds.indices["test"]]
        if len(set(test_kinds)) > 1:
            groups["kind"] = test_kinds  # tight crops vs photos: one number must not hide either
        result, rows = evaluate_model_with_rows(
            model,
            test,
            ds.class_names,
            ds.image_size,
            run_dir,
            int(cfg.data.batch_size),
            images=ds.cache.images[ds.indices["test"]],
            groups=groups or None,
            predictions_name="predictions_test.csv",
        )
        print(format_report(result), flush=True)
    epochs_run = len(history)
    metrics = {
        "status": "completed",
        "train_accuracy": float(best["accuracy"]),
        "train_loss": float(best["loss"]),
        "val_accuracy": float(best["val_accuracy"]),
        "val_loss": float(best["val_loss"]),
        "best_epoch": int(best["epoch"]),
        "test_accuracy": result.get("accuracy"),
        "test_loss": result.get("loss"),
        "test_accuracy_ci95": result.get("accuracy_ci95"),
        "test_images": result.get("n", 0),
        "epochs_run": epochs_run,
        "wall_seconds": round(time.perf_counter() - started, 2),
        "fit_seconds": None if fit_seconds is None else round(fit_seconds, 2),
        "seconds_per_epoch": None if fit_seconds is None else round(fit_seconds / max(1, epochs_run), 2),
        "parameters": int(model.count_params()),
        "runtime": {  # what actually ran: Keras may fall back from XLA, strategies pick devices
            "jit_compile": jit_compiled,
            "dtype_policy": keras.mixed_precision.global_policy().name,
            "replicas": int(strategy.num_replicas_in_sync),
            "deterministic": bool(t.deterministic),
            "test_time_flip": bool(cfg.model.get("test_time_flip")),  # the test figures' model
        },
        "split_sizes": {k: len(v) for k, v in ds.splits.items()},
        "face": {
            "mode": ds.report.face_mode,
            "margin": float(cfg.data.get("face_margin", 0.5)),
            "no_face_found": ds.report.no_face,
        },
        "warnings": list(ds.report.warnings),  # e.g. a test split of one class
        "overrides": _overrides(),
        "params": overridden_values(cfg, _overrides()),
        "test": result,
    }
    write_json(metrics, run_dir / "metrics.json")
    from gender.plots import plot_learning_curves

    plot_learning_curves(
        run_dir / "history.csv", run_dir / "plots" / "learning_curves.png", best_epoch=metrics["best_epoch"]
    )
    tracker.log_summary({k: v for k, v in metrics.items() if not isinstance(v, dict | list)})
    if result:
        tracker.log_evaluation(result, rows, ds.class_names)
    tracker.log_model(run_dir / "model.keras", metrics)  # aliases best + latest, metrics as metadata
    print(format_metrics(metrics, run_dir), flush=True)
    return metrics


def class_weights(mode: str | None, labels: np.ndarray) -> dict[int, float] | None:
    """``balanced``: each class weighs as much in the loss as the other, whatever its share of the
    training images (the model then has no prior for the majority class on balanced photos)."""
    if not mode:
        return None
    if mode != "balanced":
        raise UserError(f"trainer.class_weight={mode} is not an option; allowed: null, balanced")
    counts = np.bincount(labels.astype(int), minlength=2)
    return {c: float(len(labels) / (2 * counts[c])) for c in range(2) if counts[c]}


def environment(seed: int) -> dict[str, Any]:
    """Seed, library versions and git commit: what it takes to reproduce a result."""
    import platform
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    from gender import PROJECT_ROOT

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=PROJECT_ROOT or Path.cwd(), capture_output=True, text=True, timeout=10
            )
            return out.stdout.strip() if out.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            return None

    return {
        "seed": seed,
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "packages": {
            n: ver(n) for n in ("tensorflow", "keras", "numpy", "hydra-core", "omegaconf", "wandb", "pillow")
        },
    }


def overridden_values(cfg: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """The values of the config keys set on the command line (a sweep's swept keys), resolved:
    ``optimizer.lr=0.003`` -> ``{"optimizer.lr": 0.003}``; group choices and hydra.* are left out."""
    from omegaconf import OmegaConf

    out: dict[str, Any] = {}
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        value = None if key.startswith("hydra.") else OmegaConf.select(cfg, key, default=None)
        if isinstance(value, bool | int | float | str):
            out[key] = value
    return out


def _overrides() -> list[str]:
    """The job's command-line overrides when running under Hydra, else []."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:  # noqa: BLE001 - not inside a Hydra job
        return []


def format_metrics(m: dict[str, Any], run_dir: Path) -> str:
    """The final block a person reads at the end of a run."""
    ci = m.get("test_accuracy_ci95") or [float("nan")] * 2

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f}%"

    lines = [
        "=" * 60,
        f"run         {run_dir}",
        f"epochs      {m['epochs_run']} (best {m['best_epoch']}), "
        f"{m['seconds_per_epoch'] or float('nan'):.1f} s/epoch, {m['wall_seconds']:.0f} s total",
        f"train acc   {pct(m['train_accuracy'])}   loss {m['train_loss']:.4f}",
        f"val acc     {pct(m['val_accuracy'])}   loss {m['val_loss']:.4f}",
        f"test acc    {pct(m['test_accuracy'])}   95% CI [{pct(ci[0])}, {pct(ci[1])}]  n={m['test_images']}",
        *(f"WARNING     {w}" for w in m.get("warnings") or []),
        "=" * 60,
    ]
    return "\n".join(lines)
