"""The measurements of ``python -m gender.bench``: where training time goes on this machine, in one run.

Measures, with the same config groups as training (so ``data.*``, ``model=``, ``augmentation.*``
and ``trainer.*`` overrides apply to every measured model):

- the input pipeline alone (decoded-image cache + augmentation in parallel tf.data calls +
  prefetch): a cold first epoch, which includes building the decode cache when it is absent, and
  the steady state;
- the training step alone, on batches already in memory (the pure compute figure);
- end-to-end training with the framework's pipeline;
- end-to-end training with the seed project's recipe (``image_dataset_from_directory`` plus a
  plain sequential augmentation ``map``) on the same files and the same model, as the reference;
- inference (``model.predict`` on the validation pipeline) and the peak resident memory.

Every throughput is the median over ``bench.repeats`` repetitions that alternate the measurements
(pipeline, step, end to end, seed recipe, inference, then again), so machine noise hits all alike.
Each measurement runs ``bench.warmup_steps`` batches untimed, then times ``bench.steps`` batches.
Writes ``bench.json`` into the Hydra run directory; see docs/speed.md.
"""

from __future__ import annotations

import logging
import os
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gender import data as gdata
from gender.config import validate
from gender.data import load_face
from gender.environment import machine
from gender.errors import UserError
from gender.face import FaceSettings
from gender.io import write_json
from gender.runtime import configure_runtime, distribution_strategy
from gender.task import job_info
from gender.training import compile_model

log = logging.getLogger(__name__)

#: Per-repetition measurements, in the order each repetition runs them.
MEASUREMENTS = ("pipeline", "train_step", "end_to_end", "seed_recipe", "inference")
LABELS = {
    "pipeline_first_epoch": "input pipeline, first epoch (cold)",
    "pipeline": "input pipeline, steady state",
    "train_step": "train step, batches in memory",
    "end_to_end": "end to end, framework pipeline",
    "seed_recipe": "end to end, seed recipe",
    "inference": "inference, model.predict on val",
}


# ------------------------------------------------------------------------------------ helpers
def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / (1 << 10)


def batch_sizes(n: int, batch_size: int, limit: int | None = None) -> list[int]:
    """Sizes of the batches of one epoch over ``n`` items (the last one partial), capped at ``limit``."""
    sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    return sizes[: int(limit)] if limit else sizes


def images_in(sizes: Sequence[int], start: int, count: int) -> int:
    """Images in batches ``start .. start+count-1`` of a repeated dataset whose epochs have ``sizes``.

    Counting the real batch sizes (not ``steps * batch_size``) keeps the partial last batch of an
    epoch from inflating a figure, which matters on small data.
    """
    if not sizes:
        raise UserError("the dataset has no batches to measure")
    return sum(sizes[i % len(sizes)] for i in range(start, start + count))


def _step_timer():
    """A Keras callback recording when each train/predict batch ends.

    Keras turns a train step's logs into Python numbers before calling a callback that is not
    async safe (this one); predict outputs stay tensors, so they are fetched here. Either way a
    recorded time is after the step has really finished, on GPUs too.
    """
    import keras

    def fetch(value):
        return keras.ops.convert_to_numpy(value) if hasattr(value, "shape") else value

    class StepTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter())

        def on_predict_batch_end(self, batch, logs=None):
            keras.tree.map_structure(fetch, dict(logs or {}))
            self.times.append(time.perf_counter())

    return StepTimer()


def _rate(times: Sequence[float], sizes: Sequence[int], steps: int, warmup: int) -> float:
    """Images per second over the timed batches: from the end of the last warm-up batch on."""
    if len(times) < warmup + steps:
        raise RuntimeError(f"expected {warmup + steps} batches, Keras ran {len(times)}")
    return images_in(sizes, warmup, steps) / (times[warmup + steps - 1] - times[warmup - 1])


def timed_iteration(ds, sizes: Sequence[int], steps: int, warmup: int) -> float:
    """Images/s a repeated tf.data pipeline delivers to a consumer that does nothing else."""
    iterator = iter(ds)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return images_in(sizes, warmup, steps) / (time.perf_counter() - start)


def timed_fit(model, ds, sizes: Sequence[int], steps: int, warmup: int) -> float:
    """Training images/s of ``model.fit`` on a repeated dataset, warm-up batches excluded."""
    timer = _step_timer()
    model.fit(ds, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[timer])
    return _rate(timer.times, sizes, steps, warmup)


