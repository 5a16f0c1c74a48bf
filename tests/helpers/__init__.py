"""Shared test helpers, imported as ``helpers`` (tests/ is on sys.path under pytest): composed
configs, generated image folders, a model with known predictions, the CLI run as a user runs it."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image

from gender import CONF_DIR, PROJECT_ROOT

REAL_DATA = PROJECT_ROOT.parent / "shared" / "data" / "genderface"
#: TensorFlow's native start-up lines, which no command may print
NOISE = re.compile(r"absl::InitializeLog|oneDNN|cuda drivers|cuInit|^[IW]\d{4} \d\d:\d\d:")


def compose_cfg(
    *overrides: str,
    tmp_path: Path | None = None,
    config_name: str = "config",
    return_hydra_config: bool = False,
) -> DictConfig:
    """The config exactly as ``python -m gender.<command> <overrides>`` would see it (``config_name``:
    ``config`` for run, ``evaluate``, ``predict``, ``bench``).

    Outside a Hydra job there is no runtime output dir, so tests point ``paths.output_dir`` and the
    cache at tmp_path; every other key comes from conf/ unchanged.
    """
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name=config_name, overrides=list(overrides), return_hydra_config=return_hydra_config
        )
    if tmp_path is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.paths.cache_dir = str(tmp_path / "cache")
    return cfg


def recorded_run(
    run_dir: Path, root: Path, model_file: Path, *overrides: str, split_seed: int = 0, ratios=(0.6, 0.2, 0.2)
) -> Path:
    """A training run's files as ensemble, evaluate and predict read them, without training: the
    model (moved in), the recorded config of a ``man/`` + ``woman/`` folder at ``root`` and a split."""
    from gender.data import Sample, split_samples, write_manifest

    folder = ["data=folder", f"data.root={root}", "data.classes.male=[man]", "data.classes.female=[woman]"]
    cfg = compose_cfg(*folder, "data.image_size=32", *overrides, tmp_path=run_dir.parent)
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    samples = [
        Sample(str(p), label, folder)
        for label, folder in enumerate(["man", "woman"])
        for p in sorted((root / folder).iterdir())
    ]
    splits = split_samples(samples, dict(zip(("train", "val", "test"), ratios, strict=True)), split_seed)
    write_manifest(splits, ["male", "female"], run_dir / "split.csv")
    model_file.replace(run_dir / "model.keras")
    return run_dir


def make_images(root: Path, layout: dict[str, int], size: int = 32, fmt: str = "png", seed: int = 0) -> Path:
    """Write ``layout[folder]`` random images into ``root/folder``; class 'woman'-like folders get
    brighter images so a model can learn something."""
    rng = np.random.default_rng(seed)
    for folder, n in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        bright = any(k in folder for k in ("woman", "female", "hijab"))
        for i in range(n):
            base = 150 if bright else 90
            arr = np.clip(rng.normal(base, 40, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / folder / f"{i:04d}.{fmt}")
    return root


def run_cli(
    *args: str, cwd: Path = PROJECT_ROOT, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m <args>`` like a user would, capturing output."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env
    )


def assert_one_line(proc: subprocess.CompletedProcess, rc: int, expected: str) -> str:
    """Exit code ``rc``, exactly one ``error:`` line holding ``expected``, no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == rc, proc.stderr[-3000:]
    assert len(lines) == 1 and expected in lines[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    return lines[0]


def cli_in_process(module: str, *args: str, capsys) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` through the command's own entrypoint in this process: the
    code path of ``run_cli`` without a fresh interpreter's 5 s of imports. Only for checks that
    end before a job starts (a config mistake's one line); a job in-process would leave Hydra's
    logging set up here."""
    argv = sys.argv
    sys.argv = [module, *args]
    try:
        importlib.import_module(module).cli()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess([module, *args], code, out, err)


def save_tiny_model(
    path: Path, weights: tuple[float, float, float] = (8.0, 0.0, -8.0), bias: float = 0.0, name: str = "tiny"
) -> Path:
    """Raw pixels -> Rescaling -> channel means -> sigmoid(weights . means + bias); by default
    sigmoid(8 * (red - blue)): red means female.

    Fixed weights instead of training keep the expected predictions exact and the test fast.
    """
    import keras

    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(1, activation="sigmoid")
    model = keras.Model(inputs, dense(x), name=name)
    dense.set_weights([np.array(weights, dtype=float).reshape(3, 1), np.array([bias])])
    model.save(path)
    return path


def interrupt_after(epochs: int, monkeypatch) -> None:
    """Make the next ``gender.training.train`` stop (Ctrl-C) when epoch ``epochs + 1`` begins,
    after the state of epoch ``epochs`` was saved."""
    import keras

    from gender import training

    make_callbacks = training.make_callbacks

    class CtrlC(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == epochs:
                raise KeyboardInterrupt

    monkeypatch.setattr(training, "make_callbacks", lambda *a, **k: [*make_callbacks(*a, **k), CtrlC()])
