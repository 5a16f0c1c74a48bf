"""The sweep-level figure of ``python -m gender.bench``: jobs per hour for an experiment preset.

One job of the preset (``bench.sweep.preset``, ``fast`` by default) runs as a sweep job does: its
own ``python -m gender.run`` process, with the decode cache already built (a sweep builds it once
for all its jobs). Its time is split into the fixed cost every job pays and its training:

- process start, imports, config and exit (the process wall time minus the job's own clock and
  the TensorFlow import);
- the TensorFlow import (timed in a fresh process);
- model build and compile (timed here, on the job's own config);
- the first epoch's extra time (graph tracing, pipeline warm-up): epoch 1 minus a later epoch;
- the rest of the job's clock: data loading, test evaluation, saving the model, plots;
- training at steady state.

``bench.sweep.batches`` caps the training batches per epoch (``trainer.limit_batches``) for a
quick figure; the full job's training time is then extrapolated from the steady epoch time.
Writes ``sweep_jobs.json`` next to ``bench.json``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hydra import compose
from omegaconf import DictConfig, OmegaConf

from gender import data as gdata
from gender.errors import UserError
from gender.io import write_json
from gender.runtime import configure_runtime
from gender.task import job_info

#: bench overrides that do not concern the measured job
_NOT_PASSED = ("bench.", "hydra.", "experiment=", "+bench", "++bench")


def _bench_overrides() -> list[str]:
    return [o for o in job_info().overrides if not o.startswith(_NOT_PASSED)]


def tensorflow_import_seconds() -> float:
    """``import tensorflow, keras`` in a fresh process (files already in the page cache)."""
    code = "import time; t = time.perf_counter(); import tensorflow, keras; print(time.perf_counter() - t)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600
    )
    return float(out.stdout.strip().splitlines()[-1])


def _epoch_seconds(history_csv: Path) -> list[float]:

    with open(history_csv, newline="") as f:
        clock = [float(r["elapsed_seconds"]) for r in csv.DictReader(f) if r.get("elapsed_seconds")]
    return [b - a for a, b in zip([0.0, *clock], clock, strict=False)]


def measure_sweep_jobs(cfg: DictConfig, out_dir: str | Path) -> dict[str, Any]:
    """Time one job of ``bench.sweep.preset``; return (and write) the breakdown and jobs per hour."""

    s = cfg.bench.sweep
    preset, batches = str(s.preset), s.get("batches")
    out_dir = Path(out_dir)
    overrides = [f"experiment={preset}", "logger=none", *_bench_overrides()]
    if batches:
        overrides.append(f"trainer.limit_batches={int(batches)}")
    try:
        job_cfg = compose(config_name="config", overrides=overrides)
    except Exception as e:  # noqa: BLE001 - a bench override that training does not know
        raise UserError(
            f"bench.sweep: cannot compose the job's config ({' '.join(overrides)}): {str(e).splitlines()[0]}"
        ) from None

    # The decode cache is built once per sweep, before its jobs: build it here, untimed.
    from gender.training import compile_model

    configure_runtime(job_cfg.trainer, int(job_cfg.seed))
    started = time.perf_counter()
    ds = gdata.prepare(job_cfg.data, int(job_cfg.seed), job_cfg.paths.cache_dir)
    cache_seconds = time.perf_counter() - started
    tf_import = tensorflow_import_seconds()

    run_dir = out_dir / f"sweep_job_{preset}"
    cmd = [sys.executable, "-m", "gender.run", *overrides, f"hydra.run.dir={run_dir}"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    process_seconds = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if proc.returncode != 0 or not (run_dir / "metrics.json").is_file():
        raise UserError(
            f"bench.sweep: the {preset} job failed (exit {proc.returncode}): "
            + (proc.stderr.strip().splitlines() or ["no error output"])[-1]
        )
    metrics = json.loads((run_dir / "metrics.json").read_text())

    steps = math.ceil(len(ds.splits["train"]) / int(job_cfg.data.batch_size))
    started = time.perf_counter()
    compile_model(job_cfg, int(job_cfg.data.image_size), steps)
    build_seconds = time.perf_counter() - started

    epochs = _epoch_seconds(run_dir / "history.csv")
    steady = statistics.median(epochs[1:]) if len(epochs) > 1 else epochs[0]
    first_extra = max(0.0, epochs[0] - steady)
    fit, wall = float(metrics["fit_seconds"]), float(metrics["wall_seconds"])
    start_exit = max(0.0, process_seconds - wall - tf_import)
    rest = max(0.0, wall - fit - build_seconds)
    training = fit - first_extra
    scale = 1.0
    if batches and int(batches) < steps:  # extrapolate training to the full epochs
        scale = steps / int(batches)
    training_full = training * scale
    fixed = start_exit + tf_import + build_seconds + first_extra + rest
    job = fixed + training_full
    in_process = job - start_exit - tf_import  # basic launcher: one process, TF imported once
    result = {
        "preset": preset,
        "command": " ".join(["python", "-m", "gender.run", *overrides]),
        "epochs": len(epochs),
        "train_batches_per_epoch": steps,
        "batches_timed_per_epoch": int(batches) if batches and int(batches) < steps else steps,
        "extrapolated": scale != 1.0,
        "seconds": {
            "process_start_imports_config_exit": round(start_exit, 2),
            "tensorflow_import": round(tf_import, 2),
            "model_build_compile": round(build_seconds, 2),
            "first_epoch_extra": round(first_extra, 2),
            "data_evaluation_outputs": round(rest, 2),
            "training_steady_state": round(training_full, 2),
            "fixed_per_job": round(fixed, 2),
            "job": round(job, 2),
            "process_measured": round(process_seconds, 2),
            "decode_cache_once_per_sweep": round(cache_seconds, 2),
        },
        "process_cpu_seconds": round(cpu_seconds, 2),  # user + sys of the job's process
        "load_average_1min": load,
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "fixed_share": round(fixed / job, 3),
        "jobs_per_hour_one_process_each": round(3600 / job, 1),
        "jobs_per_hour_in_process": round(3600 / in_process, 1),
        "job_metrics": {k: metrics.get(k) for k in ("val_accuracy", "test_accuracy", "epochs_run")},
        "run_dir": str(run_dir),
    }
    write_json(result, out_dir / "sweep_jobs.json")
    print(format_sweep_jobs(result), flush=True)
    return result


def format_sweep_jobs(r: dict[str, Any]) -> str:
    s = r["seconds"]
    note = (
        f", training extrapolated from {r['batches_timed_per_epoch']} of "
        f"{r['train_batches_per_epoch']} batches per epoch"
        if r["extrapolated"]
        else ""
    )
    rows = [
        ("process start, imports, config, exit", s["process_start_imports_config_exit"]),
        ("TensorFlow import", s["tensorflow_import"]),
        ("model build + compile", s["model_build_compile"]),
        ("first epoch's extra (tracing, warm-up)", s["first_epoch_extra"]),
        ("data, test evaluation, outputs", s["data_evaluation_outputs"]),
        ("fixed cost per job", s["fixed_per_job"]),
        (f"training ({r['epochs']} epochs, steady state)", s["training_steady_state"]),
        ("whole job", s["job"]),
    ]
    lines = [
        "=" * 72,
        f"sweep jobs  experiment={r['preset']}: one job in its own process{note}",
        f"{'seconds':>47}",
    ]
    lines += [f"{label:<40} {value:>6.1f}" for label, value in rows]
    lines += [
        f"{'fixed share of a job':<40} {100 * r['fixed_share']:>5.1f}%",
        f"{'jobs per hour, a process per job':<40} {r['jobs_per_hour_one_process_each']:>6.1f}"
        "  (submitit: hydra/launcher=local|slurm)",
        f"{'jobs per hour, one process':<40} {r['jobs_per_hour_in_process']:>6.1f}"
        "  (basic launcher: TensorFlow imported once)",
        f"decode cache (once per sweep, not per job): {s['decode_cache_once_per_sweep']:.1f} s; "
        f"the job's process used {r['process_cpu_seconds']:.1f} CPU seconds",
    ]
    if r["load_average_1min"] and r["load_average_1min"] > r["usable_cpus"]:
        lines.append(
            f"note: the machine was busy (load {r['load_average_1min']:.1f} on {r['usable_cpus']} "
            "CPUs): these times include waiting for a CPU"
        )
    lines.append("=" * 72)
    return "\n".join(lines)


def sweep_settings(cfg: DictConfig) -> tuple[bool, bool]:
    """(measure the sweep figure, measure only that) from ``bench.sweep``."""
    s = OmegaConf.select(cfg, "bench.sweep") or {}
    return bool(s.get("preset")), bool(s.get("only"))
