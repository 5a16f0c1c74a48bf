"""``train(cfg) -> metrics``: one job, top to bottom.

Steps, in the order ``train`` runs them: prepare the data, build the model, fit (or resume),
keep the best epoch's weights and save the model, score the test split, write metrics, plots and
tracking. The function is plain (no Hydra state), so tests and other tools call it directly;
``gender.run`` only composes the config and hands it over. TensorFlow is imported inside the steps
that use it, so a sweep's launching process never loads it.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from gender import data as gdata
from gender import environment
from gender.ages import AgeEstimator
from gender.checkpoints import (
    backup_dir,
    best_weights_path,
    best_weights_row,
    fit_marker,
    history_rows,
    monitor_mode,
    prepare_resume,
    restored_epoch,
)
from gender.config import validate
from gender.errors import FinishedRunError, UserError
from gender.evaluation import balanced_threshold, face_found_column, format_report
from gender.face import FaceSettings
from gender.inference import predict_probs
from gender.io import atomic_path, read_json, write_json
from gender.optimizer import build_optimizer
from gender.plots import plot_learning_curves
from gender.runtime import configure_runtime, distribution_strategy
from gender.scoring import auto_groups, evaluate_model_with_rows
from gender.task import job_info
from gender.tracking import Tracker

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train and evaluate one configuration; write every output into ``cfg.paths.output_dir``."""

    validate(cfg)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "metrics.json").exists():
        raise FinishedRunError(
            f"{run_dir} already holds a finished run (metrics.json); "
            "a finished run is never overwritten: choose another hydra.run.dir"
        )
    if not cfg.data.get("synthetic"):  # a wrong path: one line before TensorFlow and tracking start
        gdata.check_root(cfg.data.root)
    (run_dir / "failure.json").unlink(missing_ok=True)  # a resumed run is no longer failed
    first = read_json(run_dir / "environment.json")  # there already: this run is being resumed
    env = environment.describe(int(cfg.seed))
    with Tracker.start(cfg, run_dir, job_type="train") as tracker:
        started = time.perf_counter()
        env["dtype_policy"] = configure_runtime(cfg.trainer, cfg.seed, (first or {}).get("dtype_policy"))
        # where the run started stays on top; each resume adds the machine it continued on
        record = env if first is None else {**first, "resumed_on": [*first.get("resumed_on", []), env]}
        write_json(record, run_dir / "environment.json")
        tracker.log_config({"environment": env})
        ds = prepare_data(cfg, run_dir)
        job = build(cfg, ds)
        history, fit_seconds = fit(cfg, run_dir, ds, job, tracker)
        best, model = keep_best(cfg, run_dir, job, history)
        threshold = decide_threshold(cfg, ds, model)
        result, rows = score_test(cfg, run_dir, ds, model, threshold)
        metrics = collect_metrics(cfg, ds, job, model, history, best, result, threshold, fit_seconds, started)
        write_outputs(run_dir, metrics, result, rows, ds.class_names, tracker)
        return metrics


@dataclass
class Job:
    """What ``build`` made for ``fit``: the strategy's scope holds the model and augmentation."""

    strategy: Any
    model: Any
    augment: Any
    train_ds: Any
    val_ds: Any


def prepare_data(cfg: DictConfig, run_dir: Path):
    """Decode (or reuse the cache), split, and record the split and the data report in the run."""

    cache_dir = cfg.paths.cache_dir
    class_weight = cfg.trainer.get("class_weight")
    ds = gdata.prepare(cfg.data, int(cfg.seed), cache_dir, class_weight, AgeEstimator(cache_dir))
    print(ds.report.summary(), flush=True)
    gdata.write_manifest(ds.splits, ds.class_names, run_dir / "split.csv", ds.digests)
    gdata.write_data_report(ds.report, run_dir)
    log.info("split: %s", {k: len(v) for k, v in ds.splits.items()})
    return ds


