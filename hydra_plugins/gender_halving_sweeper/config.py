"""The sweeper's settings, registered as ``hydra/sweeper=halving`` (imported by Hydra's plugin scan:
keep this module light)."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class HalvingSweeperConf:
    _target_: str = "hydra_plugins.gender_halving_sweeper.halving_sweeper.HalvingSweeper"
    # keep the best 1/eta of a rung's configurations for the next rung, which trains eta x longer
    eta: int = 3
    # epochs of the first rung; later rungs multiply by eta, the last one is max_epochs
    min_epochs: int = 1
    # the full budget of a configuration; null: the composed config's epochs_key (trainer.epochs)
    max_epochs: int | None = None
    # explicit rung epochs instead of the geometric ones, e.g. [1, 4] (max_epochs is appended)
    rungs: list[int] | None = None
    # null: the grid over params (comma lists, choice(), range()); N: N random draws, where
    # interval(a, b) is uniform and tag(log, interval(a, b)) log-uniform
    n_configs: int | None = None
    seed: int = 0  # of the random draws
    # ranked by this key of the job's metrics.json (else the job's return value)
    metric: str = "val_accuracy"
    direction: str = "maximize"  # or minimize
    # the config key holding the full number of epochs, and the one that pauses a job after a
    # rung (it trains on the schedule of the full run, stops after this epoch, and keeps its
    # resume state so the next rung continues it)
    epochs_key: str = "trainer.epochs"
    pause_key: str = "trainer.stop_at_epoch"
    # keep the resume state (checkpoints/backup) of configurations stopped early (it is deleted
    # at the end of the sweep otherwise: one copy of weights + optimizer state per configuration)
    keep_checkpoints: bool = False
    params: dict[str, str] | None = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="halving", node=HalvingSweeperConf, provider="gender_halving_sweeper"
)
