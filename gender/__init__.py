"""Hydra-configured experiments for a face-image gender classifier (TensorFlow/Keras)."""

import os
from pathlib import Path

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) hides the output that matters.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

#: Repository root (holds ``conf/`` and ``outputs/``) for an editable install.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _register_resolvers() -> None:
    """``${project_root:}`` in conf/paths: outputs land in the repository whatever the cwd."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))


_register_resolvers()