def build(cfg: DictConfig, ds) -> Job:
    """The input pipelines and the compiled model, in the configured distribution strategy."""
    import tensorflow as tf

    from gender.augmentation import build_augmentation, build_mixup

    t = cfg.trainer
    limit = int(t.get("limit_batches") or 0)
    strategy = distribution_strategy(t.get("strategy", "default"))
    in_model = cfg.augmentation.get("placement", "pipeline") == "model"
    with strategy.scope():
        augment = build_augmentation(cfg.augmentation, seed=int(cfg.seed))
        train_ds = gdata.with_augmentation(
            ds.train,
            None if in_model else augment,
            parallel=not t.deterministic,
            mixup=build_mixup(cfg.augmentation, seed=int(cfg.seed)),
        )
        if limit:
            train_ds = train_ds.take(limit)
        steps = int(train_ds.cardinality().numpy())  # known: the dataset asserts its cardinality
        model = compile_model(cfg, ds.image_size, steps, augmentation=augment if in_model else None)
    val_ds = ds.val.prefetch(tf.data.AUTOTUNE)
    if limit:
        val_ds = val_ds.take(limit)
    return Job(strategy, model, augment, train_ds, val_ds)


def compile_model(cfg: DictConfig, image_size: int, steps_per_epoch: int, augmentation=None):
    """Build and compile the configured model; training and the benchmark share this."""
    import keras

    from gender.model import build_model, hard_label_accuracy

    t = cfg.trainer
    shape = FaceSettings.from_config(cfg.data).input_shape(image_size)  # pixels or a descriptor
    model = build_model(cfg.model, shape, augmentation=augmentation)
    model.compile(
        optimizer=build_optimizer(cfg.optimizer, steps_per_epoch, int(t.epochs)),
        loss=keras.losses.BinaryCrossentropy(label_smoothing=float(t.label_smoothing)),
        metrics=[keras.metrics.MeanMetricWrapper(hard_label_accuracy, name="accuracy")],
        jit_compile=bool(t.jit_compile),
    )
    return model


def make_callbacks(cfg: DictConfig, run_dir: Path, epoch_var, random_states: list) -> list:
    """The run's Keras callbacks, from the config (gender.callbacks says what each one does)."""
    import keras

    from gender.callbacks import (
        AveragedWeights,
        BestWeights,
        EpochSeeds,
        FitComplete,
        HistoryCSV,
        LearningRateLogger,
        StopAtEpoch,
    )

    t = cfg.trainer
    history_path = run_dir / "history.csv"
    best_row = best_weights_row(run_dir, history_rows(history_path), t.checkpoint.monitor)
    stop_at = int(t.get("stop_at_epoch") or 0)
    paused = 0 < stop_at < int(t.epochs)
    callbacks = [StopAtEpoch(stop_at)] if paused else []
    callbacks += [EpochSeeds(int(cfg.seed), epoch_var, random_states), LearningRateLogger()]
    if t.early_stopping.enabled:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=t.early_stopping.monitor,
                patience=int(t.early_stopping.patience),
                min_delta=float(t.early_stopping.min_delta),
                mode=monitor_mode(t.early_stopping.monitor),
            )
        )
    if cfg.optimizer.get("use_ema"):
        # after the stopping callbacks (it finalises the average on a stop), before BestWeights
        # (which must save the average)
        resuming, start = restored_epoch(run_dir) > 0, int(cfg.optimizer.get("ema_start_epoch", 1))
        callbacks.append(AveragedWeights(resuming, paused, start_epoch=start))
    callbacks += [HistoryCSV(history_path), BestWeights(run_dir, t.checkpoint.monitor, best_row)]
    callbacks.append(FitComplete(run_dir))
    # double_checkpoint: if a kill corrupts the latest backup, resume from the one before it;
    # a paused run (a halving rung) keeps its state for the next rung
    callbacks.append(
        keras.callbacks.BackupAndRestore(
            str(backup_dir(run_dir)), double_checkpoint=True, delete_checkpoint=not paused
        )
    )
    return callbacks


