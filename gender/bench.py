"""``python -m gender.bench``: throughput of the input pipeline, the training step, end-to-end
training (the framework's pipeline and the seed's recipe), inference, the face stage's cost per
image, and peak memory on this machine, then jobs per hour for sweeps (``bench.sweep``). The
measurements live in ``gender.benchmark`` and ``gender.sweep_cost``; see docs/speed.md.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from gender.benchmark import run_bench
from gender.sweep_cost import measure_sweep_jobs, sweep_settings
from gender.task import JobInfo, task_wrapper


def bench_job(cfg: DictConfig, job: JobInfo) -> None:
    sweep, only = sweep_settings(cfg)
    if not only:
        run_bench(cfg, cfg.paths.output_dir)
    if sweep:  # jobs per hour: one job of bench.sweep.preset, end to end (gender/sweep_cost.py)
        measure_sweep_jobs(cfg, cfg.paths.output_dir)


main = hydra.main(version_base="1.3", config_path="conf", config_name="bench")(task_wrapper(bench_job))


if __name__ == "__main__":
    main()
