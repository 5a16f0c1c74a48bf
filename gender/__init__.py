"""Hydra-configured experiments for a face-image gender classifier (TensorFlow/Keras)."""

import os
from pathlib import Path

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) hides the output that matters.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

#: The config tree, shipped inside the package so a regular install finds it too.
CONF_DIR = Path(__file__).resolve().parent / "conf"
#: The source checkout (holds ``pyproject.toml``) when running from one, else None (installed).
_CHECKOUT = Path(__file__).resolve().parents[1]
PROJECT_ROOT = _CHECKOUT if (_CHECKOUT / "pyproject.toml").is_file() else None


def project_root() -> str:
    """Where ``outputs/`` and ``data/`` live: the checkout (whatever the cwd) in a source
    checkout or editable install; the current folder for a regular install."""
    return str(PROJECT_ROOT or Path.cwd())


def _register_resolvers() -> None:
    """``${project_root:}`` in conf/paths (see ``project_root``)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", project_root)


_register_resolvers()
