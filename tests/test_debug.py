"""The debug presets: `debug=fast` (your configuration and data, a few batches), `debug=overfit`
(a few batches until the loss falls) and `debug=tiny` (the synthetic demo), each in seconds. They
run through ``train`` in this process, with the config ``python -m gender.run debug=...`` composes
(the CLI's own path is checked once, in test_run)."""

from __future__ import annotations

import csv
import json
import re

import pytest
from helpers import compose_cfg

from gender.training import train


@pytest.mark.parametrize("preset", ["fast", "overfit", "tiny"])
def test_presets_print_progress(preset):
    cfg = compose_cfg(f"debug={preset}")
    assert cfg.trainer.verbose != 0
    assert cfg.logger.mode == ("disabled" if preset != "tiny" else "offline")  # tiny: W&B tests use it
    assert cfg.data.image_size <= 64
    assert not cfg.trainer.early_stopping.enabled


@pytest.mark.parametrize("preset", ["fast", "overfit"])
def test_presets_keep_the_users_data_and_model(preset):
    """Unlike debug=tiny they never swap the data for synthetic images: they check yours."""
    cfg = compose_cfg("experiment=best", "data.root=/data/faces", f"debug={preset}")
    assert cfg.data.name == "genderface" and cfg.data.root == "/data/faces"
    assert cfg.model.name == "rescnn"  # experiment=best's model
    assert cfg.trainer.limit_batches and cfg.trainer.epochs <= 20
    assert compose_cfg("debug=tiny").data.name == "synthetic"


def _history(run_dir):
    with open(run_dir / "history.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_debug_fast_runs_a_few_batches(tmp_path, capsys):
    train(
        compose_cfg(
            "debug=fast",
            "data=synthetic",
            "data.synthetic.n_per_class=100",
            "data.synthetic.size=64",
            tmp_path=tmp_path,
        )
    )
    run_dir = tmp_path / "run"
    stdout = capsys.readouterr().out
    history = _history(run_dir)
    assert len(history) == 2
    # 160 training images in batches of 32 would be 5 steps; trainer.limit_batches makes it 4
    assert len(re.findall(r"^4/4 - ", stdout, re.M)) == 2, stdout[-2000:]
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_run"] == 2
    assert not (run_dir / "wandb").exists()


@pytest.mark.slow
def test_debug_overfit_loss_falls(tmp_path, capsys):
    train(
        compose_cfg(
            "debug=overfit",
            "data=synthetic",
            "data.synthetic.n_per_class=100",
            "data.synthetic.size=32",
            tmp_path=tmp_path,
        )
    )
    losses = [float(row["loss"]) for row in _history(tmp_path / "run")]
    assert len(losses) == 20
    assert min(losses[-5:]) < 0.75 * losses[0], losses
    assert re.search(r"^Epoch 20/20$", capsys.readouterr().out, re.M)
