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
from conftest import compose_cfg, run_cli

from gender import PROJECT_ROOT
from gender.training import train

DETERMINISTIC = ["debug=tiny", "logger=none", "trainer.deterministic=true", "trainer.epochs=4",
                 "data.synthetic.n_per_class=150"]


def history(run_dir):
    with open(run_dir / "history.csv") as f:
        return [{k: v for k, v in row.items()} for row in csv.DictReader(f)]


def comparable(metrics):
    drop = {"wall_seconds", "fit_seconds", "seconds_per_epoch", "overrides"}
    return {k: v for k, v in metrics.items() if k not in drop}


def test_two_deterministic_runs_give_identical_metrics(tmp_path):
    a = train(compose_cfg(*DETERMINISTIC, tmp_path=tmp_path / "a"))
    b = train(compose_cfg(*DETERMINISTIC, tmp_path=tmp_path / "b"))
    assert history(tmp_path / "a" / "run") == history(tmp_path / "b" / "run")
    assert comparable(a) == comparable(b)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path):
    cache = f"paths.cache_dir={tmp_path / 'cache'}"
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert run_cli("gender.run", *DETERMINISTIC, cache, f"hydra.run.dir={whole}").returncode == 0

    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.Popen([sys.executable, "-m", "gender.run", *DETERMINISTIC, cache,
                             f"hydra.run.dir={broken}"], cwd=PROJECT_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def test_resume_refuses_a_finished_run(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- debug=tiny\n")
    (tmp_path / "metrics.json").write_text("{}")
    proc = run_cli("gender.resume", str(tmp_path))
    assert proc.returncode != 0 and "already finished" in proc.stderr
