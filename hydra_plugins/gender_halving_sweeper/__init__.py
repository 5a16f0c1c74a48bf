"""Successive halving as a Hydra sweeper (``hydra/sweeper=halving``, ``hparams_search=lr_dropout_halving``).

Every configuration of the search space trains for a first rung of epochs; the best 1/eta go on to
the next rung, continuing in their own job directory from the epoch they stopped at, up to the full
``trainer.epochs``. Hydra finds the sweeper because it lives in the ``hydra_plugins`` namespace
package; ``config.py`` registers its config under ``hydra/sweeper``. See docs/sweeps.md.
"""

__version__ = "0.1.0"
