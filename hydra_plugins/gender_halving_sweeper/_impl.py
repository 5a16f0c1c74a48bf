"""``HalvingSweeper``: successive halving over the jobs of a Hydra multirun.

Rung by rung, the sweeper hands the launcher (any launcher: basic, joblib, submitit) one batch of
jobs, like Hydra's basic sweeper does with its batches:

1. rung 0 launches every configuration with ``pause_key=<rung epochs>`` (``trainer.stop_at_epoch``):
   the job trains on the schedule of the full ``trainer.epochs``, stops after the rung's epochs,
   writes its metrics.json as usual and keeps its resume state;
2. the best 1/eta (by ``metric`` in each job's metrics.json) are promoted: their directory is turned
   back into an interrupted run (``_core.reopen``) and they are launched again in the same
   directory (``hydra.sweep.subdir`` pinned) with the next rung's epochs, so Keras'
   BackupAndRestore continues them from the epoch they stopped at, optimizer state included;
3. the last rung runs without ``pause_key``: the survivors finish as ordinary full runs.

A failed job drops out and the others go on; the sweep then ends with the first failure's error
(non-zero exit), as the basic sweeper does. ``SWEEP_DIR/rungs.json`` records every configuration's
directory, status, rung, epochs and metric per rung, rewritten after every step.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.errors import ConfigCompositionException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from gender.io import write_json

from ._core import (
    DIRECTIONS,
    RUNGS_FILE,
    HalvingError,
    Trial,
    configurations,
    drop_resume_state,
    history_epochs,
    metric_of,
    n_promoted,
    parse_space,
    quote,
    rank,
    reopen,
    resume_epoch,
    rung_schedule,
)

log = logging.getLogger(__name__)


class HalvingSweeperImpl(Sweeper):
    def __init__(
        self,
        eta: int = 3,
        min_epochs: int = 1,
        max_epochs: int | None = None,
        rungs: Any = None,
        n_configs: int | None = None,
        seed: int = 0,
        metric: str = "val_accuracy",
        direction: str = "maximize",
        epochs_key: str = "trainer.epochs",
        pause_key: str = "trainer.stop_at_epoch",
        keep_checkpoints: bool = False,
        params: Any = None,
    ) -> None:
        if direction not in DIRECTIONS:
            raise HalvingError(
                f"hydra.sweeper.direction={direction} is invalid: allowed values are {', '.join(DIRECTIONS)}"
            )
        self.eta, self.min_epochs, self.max_epochs = int(eta), int(min_epochs), max_epochs
        self.rungs = list(rungs) if rungs else None
        self.n_configs, self.seed = n_configs, int(seed)
        self.metric, self.direction = metric, direction
        self.epochs_key, self.pause_key = epochs_key, pause_key
        self.keep_checkpoints = bool(keep_checkpoints)
        self.params = dict(params or {})
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # ------------------------------------------------------------------------------ the sweep
    def sweep(self, arguments: list[str]) -> Any:

        assert self.config is not None and self.launcher is not None and self.hydra_context
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        space = parse_space(
            parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        )
        for key in (self.epochs_key, self.pause_key):
            if key in space.keys:
                raise HalvingError(f"{key} cannot be swept: successive halving sets it per rung")
        trials = [Trial(i, ovs) for i, ovs in enumerate(configurations(space, self.n_configs, self.seed))]
        if not trials:
            raise HalvingError("the search space is empty")

        self.sweep_dir = Path(str(self.config.hydra.sweep.dir))
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        max_epochs = self.max_epochs or self._composed_epochs(trials[0].overrides + space.fixed)
        schedule = rung_schedule(max_epochs, self.min_epochs, self.eta, self.rungs)
        self.state: dict[str, Any] = {
            "sweeper": "halving",
            "status": "running",
            "eta": self.eta,
            "metric": self.metric,
            "direction": self.direction,
            "pause_key": self.pause_key,
            "max_epochs": int(max_epochs),
            "rungs": schedule,
            "rung_results": [],
            "configs": trials,
        }
        log.info(
            "Successive halving: %d configurations, rungs at %s epochs, eta=%d, %s %s; sweep dir %s",
            len(trials),
            schedule,
            self.eta,
            self.direction,
            self.metric,
            self.sweep_dir,
        )

        try:
            returns, failures = self._run_rungs(trials, space.fixed, schedule)
        except BaseException:
            self.state["status"] = "error"
            self._save()
            raise
        self._finish(trials)
        if failures:
            log.error("%d job(s) failed; see failure.json in their directories", len(failures))
            _ = failures[0].return_value  # raises the job's error: the sweep exits non-zero
        return returns

    def _run_rungs(self, trials: list, fixed: list[str], schedule: list[int]) -> tuple[list, list]:
        returns: list = []
        failures: list = []
        alive, job_idx = list(trials), 0
        for rung, epochs in enumerate(schedule):
            last = rung == len(schedule) - 1
            started = time.perf_counter()
            batch = [self._overrides(t, fixed, None if last else epochs) for t in alive]
            self._validate(batch)
            for t in alive:
                if t.dir is not None:  # promoted: continue in its own directory
                    reopen(self._job_dir(t), schedule[rung - 1])
                t.status, t.rung = "running", rung
            self._save()
            log.info(
                "Rung %d/%d: %d configuration(s) to %d epoch(s)", rung + 1, len(schedule), len(batch), epochs
            )
            results = self.launcher.launch(batch, initial_job_idx=job_idx)
            job_idx += len(batch)
            returns.append(results)
            for i, (t, ret) in enumerate(zip(alive, results, strict=True)):
                self._record(t, ret, epochs, failures, job_idx - len(batch) + i)
            alive = self._promote(alive, rung, epochs, last, time.perf_counter() - started)
            self._save()
            if not alive:
                break
        return returns, failures

    # ------------------------------------------------------------------------------- helpers
    def _validate(self, batch: list[list[str]]) -> None:
        """Compose every job's config before launching (as the basic sweeper does); a config
        without ``pause_key`` belongs to training code that cannot pause after a rung."""

        try:
            self.validate_batch_is_legal(batch)
        except ConfigCompositionException as e:
            if f"'{self.pause_key}'" in str(e):
                raise HalvingError(
                    f"{self.pause_key} is not a key of this config: the training code cannot pause a "
                    "job after a rung (set hydra.sweeper.pause_key to the key that does)"
                ) from e
            raise

    def _composed_epochs(self, overrides: list[str]) -> int:
        assert self.hydra_context is not None and self.config is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        value = OmegaConf.select(cfg, self.epochs_key)
        if not isinstance(value, int) or value < 1:
            raise HalvingError(
                f"{self.epochs_key}={value} is not a number of epochs: set "
                "hydra.sweeper.max_epochs or hydra.sweeper.epochs_key"
            )
        return value

    def _overrides(self, t: Any, fixed: list[str], pause: int | None) -> list[str]:
        ovs = [*t.overrides, *fixed]
        if pause is not None:
            ovs.append(f"{self.pause_key}={pause}")
        if t.dir is not None:
            ovs.append(f"hydra.sweep.subdir={quote(t.dir)}")
        return ovs

    def _job_dir(self, t: Any) -> Path:
        return self.sweep_dir / t.dir

    def _record(self, t: Any, ret: Any, epochs: int, failures: list, num: int) -> None:
        """Where the job ran, and its metric or its error."""

        hydra_cfg = ret.hydra_cfg if ret.hydra_cfg is not None else OmegaConf.create()
        if t.dir is None:
            out = OmegaConf.select(hydra_cfg, "hydra.runtime.output_dir")
            if out is not None:
                rel = os.path.relpath(str(out), self.sweep_dir.resolve())
                t.dir = str(out) if rel.startswith("..") else rel
            else:  # a launcher that does not return the job's config: Hydra's default layout
                t.dir = str(num)
        t.job_nums.append(int(OmegaConf.select(hydra_cfg, "hydra.job.num", default=num)))
        job_dir = self._job_dir(t)
        t.epochs = history_epochs(job_dir)
        if ret.status != JobStatus.COMPLETED:
            failures.append(ret)
            t.status = "failed"
            error = getattr(ret, "_return_value", None)
            t.error = (
                f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                if isinstance(error, BaseException)
                else "job failed"
            )
            return
        t.values[epochs] = metric_of(job_dir, self.metric, ret.return_value)

    def _promote(self, alive: list, rung: int, epochs: int, last: bool, seconds: float) -> list:
        """Rank the rung's configurations; return those that go on to the next rung."""
        ok = [t for t in alive if t.status != "failed"]
        result = {
            "rung": rung,
            "epochs": epochs,
            "configs": [t.id for t in alive],
            "failed": [t.id for t in alive if t.status == "failed"],
            "seconds": round(seconds, 1),
        }
        if last:
            for t in ok:
                t.status = "finished"
            result.update(promoted=[], stopped=[], finished=[t.id for t in ok])
            self.state["rung_results"].append(result)
            return []
        ranked = rank(ok, self.direction)
        winners, losers = (
            ranked[: n_promoted(len(alive), self.eta)],
            ranked[n_promoted(len(alive), self.eta) :],
        )
        going_on = []
        for t in losers:
            t.status = "stopped"
        for t in winners:
            if t.epochs < epochs:  # the job stopped itself (trainer.early_stopping): it is done
                t.status, t.note = "finished", f"early stopping after {t.epochs} epochs"
                continue
            job_dir = self._job_dir(t)
            if resume_epoch(job_dir) != t.epochs:
                raise HalvingError(
                    f"{job_dir} holds no resume state for epoch {t.epochs} (checkpoints/backup): "
                    f"the training code did not pause at {self.pause_key}={epochs}, so the job "
                    "cannot continue where it stopped"
                )
            t.status = "promoted"
            going_on.append(t)
        result.update(
            promoted=[t.id for t in going_on],
            stopped=[t.id for t in losers],
            finished=[t.id for t in winners if t not in going_on],
        )
        self.state["rung_results"].append(result)
        for t in ranked:
            log.info(
                "  %-9s %s = %s  (%s)",
                t.status,
                self.metric,
                "n/a" if t.value is None else f"{t.value:.4f}",
                " ".join(t.overrides),
            )
        return going_on

    def _finish(self, trials: list) -> None:
        if not self.keep_checkpoints:
            for t in trials:
                if t.dir is not None and t.status in ("stopped", "finished", "failed"):
                    drop_resume_state(self._job_dir(t))
        self.state["status"] = "done"
        self._save()
        best = [t for t in trials if t.status == "finished"]
        if best:
            top = rank(best, self.direction)[0]
            log.info(
                "Best: %s = %.4f after %d epochs (%s), in %s",
                self.metric,
                top.value or float("nan"),
                top.epochs,
                " ".join(top.overrides),
                self._job_dir(top),
            )

    def _save(self) -> None:

        trials = self.state["configs"]
        doc = {
            **self.state,
            "configs": [t.as_dict() for t in trials],
            "epochs_trained": sum(t.epochs for t in trials),
            "epochs_full_grid": len(trials) * self.state["max_epochs"],
        }
        write_json(doc, self.sweep_dir / RUNGS_FILE)
