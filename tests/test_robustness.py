"""Interrupted runs resume exactly; deterministic runs repeat exactly; mistakes are one line."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import assert_one_line, cli_in_process, compose_cfg, interrupt_after, run_cli

from gender import PROJECT_ROOT
from gender.training import train
from hydra_plugins.gender_halving_sweeper._core import reopen

TINY_DETERMINISTIC = ["debug=tiny", "logger=none", "trainer.deterministic=true", "trainer.epochs=4"]
#: 15 batches per epoch instead of 4: time to kill the process between two epochs
DETERMINISTIC = [*TINY_DETERMINISTIC, "data.synthetic.n_per_class=150"]


def history(run_dir):
    """Per-epoch metrics, without the wall-clock column (the only one allowed to differ)."""
    with open(run_dir / "history.csv") as f:
        return [{k: v for k, v in row.items() if k != "elapsed_seconds"} for row in csv.DictReader(f)]


def comparable(metrics):
    drop = {"wall_seconds", "fit_seconds", "seconds_per_epoch", "overrides"}
    return {k: v for k, v in metrics.items() if k not in drop}


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path):
    """Two processes train the same deterministic run; one is killed after epoch 2 and resumed.
    Epoch for epoch and in every metric the two are the same: the resume is exact, and so is a
    repeated deterministic run (epochs 1-2 come from two separate processes). Then a run that died
    after training but before its metrics resumes without training again."""
    cache = f"paths.cache_dir={tmp_path / 'cache'}"
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert run_cli("gender.run", *DETERMINISTIC, cache, f"hydra.run.dir={whole}").returncode == 0

    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gender.run", *DETERMINISTIC, cache, f"hydra.run.dir={broken}"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (broken / "history.csv").exists() and len(history(broken)) >= 2:
            proc.send_signal(signal.SIGKILL)  # no chance to clean up: the hardest interruption
            break
        time.sleep(0.01)
    proc.wait()
    done_before = len(history(broken))
    assert 2 <= done_before < 4 and not (broken / "metrics.json").exists()

    resumed = run_cli("gender.resume", str(broken))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["epoch"] for r in history(broken)] == ["1", "2", "3", "4"]
    assert history(broken) == history(whole)
    a = json.loads((whole / "metrics.json").read_text())
    b = json.loads((broken / "metrics.json").read_text())
    assert comparable(a) | {"split_sizes": 0} == comparable(b) | {"split_sizes": 0}
    # where the run started stays recorded; the resume adds the machine it continued on
    env = json.loads((broken / "environment.json").read_text())
    assert len(env["resumed_on"]) == 1 and env["resumed_on"][0]["dtype_policy"] == env["dtype_policy"]

    # a crash during evaluation must not cost the training: resume evaluates the saved best epoch
    before = history(whole)
    (whole / "metrics.json").unlink()  # as if the process died right after fitting
    proc = run_cli("gender.resume", str(whole))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "evaluating its best epoch only" in proc.stdout + proc.stderr
    assert history(whole) == before
    assert json.loads((whole / "metrics.json").read_text())["epochs_run"] == len(before)


def test_resume_refuses_a_finished_run(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- debug=tiny\n")
    (tmp_path / "metrics.json").write_text("{}")
    proc = run_cli("gender.resume", str(tmp_path))
    assert proc.returncode != 0 and "already finished" in proc.stderr


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optimizer.lr=0", "optimizer.lr=0 is invalid: must be a number > 0"),
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1 is invalid"),
        ("model.dropout=1.0", "model.dropout=1.0 is invalid: must be in [0, 1)"),
        ("model.dropout=-0.2", "model.dropout=-0.2 is invalid"),
        ("data.image_size=0", "data.image_size=0 is invalid: must be a positive integer"),
        ("data.batch_size=-4", "data.batch_size=-4 is invalid: must be a positive integer"),
        ("data.split.test=0.3", "ratios must sum to 1"),
        ("data.split={train:0.9,val:0,test:0.1}", "data.split.val=0.0 is invalid: the val split must not"),
        ("optimizer=adamm", "optimizer=adamm is not an option; allowed: adam, adamw, sgd"),
        ("model=resnet9000", "model=resnet9000 is not an option; allowed: descriptor_mlp, rescnn, seed_cnn"),
        ("optimizer.learning_rate=0.1", "optimizer.learning_rate is not a config key; keys in optimizer:"),
        ("augmentation.placement=gpu", "allowed values are pipeline, model"),
        ("trainer.mixed_precision=half", "allowed values are false, true, float16, bfloat16, auto"),
    ],
)
def test_config_mistakes_exit_with_one_line(tmp_path, capsys, override, expected):
    proc = cli_in_process(
        "gender.run",
        "debug=tiny",
        "logger=none",
        f"paths.cache_dir={tmp_path}",
        override,
        f"hydra.run.dir={tmp_path / 'run'}",
        capsys=capsys,
    )
    assert_one_line(proc, 2, expected)
    assert not (tmp_path / "run").exists()


def test_a_mistake_found_in_the_job_is_one_line_from_the_real_cli(tmp_path):
    """A class folder that is not there is found once the job reads the data root: the same one
    line, through a real interpreter."""
    proc = run_cli(
        "gender.run",
        "debug=tiny",
        "logger=none",
        f"paths.cache_dir={tmp_path}",
        "data.classes.male=[nobody]",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert_one_line(proc, 2, "data.classes.male: folder 'nobody' not found")


@pytest.mark.slow
def test_bad_files_are_skipped_listed_and_training_finishes(tmp_path):
    """Corrupt JPEG, truncated PNG, zero-byte file, text named .jpg, oversized image, .DS_Store and a
    duplicate filed under both classes: the run trains on the rest and lists every one."""
    import numpy as np
    from helpers import make_images
    from PIL import Image

    root = make_images(tmp_path / "faces", {"male": 20, "female": 20})
    jpeg = root / "male" / "corrupt.jpg"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(jpeg)
    raw = bytearray(jpeg.read_bytes())
    raw[200:400] = b"\xff" * 200
    jpeg.write_bytes(bytes(raw[: len(raw) // 2]))
    png = (root / "female" / "0001.png").read_bytes()
    (root / "female" / "truncated.png").write_bytes(png[: len(png) // 2])
    (root / "male" / "empty.jpg").write_bytes(b"")
    (root / "female" / "text.jpg").write_text("hello, not an image")
    Image.new("RGB", (300, 300)).save(root / "male" / "huge.png")
    (root / "male" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "female" / "conflict.png").write_bytes((root / "male" / "0003.png").read_bytes())
    run_dir = tmp_path / "run"
    proc = run_cli(
        "gender.run",
        "data=folder",
        f"data.root={root}",
        "data.image_size=32",
        "data.max_pixels=40000",
        "trainer.epochs=1",
        "trainer.verbose=0",
        "logger=none",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(run_dir / "skipped_files.csv") as f:
        rows = list(csv.DictReader(f))
    skipped = {row["path"].rsplit("/", 1)[-1]: row["reason"] for row in rows}
    assert set(skipped) == {
        "corrupt.jpg",
        "truncated.png",
        "empty.jpg",
        "text.jpg",
        "huge.png",
        "conflict.png",
        "0003.png",
    }
    assert skipped["huge.png"].startswith("too large") and skipped["empty.jpg"].startswith("empty")
    assert "conflicting label" in skipped["conflict.png"]
    summary = [line for line in proc.stdout.splitlines() if line.startswith("data:")]
    assert len(summary) == 1 and "1 hidden files ignored" in summary[0]
    with open(run_dir / "split.csv") as f:
        used = {row["path"] for row in csv.DictReader(f)}
    assert not used & {row["path"] for row in rows} and len(used) == 40 - 1  # male/0003.png conflicts


# ------------------------------------------------ weight averaging (optimizer.use_ema)
AVERAGED = [*TINY_DETERMINISTIC, "optimizer.use_ema=true", "optimizer.ema_momentum=0.9"]


@pytest.mark.slow
def test_weight_averaging_validates_the_average_and_goes_on_from_the_raw_weights(tmp_path, monkeypatch):
    """Validation sees the average; a run interrupted (Ctrl-C, then resume) or paused by a halving
    rung (``trainer.stop_at_epoch``, then the next rung) goes on from the raw weights, not the
    average it was saved with: both end as the uninterrupted run."""
    plain = train(compose_cfg(*TINY_DETERMINISTIC, tmp_path=tmp_path / "plain"))
    whole = train(compose_cfg(*AVERAGED, tmp_path=tmp_path / "whole"))
    plain_rows, whole_rows = history(tmp_path / "plain" / "run"), history(tmp_path / "whole" / "run")
    # the raw weights train as without averaging; validation sees the average
    assert [r["loss"] for r in whole_rows] == [r["loss"] for r in plain_rows]
    assert [r["val_loss"] for r in whole_rows] != [r["val_loss"] for r in plain_rows]
    assert whole["test_accuracy"] != plain["test_accuracy"] or whole["test_loss"] != plain["test_loss"]

    # interrupted after epoch 2 (its state saved with the average in the model), then resumed:
    # the same run as the uninterrupted one, epoch for epoch
    cfg = compose_cfg(*AVERAGED, tmp_path=tmp_path / "broken")
    interrupt_after(2, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.undo()
    resumed = train(cfg)
    assert history(tmp_path / "broken" / "run") == whole_rows
    assert comparable(resumed) | {"split_sizes": 0} == comparable(whole) | {"split_sizes": 0}

    train(compose_cfg(*AVERAGED, "trainer.stop_at_epoch=2", tmp_path=tmp_path / "paused"))
    assert len(history(tmp_path / "paused" / "run")) == 2
    reopen(tmp_path / "paused" / "run", 2)  # what the halving sweeper does before the next rung
    went_on = train(compose_cfg(*AVERAGED, tmp_path=tmp_path / "paused"))
    assert history(tmp_path / "paused" / "run") == whole_rows
    assert went_on["test"] == whole["test"]


@pytest.mark.slow
def test_weight_averaging_keeps_the_average_when_training_stops_early(tmp_path):
    last = ["trainer.checkpoint.restore_best=false"]  # model.keras: the weights fit ended with
    stop = ["trainer.early_stopping.enabled=true", "trainer.early_stopping.patience=0"]
    stop += ["trainer.early_stopping.min_delta=1.0"]  # no epoch improves by 1.0: stops after 2 of 4
    stopped = train(compose_cfg(*AVERAGED, *last, *stop, tmp_path=tmp_path / "stopped"))
    planned = train(compose_cfg(*AVERAGED, *last, "trainer.epochs=2", tmp_path=tmp_path / "planned"))
    assert stopped["epochs_run"] == planned["epochs_run"] == 2
    # a run stopped early ends with the average, as one that ran all its epochs does
    assert stopped["test"] == planned["test"]


@pytest.mark.slow
def test_weight_averaging_restarts_each_epoch_before_its_start_epoch(tmp_path):
    """At momentum 1.0 the average never moves from where it (re)starts, so after 4 epochs that
    all restart it, the saved average is the raw weights the 4th epoch began with: those of a
    3-epoch run."""
    import numpy as np

    from gender.inference import load_model

    last = "trainer.checkpoint.restore_best=false"  # model.keras: the weights fit ended with
    frozen = ["optimizer.use_ema=true", "optimizer.ema_momentum=1.0", "optimizer.ema_start_epoch=5"]
    train(compose_cfg(*TINY_DETERMINISTIC, last, "trainer.epochs=3", tmp_path=tmp_path / "three"))
    train(compose_cfg(*TINY_DETERMINISTIC, last, *frozen, tmp_path=tmp_path / "four"))
    three, four = (load_model(tmp_path / name / "run").trainable_weights for name in ("three", "four"))
    assert len(three) == len(four) > 0
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(three, four, strict=True))