def timed_predict(model, ds, sizes: Sequence[int], steps: int, warmup: int) -> float:
    """Inference images/s of ``model.predict`` on a repeated dataset, warm-up batches excluded."""
    timer = _step_timer()
    model.predict(ds, steps=warmup + steps, verbose=0, callbacks=[timer])
    return _rate(timer.times, sizes, steps, warmup)


def seed_class_folders(data_cfg: Any, root: Path) -> list[str]:
    """The one folder per class, directly under the root, that ``image_dataset_from_directory`` reads."""
    folders = []
    for name, value in dict(data_cfg.classes).items():
        value = [value] if isinstance(value, str) else list(value)
        path = Path(value[0]).expanduser() if len(value) == 1 else None
        if path is None or path.is_absolute() or len(path.parts) != 1 or not (root / path).is_dir():
            raise UserError(
                f"the seed recipe reads one folder per class directly under data.root, but "
                f"data.classes.{name}={value}; set bench.seed_recipe=false to skip it"
            )
        folders.append(str(path))
    return folders


def seed_recipe_dataset(cfg: DictConfig, root: Path, augment):
    """The seed project's input pipeline on ``root``: Keras' directory loader + a plain augment map.

    Rescaling is not a separate ``map`` here: every model of this project rescales inside (its
    first layer), so the seed model's pixels go in as [0, 255] and the same multiply runs in the
    training step instead (see docs/speed.md). Returns the dataset and its number of files.
    """
    import keras

    size, batch = int(cfg.data.image_size), int(cfg.data.batch_size)
    ds = keras.utils.image_dataset_from_directory(
        str(root),
        labels="inferred",
        label_mode="binary",
        class_names=seed_class_folders(cfg.data, root),
        image_size=(size, size),
        batch_size=batch,
        shuffle=True,
        seed=int(cfg.seed),
        verbose=False,
    )
    n = len(ds.file_paths)
    if augment is not None:
        ds = ds.map(lambda x, y: (augment(x, training=True), y))
    return ds, n


def machine_info(strategy=None) -> dict[str, Any]:
    """What the figures were measured on: they mean nothing without it."""
    import keras
    import tensorflow as tf

    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        gpus.append(details.get("device_name", device.name))
    return {
        **machine(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "gpus": gpus,
        "replicas": int(strategy.num_replicas_in_sync) if strategy is not None else 1,
    }


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _check_bench_cfg(b: Any) -> None:
    for key in ("steps", "warmup_steps", "repeats", "cached_batches"):
        value = b.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"bench.{key}={value} is invalid: must be an integer >= 1")


# ---------------------------------------------------------------------------------- the bench
FACE_STAGES = {  # what the face stage's cost is reported for: data.face, data.face_detector
    "none": FaceSettings("none"),
    "crop": FaceSettings("crop"),
    "align": FaceSettings("align"),
    "align+cnn": FaceSettings("align", detector="hog_then_cnn"),
    "descriptor": FaceSettings.from_config({"face": "descriptor"}),
}


def face_stage_cost(
    paths: Sequence[str], size: int, repeats: int, stages: Sequence[str] = tuple(FACE_STAGES)
) -> dict[str, float]:
    """Milliseconds per image to decode and prepare one file (one thread), per face stage
    (``align+cnn``: the CNN detector where HOG finds nothing, so its cost depends on how many faces
    HOG misses in these files): the median over alternating repetitions, so the stages share the
    machine's state alike. The decode cache pays this once per data configuration, evaluate and
    predict once per image."""
    times: dict[str, list[float]] = {name: [] for name in stages}
    for _ in range(repeats):
        for name in stages:
            started = time.perf_counter()
            for path in paths:
                load_face(path, size, face=FACE_STAGES[name])
            times[name].append((time.perf_counter() - started) / len(paths) * 1000)
    return {name: round(float(statistics.median(t)), 2) for name, t in times.items()}