def fit(cfg: DictConfig, run_dir: Path, ds, job: Job, tracker) -> tuple[list[dict[str, str]], float | None]:
    """``model.fit``, continuing from the resume state if there is one; skipped when an earlier
    attempt finished fitting. Returns history.csv's rows and the training seconds across resumes
    (None if unknown)."""
    t = cfg.trainer
    refit = not fit_marker(run_dir).exists()
    fit_started = time.perf_counter()
    if refit:
        prepare_resume(run_dir)  # before the callbacks read history.csv and the best weights
        random_states = [
            v
            for v in [*job.model.variables, *(job.augment.variables if job.augment else [])]
            if "seed_generator_state" in v.path
        ]
        # Keras warns that fit's shuffle does not apply to tf.data: ours shuffles per epoch itself
        warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")
        job.model.fit(
            job.train_ds,
            validation_data=job.val_ds,
            epochs=int(t.epochs),
            callbacks=make_callbacks(cfg, run_dir, ds.epoch, random_states) + tracker.keras_callbacks(),
            verbose=int(t.verbose),
        )
    else:
        log.info("training already finished in %s: evaluating its best epoch only", run_dir)
    history = history_rows(run_dir / "history.csv")
    if not history:
        raise UserError("training ran no epoch (trainer.epochs must be >= 1)")
    elapsed = history[-1].get("elapsed_seconds")  # None if the fit predates that column
    seconds = float(elapsed) if elapsed else (time.perf_counter() - fit_started if refit else None)
    return history, seconds


def keep_best(
    cfg: DictConfig, run_dir: Path, job: Job, history: list[dict[str, str]]
) -> tuple[dict[str, str], Any]:
    """Load the checkpointed epoch's weights (so metrics.json describes model.keras), wrap the
    test-time flip if configured, and save model.keras. Returns that epoch's history row."""
    t = cfg.trainer
    row = best_weights_row(run_dir, history, t.checkpoint.monitor) if t.checkpoint.restore_best else None
    if row is not None:
        job.model.load_weights(str(best_weights_path(run_dir)))
    model = job.model
    if cfg.model.get("test_time_flip"):
        from gender.model import with_test_time_flip

        with job.strategy.scope():
            model = with_test_time_flip(model)
    with atomic_path(run_dir / "model.keras") as tmp:
        model.save(tmp)
    return row or history[-1], model


def decide_threshold(cfg: DictConfig, ds, model) -> float:
    """``trainer.decision_threshold``: a fixed probability, or ``balanced``: the threshold at which
    the saved model's recall of the two classes averages highest on the validation split (the test
    split stays unseen). Kept in metrics.json, where evaluate and predict read it."""
    setting = cfg.trainer.get("decision_threshold", 0.5)
    if setting != "balanced":
        return float(0.5 if setting is None else setting)
    images = ds.cache.images[ds.indices["val"]]
    labels = [s.label for s in ds.splits["val"]]
    size = int(cfg.data.batch_size)
    probs = [predict_probs(model, images[i : i + size]) for i in range(0, len(images), size)]
    chosen = balanced_threshold(labels, np.concatenate(probs)) if probs else None
    if chosen is None:
        log.warning(
            "trainer.decision_threshold=balanced needs both classes in the validation split: using 0.5"
        )
        return 0.5
    log.info(
        "decision threshold %.4f: the two classes' mean recall peaks there on %d validation images",
        chosen,
        len(labels),
    )
    return chosen


