"""The sweeper Hydra discovers (``hydra/sweeper=halving``); the algorithm is in ``_impl``.

Hydra imports every module under ``hydra_plugins`` each time any app starts, so this one stays
light, as Hydra's own sweeper plugins do: the implementation, which reaches matplotlib through the
sweep summary, is imported when the sweeper is built.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class HalvingSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        from ._impl import HalvingSweeperImpl

        self.sweeper = HalvingSweeperImpl(**settings)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.sweeper.sweep(arguments)