def run_bench(cfg: DictConfig, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Run every measurement, print the table, write ``bench.json``; return what was written."""

    validate(cfg)
    b = cfg.bench
    _check_bench_cfg(b)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    began, load_start = time.perf_counter(), _load_average()

    configure_runtime(cfg.trainer, int(cfg.seed))
    import keras
    import tensorflow as tf

    from gender.augmentation import build_augmentation, build_mixup

    warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")
    strategy = distribution_strategy(cfg.trainer.get("strategy", "default"))
    steps, warmup, repeats = int(b.steps), int(b.warmup_steps), int(b.repeats)
    size, batch = int(cfg.data.image_size), int(cfg.data.batch_size)
    limit = cfg.trainer.get("limit_batches")
    placement = cfg.augmentation.get("placement", "pipeline")

    # Cold first epoch: discovery, the decode cache (built or reused), split, one full pass.
    started = time.perf_counter()
    ds = gdata.prepare(cfg.data, int(cfg.seed), cfg.paths.cache_dir)
    prepare_seconds = time.perf_counter() - started
    log.info("decode cache %s: %s", "reused" if ds.cache.reused else "built", ds.cache.directory)
    with strategy.scope():
        augment = build_augmentation(cfg.augmentation, seed=int(cfg.seed))
        mixup = build_mixup(cfg.augmentation, seed=int(cfg.seed))  # its seed state, like training's
    train_pipe = gdata.with_augmentation(ds.train, augment if placement == "pipeline" else None, mixup=mixup)
    if limit:
        train_pipe = train_pipe.take(int(limit))
    first_epoch_images = sum(int(x.shape[0]) for x, _ in train_pipe)
    first_epoch_seconds = time.perf_counter() - started
    train_sizes = batch_sizes(len(ds.splits["train"]), batch, limit)
    val_sizes = batch_sizes(len(ds.splits["val"]), batch, limit)
    log.info(
        "first epoch: %d images in %.1f s (%.1f s of it preparing the data)",
        first_epoch_images,
        first_epoch_seconds,
        prepare_seconds,
    )

    # Batches held in memory for the pure train-step figure: the pipeline's own output.
    held = list(train_pipe.take(int(b.cached_batches)))
    held_x = tf.concat([x for x, _ in held], 0)
    held_y = tf.concat([y for _, y in held], 0)
    held_sizes = batch_sizes(int(held_x.shape[0]), batch)
    del held
    in_memory = (
        tf.data.Dataset.from_tensor_slices((held_x, held_y))
        .batch(batch)
        .cache()
        .repeat()
        .prefetch(tf.data.AUTOTUNE)
    )
    pipeline = train_pipe.repeat()
    val = (ds.val.take(int(limit)) if limit else ds.val).repeat().prefetch(tf.data.AUTOTUNE)

    with strategy.scope():
        model = compile_model(
            cfg, size, len(train_sizes), augmentation=augment if placement == "model" else None
        )
    seed_ds, seed_sizes, seed_model = None, [], None
    describes = FaceSettings.from_config(cfg.data).describes
    if describes and b.get("seed_recipe", True):  # the seed's directory loader yields pixels
        log.info("seed recipe not timed: with data.face=descriptor the model takes descriptors, not images")
    if b.get("seed_recipe", True) and not describes:
        root = gdata.resolve_root(cfg.data)
        seed_ds, seed_files = seed_recipe_dataset(cfg, root, augment)
        seed_ds = seed_ds.repeat()
        seed_sizes = batch_sizes(seed_files, batch)
        with strategy.scope():
            seed_model = compile_model(cfg, size, len(seed_sizes))

    runs: dict[str, Callable[[], float]] = {
        "pipeline": lambda: timed_iteration(pipeline, train_sizes, steps, warmup),
        "train_step": lambda: timed_fit(model, in_memory, held_sizes, steps, warmup),
        "end_to_end": lambda: timed_fit(model, pipeline, train_sizes, steps, warmup),
        "seed_recipe": lambda: timed_fit(seed_model, seed_ds, seed_sizes, steps, warmup),
        "inference": lambda: timed_predict(model, val, val_sizes, steps, warmup),
    }
    if seed_model is None:
        del runs["seed_recipe"]
    reps: dict[str, list[float]] = {name: [] for name in runs}
    for rep in range(repeats):
        for name, measure in runs.items():
            reps[name].append(measure())
        log.info(
            "repetition %d/%d: %s",
            rep + 1,
            repeats,
            ", ".join(f"{n} {v[-1]:.1f} img/s" for n, v in reps.items()),
        )

    def median(name: str) -> float | None:
        return float(statistics.median(reps[name])) if reps.get(name) else None

    figures = {f"{name}_images_per_s": median(name) for name in MEASUREMENTS}
    face_ms = None
    if int(b.get("face_images", 0)):
        files = [s.path for s in ds.splits["train"]]
        every = max(1, len(files) // int(b.face_images))
        face_ms = face_stage_cost(files[::every][: int(b.face_images)], size, repeats)
        log.info("face stage, ms per image: %s", face_ms)
    e2e, step, seed = (
        figures["end_to_end_images_per_s"],
        figures["train_step_images_per_s"],
        figures["seed_recipe_images_per_s"],
    )
    result = {
        "pipeline_images_per_s": figures["pipeline_images_per_s"],
        "pipeline_first_epoch_images_per_s": first_epoch_images / first_epoch_seconds,
        "train_step_images_per_s": step,
        "end_to_end_images_per_s": e2e,
        "seed_recipe_images_per_s": seed,
        "inference_images_per_s": figures["inference_images_per_s"],
        "face_stage_ms_per_image": face_ms,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "ratio_end_to_end_vs_train_step": e2e / step,
        "ratio_framework_vs_seed_recipe": e2e / seed if seed else None,
        "cache_reused": bool(ds.cache.reused),
        "cache_dir": str(ds.cache.directory),
        "prepare_seconds": round(prepare_seconds, 2),
        "first_epoch_seconds": round(first_epoch_seconds, 2),
        "first_epoch_images": first_epoch_images,
        "repetitions": reps,
        "settings": {
            "image_size": size,
            "batch_size": batch,
            "model": str(cfg.model.name),
            "parameters": int(model.count_params()),
            "augmentation_placement": placement,
            "mixed_precision": keras.mixed_precision.global_policy().name,
            "jit_compile": bool(cfg.trainer.jit_compile),
            "strategy": str(cfg.trainer.get("strategy", "default")),
            "steps": steps,
            "warmup_steps": warmup,
            "repeats": repeats,
            "cached_batches": len(held_sizes),
            "train_images": len(ds.splits["train"]),
            "val_images": len(ds.splits["val"]),
            "seed_recipe_files": sum(seed_sizes) if seed_sizes else None,
            "seed_recipe_rescaling": "inside the model (no separate map)",
        },
        "machine": machine_info(strategy),
        "load_average_1min": {"start": load_start, "end": _load_average()},
        "wall_seconds": round(time.perf_counter() - began, 1),
        "overrides": list(job_info().overrides),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    write_json(result, out_dir / "bench.json")
    print(format_table(result, out_dir), flush=True)
    return result


def format_table(r: dict[str, Any], out_dir: Path) -> str:
    """The block a person reads: each figure as median (min-max) over the repetitions."""
    s, m = r["settings"], r["machine"]

    def row(label: str, value: float | None, spread: Sequence[float] = ()) -> str:
        if value is None:
            return f"{label:<36} {'skipped':>10}"
        extra = f"  ({min(spread):.1f}-{max(spread):.1f})" if len(spread) > 1 else ""
        return f"{label:<36} {value:>10.1f}{extra}"

    gpus = ", ".join(m["gpus"]) or "none"
    lines = [
        "=" * 72,
        f"bench       {out_dir}",
        f"machine     {m['usable_cpus']} CPUs ({m['cpu_model']}), GPUs: {gpus}, "
        f"TF {m['tensorflow']}, {m['replicas']} replica(s)",
        f"setup       {s['model']} at {s['image_size']}px, batch {s['batch_size']}, augmentation in "
        f"{s['augmentation_placement']}, mixed_precision={s['mixed_precision']}, "
        f"jit_compile={s['jit_compile']}",
        f"            median of {s['repeats']} alternating repetitions x {s['steps']} batches "
        f"(+{s['warmup_steps']} warm-up)",
        f"{'images/s':>47}  (min-max)",
        row(LABELS["pipeline_first_epoch"], r["pipeline_first_epoch_images_per_s"])
        + f"  cache {'reused' if r['cache_reused'] else 'built'}, {r['first_epoch_seconds']:.1f} s",
    ]
    for name in MEASUREMENTS:
        lines.append(row(LABELS[name], r[f"{name}_images_per_s"], r["repetitions"].get(name, ())))
    ratio = r["ratio_framework_vs_seed_recipe"]
    for mode, ms in (r.get("face_stage_ms_per_image") or {}).items():
        lines.append(f"{'face stage ' + mode + ' (ms per image)':<36} {ms:>10.2f}")
    lines += [
        f"{'peak resident memory (MB)':<36} {r['peak_rss_mb']:>10.0f}",
        f"{'end to end / train step':<36} {r['ratio_end_to_end_vs_train_step']:>10.2f}",
        f"{'framework / seed recipe':<36} " + (f"{ratio:>10.2f}" if ratio else f"{'skipped':>10}"),
        "=" * 72,
    ]
    return "\n".join(lines)