def score_test(
    cfg: DictConfig, run_dir: Path, ds, model, threshold: float = 0.5
) -> tuple[dict[str, Any], list]:
    """Accuracy, intervals, calibration and figures on the test split, per source, kind of image
    and whether the face stage found a face as well; nothing when the split has no test part."""
    if not ds.splits["test"]:
        return {}, []

    test = ds.splits["test"]
    groups = {"source": auto_groups(test)} if auto_groups(test) else {}
    kinds = gdata.image_kinds(ds.cache.kinds)
    test_kinds = [kinds[i] for i in ds.indices["test"]]
    if len(set(test_kinds)) > 1:
        groups["kind"] = test_kinds  # tight crops vs photos: one number must not hide either
    if found := face_found_column(ds.cache.no_face[ds.indices["test"]]):
        groups["face"] = found
    result, rows = evaluate_model_with_rows(
        model,
        test,
        ds.class_names,
        ds.image_size,
        run_dir,
        int(cfg.data.batch_size),
        images=ds.cache.images[ds.indices["test"]],
        groups=groups or None,
        threshold=threshold,
        predictions_name="predictions_test.csv",
    )
    print(format_report(result), flush=True)
    return result, rows


def collect_metrics(
    cfg: DictConfig,
    ds,
    job: Job,
    model,
    history: list[dict[str, str]],
    best: dict[str, str],
    result: dict[str, Any],
    threshold: float,
    fit_seconds: float | None,
    started: float,
) -> dict[str, Any]:
    """metrics.json: the checkpointed epoch's figures, the test result, and what actually ran."""
    import keras

    epochs_run = len(history)
    overrides = list(job_info().overrides)
    face = FaceSettings.from_config(cfg.data)
    return {
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
        "decision_threshold": threshold,  # evaluate and predict of this run call faces at it
        "epochs_run": epochs_run,
        "wall_seconds": round(time.perf_counter() - started, 2),
        "fit_seconds": None if fit_seconds is None else round(fit_seconds, 2),
        "seconds_per_epoch": None if fit_seconds is None else round(fit_seconds / max(1, epochs_run), 2),
        "parameters": int(model.count_params()),
        "runtime": {  # what actually ran: Keras may fall back from XLA, strategies pick devices
            "jit_compile": bool(job.model.jit_compile),
            "dtype_policy": keras.mixed_precision.global_policy().name,
            "replicas": int(job.strategy.num_replicas_in_sync),
            "deterministic": bool(cfg.trainer.deterministic),
            "test_time_flip": bool(cfg.model.get("test_time_flip")),  # the test figures' model
        },
        "split_sizes": {k: len(v) for k, v in ds.splits.items()},
        "face": {
            "mode": face.mode,
            "margin": face.margin,
            "detector": face.detector,
            "no_face_found": ds.report.no_face,
        },
        "warnings": list(ds.report.warnings),  # e.g. a test split of one class
        "overrides": overrides,
        "params": overridden_values(cfg, overrides),
        "test": result,
    }


def write_outputs(
    run_dir: Path, metrics: dict[str, Any], result: dict[str, Any], rows: list, class_names, tracker
) -> None:
    """metrics.json (the file that marks a finished run), the learning curves, and tracking."""

    write_json(metrics, run_dir / "metrics.json")
    plot_learning_curves(
        run_dir / "history.csv", run_dir / "plots" / "learning_curves.png", best_epoch=metrics["best_epoch"]
    )
    tracker.log_summary({k: v for k, v in metrics.items() if not isinstance(v, dict | list)})
    if result:
        tracker.log_evaluation(result, rows, class_names)
    tracker.log_model(run_dir / "model.keras", metrics)  # aliases best + latest, metrics as metadata
    print(format_metrics(metrics, run_dir), flush=True)


def overridden_values(cfg: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """The values of the config keys set on the command line (a sweep's swept keys), resolved:
    ``optimizer.lr=0.003`` -> ``{"optimizer.lr": 0.003}``; group choices and hydra.* are left out."""

    out: dict[str, Any] = {}
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        value = None if key.startswith("hydra.") else OmegaConf.select(cfg, key, default=None)
        if isinstance(value, bool | int | float | str):
            out[key] = value
    return out


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
        *(
            [f"threshold   {m['decision_threshold']:.4g} (trainer.decision_threshold)"]
            if m.get("decision_threshold", 0.5) != 0.5
            else []
        ),
        *(f"WARNING     {w}" for w in m.get("warnings") or []),
        "=" * 60,
    ]
    return "\n".join(lines)
