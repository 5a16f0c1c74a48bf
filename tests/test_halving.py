"""Successive halving (hydra_plugins/gender_halving_sweeper, ``hparams_search=lr_dropout_halving``).

Three layers: the pure logic (rungs, search space, ranking) in milliseconds; the sweeper driving a
stand-in Hydra app that keeps the run-directory contract without TensorFlow (a few seconds a sweep,
with the basic, joblib and submitit launchers); and real ``debug=tiny`` halving sweeps of
``gender.run`` (slow).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import compose_cfg
from hydra.core.override_parser.overrides_parser import OverridesParser

from gender import CONF_DIR, PROJECT_ROOT
from hydra_plugins.gender_halving_sweeper._core import (
    HalvingError,
    Trial,
    configurations,
    n_promoted,
    parse_space,
    rank,
    rung_schedule,
)

PRESET = CONF_DIR / "hparams_search" / "lr_dropout_halving.yaml"
#: whether the training code can pause a run after a rung (``trainer.stop_at_epoch``)


def space_of(*overrides: str):
    return parse_space(OverridesParser.create().parse_overrides(list(overrides)))


def read_history(job: Path) -> list[dict[str, str]]:
    with open(job / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def rungs_of(sweep: Path) -> dict:
    return json.loads((sweep / "rungs.json").read_text())


def tail(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout[-3000:] + "\n----\n" + proc.stderr[-6000:]


# ------------------------------------------------------------------------------ the logic
@pytest.mark.parametrize(
    "max_epochs, min_epochs, eta, expected",
    [
        (10, 1, 3, [1, 3, 10]),  # the 9-epoch rung is stretched to 10, not followed by it
        (9, 1, 3, [1, 3, 9]),
        (4, 1, 3, [1, 4]),  # experiment=fast
        (3, 1, 3, [1, 3]),
        (2, 1, 3, [1, 2]),  # the first rung is always min_epochs
        (1, 1, 3, [1]),  # nothing to halve
        (30, 1, 3, [1, 3, 9, 30]),
        (8, 1, 2, [1, 2, 4, 8]),
        (10, 2, 3, [2, 10]),
    ],
)
def test_rung_schedule(max_epochs, min_epochs, eta, expected) -> None:
    assert rung_schedule(max_epochs, min_epochs, eta) == expected


def test_explicit_rungs_and_bad_settings() -> None:
    assert rung_schedule(10, rungs=[4, 1, 12]) == [1, 4, 10]
    with pytest.raises(HalvingError, match="eta=1"):
        rung_schedule(10, 1, 1)
    with pytest.raises(HalvingError, match="min_epochs=0"):
        rung_schedule(10, 0, 3)
    assert [n_promoted(n, 3) for n in (9, 6, 3, 2, 1)] == [3, 2, 1, 1, 1]


def test_grid_space_command_line_replaces_the_preset() -> None:
    space = space_of(
        "optimizer.lr=0.001,0.003", "model.dropout=0.2,0.4", "optimizer.lr=0.01,0.1", "trainer.verbose=0"
    )
    assert space.fixed == ["trainer.verbose=0"]
    assert configurations(space) == [
        [f"optimizer.lr={lr}", f"model.dropout={d}"] for lr in ("0.01", "0.1") for d in ("0.2", "0.4")
    ]


def test_random_draws_log_uniform_and_reproducible() -> None:
    space = space_of(
        "optimizer.lr=tag(log, interval(1e-4, 1e-2))",
        "model.dropout=interval(0.0, 0.6)",
        "optimizer=adam,sgd",
    )
    draws = configurations(space, n_configs=200, seed=3)
    assert draws == configurations(space, n_configs=200, seed=3)
    assert draws != configurations(space, n_configs=200, seed=4)
    lrs = [float(c[0].split("=")[1]) for c in draws]
    dropouts = [float(c[1].split("=")[1]) for c in draws]
    assert all(1e-4 <= v <= 1e-2 for v in lrs) and all(0 <= v <= 0.6 for v in dropouts)
    assert 0.3 < sum(v < 1e-3 for v in lrs) / len(lrs) < 0.7  # log-uniform: half below the middle
    assert {c[2] for c in draws} == {"optimizer=adam", "optimizer=sgd"}
    with pytest.raises(HalvingError, match="n_configs"):
        configurations(space)  # an interval has no grid


def test_ranking_by_direction_failures_last() -> None:
    trials = [
        Trial(0, [], values={1: 0.7}),
        Trial(1, [], values={1: 0.9}),
        Trial(2, []),
        Trial(3, [], values={1: float("nan")}),
        Trial(4, [], values={1: 0.9}),
    ]
    assert [t.id for t in rank(trials, "maximize")] == [1, 4, 0, 2, 3]
    assert [t.id for t in rank(trials, "minimize")] == [0, 1, 4, 2, 3]


def test_preset_selects_the_plugin_sweeper() -> None:
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    cfg = compose_cfg("hparams_search=lr_dropout_halving", return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.gender_halving_sweeper.halving_sweeper.HalvingSweeper"
    assert (sweeper.eta, sweeper.min_epochs, sweeper.metric, sweeper.direction) == (
        3,
        1,
        "val_accuracy",
        "maximize",
    )
    assert dict(sweeper.params) == {"optimizer.lr": "0.001,0.003,0.006", "model.dropout": "0.2,0.4,0.6"}
    assert "HalvingSweeper" in {c.__name__ for c in Plugins.instance().discover(Sweeper)}


def test_pyproject_ships_the_plugin() -> None:
    import tomllib

    include = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
        "find"
    ]["include"]
    assert "hydra_plugins*" in include
    assert not (PROJECT_ROOT / "hydra_plugins" / "__init__.py").exists()  # a namespace package


# -------------------------------------------------------------- the sweeper on a stand-in app
STAND_IN = '''
"""Keeps the run-directory contract the sweeper relies on, without TensorFlow: history.csv,
metrics.json, checkpoints/backup/training_metadata.json while paused, fit_complete.json."""
import csv, json, math, shutil
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    out = Path(HydraConfig.get().runtime.output_dir)
    with open(out / "launches.txt", "a") as f:
        f.write(" ".join(HydraConfig.get().overrides.task) + "\\n")
    if cfg.model.dropout >= 1:
        raise ValueError(f"model.dropout={cfg.model.dropout} is invalid")
    if (out / "metrics.json").exists():
        raise RuntimeError("a finished run was launched again")
    backup = out / "checkpoints" / "backup" / "training_metadata.json"
    rows = list(csv.DictReader(open(out / "history.csv"))) if (out / "history.csv").exists() else []
    start = json.loads(backup.read_text())["epoch"] if backup.exists() else 0
    if start != len(rows) or (out / "checkpoints" / "fit_complete.json").exists():
        raise RuntimeError(f"cannot resume: state at {start}, history {len(rows)}")
    stop = min(cfg.trainer.stop_at_epoch or cfg.trainer.epochs, cfg.trainer.epochs)
    for epoch in range(start + 1, stop + 1):  # the best lr is 0.003; more epochs help
        acc = 0.9 - abs(math.log10(cfg.optimizer.lr / 0.003)) / 5 - cfg.model.dropout / 10 + epoch / 100
        rows.append({"epoch": epoch, "val_accuracy": round(acc, 6)})
    with open(out / "history.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["epoch", "val_accuracy"])
        w.writeheader()
        w.writerows(rows)
    backup.parent.mkdir(parents=True, exist_ok=True)
    if stop < cfg.trainer.epochs:
        backup.write_text(json.dumps({"epoch": stop, "batch": 0}))
    else:
        shutil.rmtree(backup.parent)
    (out / "checkpoints" / "fit_complete.json").write_text("{}")
    best = max(float(r["val_accuracy"]) for r in rows)
    (out / "metrics.json").write_text(json.dumps({"status": "completed", "val_accuracy": best,
                                                  "epochs_run": len(rows)}))
    return best


if __name__ == "__main__":
    main()
'''
STAND_IN_CONFIG = """
defaults:
  - _self_
  - override hydra/sweeper: halving
optimizer: {lr: 0.001}
model: {dropout: 0.2}
trainer: {epochs: 10, stop_at_epoch: null}
hydra:
  job: {chdir: false}
  sweeper:
    eta: 3
    params:
      optimizer.lr: 0.0001,0.0003,0.001,0.003,0.01,0.03
      model.dropout: 0.1,0.3
"""


def stand_in_sweep(
    tmp_path: Path, *args: str, config: str = STAND_IN_CONFIG
) -> tuple[subprocess.CompletedProcess, Path]:
    app = tmp_path / "app"
    (app / "conf").mkdir(parents=True, exist_ok=True)
    (app / "stand_in.py").write_text(STAND_IN)
    (app / "conf" / "config.yaml").write_text(config)
    sweep = tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(app / "stand_in.py"), "-m", f"hydra.sweep.dir={sweep}", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, sweep


def test_halving_on_a_stand_in_app(tmp_path: Path) -> None:
    """12 configs, eta 3, 10 epochs: 12 x 1 epoch, the best 4 to 3 epochs, the best one to 10."""
    proc, sweep = stand_in_sweep(tmp_path)
    assert proc.returncode == 0, tail(proc)
    doc = rungs_of(sweep)
    assert doc["status"] == "done" and doc["rungs"] == [1, 3, 10]
    assert [len(r["configs"]) for r in doc["rung_results"]] == [12, 4, 1]
    configs = {c["id"]: c for c in doc["configs"]}
    finished = [c for c in configs.values() if c["status"] == "finished"]
    assert len(finished) == 1 and finished[0]["params"] == {"optimizer.lr": "0.003", "model.dropout": "0.1"}
    assert sorted(c["epochs"] for c in configs.values()) == [1] * 8 + [3] * 3 + [10]
    assert doc["epochs_trained"] == 8 + 9 + 10 and doc["epochs_full_grid"] == 120

    best = sweep / finished[0]["dir"]
    assert [int(r["epoch"]) for r in read_history(best)] == list(range(1, 11))
    # one directory per configuration, launched once per rung, continuing where it stopped
    assert len([p for p in sweep.iterdir() if (p / ".hydra").is_dir()]) == 12
    launches = (best / "launches.txt").read_text().splitlines()
    assert [ln.split()[-1] for ln in launches] == [
        "trainer.stop_at_epoch=1",
        "trainer.stop_at_epoch=3",
        "model.dropout=0.1",
    ]
    assert finished[0]["job_nums"][0] == int(finished[0]["dir"]) and len(finished[0]["job_nums"]) == 3
    assert json.loads((best / "metrics.epoch1.json").read_text())["epochs_run"] == 1
    assert json.loads((best / "metrics.epoch3.json").read_text())["epochs_run"] == 3
    # stopped configurations keep their results, not their resume state
    stopped = [c for c in configs.values() if c["status"] == "stopped"]
    for c in stopped:
        job = sweep / c["dir"]
        assert (job / "metrics.json").is_file() and not (job / "checkpoints" / "backup").exists()
    assert yaml.safe_load((best / ".hydra" / "overrides.yaml").read_text()) == [
        "optimizer.lr=0.003",
        "model.dropout=0.1",
    ]  # the last rung is a plain full run


def test_failing_job_drops_out_the_sweep_goes_on_and_fails(tmp_path: Path) -> None:
    proc, sweep = stand_in_sweep(tmp_path, "optimizer.lr=0.001,0.003,0.01", "model.dropout=0.1,1.5")
    assert proc.returncode != 0, tail(proc)
    assert "model.dropout=1.5 is invalid" in proc.stderr
    doc = rungs_of(sweep)
    statuses = sorted(c["status"] for c in doc["configs"])
    assert statuses == ["failed"] * 3 + ["finished"] + ["stopped"] * 2
    assert all("dropout" in c["error"] for c in doc["configs"] if c["status"] == "failed")
    assert doc["rung_results"][0]["failed"] == [1, 3, 5] and doc["status"] == "done"


def test_random_draws_and_explicit_rungs(tmp_path: Path) -> None:
    proc, sweep = stand_in_sweep(
        tmp_path,
        "hydra.sweeper.n_configs=5",
        "hydra.sweeper.rungs=[2]",
        "hydra.sweeper.eta=2",
        "trainer.epochs=4",
        "optimizer.lr=tag(log, interval(1e-4, 1e-2))",
    )
    assert proc.returncode == 0, tail(proc)
    doc = rungs_of(sweep)
    assert doc["rungs"] == [2, 4] and [len(r["configs"]) for r in doc["rung_results"]] == [5, 2]
    assert all(1e-4 <= float(c["params"]["optimizer.lr"]) <= 1e-2 for c in doc["configs"])
    assert all(c["params"]["model.dropout"] in ("0.1", "0.3") for c in doc["configs"])


def test_training_code_that_cannot_pause_is_one_clear_error(tmp_path: Path) -> None:
    config = STAND_IN_CONFIG.replace("stop_at_epoch: null", "verbose: 0")
    proc, sweep = stand_in_sweep(tmp_path, config=config)
    assert proc.returncode != 0
    assert "trainer.stop_at_epoch is not a key of this config" in proc.stderr, tail(proc)
    assert not [p for p in sweep.iterdir() if p.is_dir()]  # nothing was launched


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_halving_with_other_launchers(tmp_path: Path, launcher: str) -> None:
    pytest.importorskip(
        {
            "joblib": "hydra_plugins.hydra_joblib_launcher",
            "submitit_local": "hydra_plugins.hydra_submitit_launcher",
        }[launcher]
    )
    proc, sweep = stand_in_sweep(
        tmp_path,
        f"hydra/launcher={launcher}",
        "trainer.epochs=3",
        "optimizer.lr=0.001,0.003,0.01",
        "model.dropout=0.1",
    )
    assert proc.returncode == 0, tail(proc)
    doc = rungs_of(sweep)
    assert [len(r["configs"]) for r in doc["rung_results"]] == [3, 1]
    best = next(c for c in doc["configs"] if c["status"] == "finished")
    assert best["params"]["optimizer.lr"] == "0.003"
    assert [int(r["epoch"]) for r in read_history(sweep / best["dir"])] == [1, 2, 3]


# ------------------------------------------------------------------------ real tiny sweeps
@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.mark.slow
def test_tiny_halving_sweep_promotes_continues_and_survives_a_failure(tmp_path: Path, cache: Path) -> None:
    """6 configurations (3 with an invalid dropout), eta 3, 3 epochs: rungs at 1 and 3 epochs.
    The 2 best of the 3 valid ones continue from epoch 1 in their own directories; the third stops
    after 1 epoch; the failures are recorded and the sweep exits non-zero at the end."""
    sweep = tmp_path / "halving"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1"}
    cmd = [
        sys.executable,
        "-m",
        "gender.run",
        "-m",
        "hparams_search=lr_dropout_halving",
        "debug=tiny",
        "trainer.epochs=3",
        "trainer.verbose=0",
        "logger=none",
        f"paths.cache_dir={cache}",
        f"hydra.sweep.dir={sweep}",
        "optimizer.lr=0.001,0.003,0.01",
        "model.dropout=0.2,1.5",
    ]
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode != 0, tail(proc)
    doc = rungs_of(sweep)
    assert doc["rungs"] == [1, 3] and doc["status"] == "done", doc
    by_status: dict[str, list[dict]] = {}
    for c in doc["configs"]:
        by_status.setdefault(c["status"], []).append(c)
    assert {k: len(v) for k, v in by_status.items()} == {"failed": 3, "finished": 2, "stopped": 1}, doc

    for c in by_status["failed"]:
        job = sweep / c["dir"]
        assert "model.dropout=1.5" in json.loads((job / "failure.json").read_text())["error"]
    stopped = sweep / by_status["stopped"][0]["dir"]
    assert json.loads((stopped / "metrics.json").read_text())["epochs_run"] == 1
    assert not (stopped / "checkpoints" / "backup").exists()

    for c in by_status["finished"]:
        job = sweep / c["dir"]
        final = json.loads((job / "metrics.json").read_text())
        assert final["epochs_run"] == 3 and final["status"] == "completed"
        history = read_history(job)
        assert [int(r["epoch"]) for r in history] == [1, 2, 3]
        # epoch 1 is the row written in rung 1, kept (not retrained): its training-time clock
        # is the one the paused run reported, and the clock went on from there
        rung1 = json.loads((job / "metrics.epoch1.json").read_text())
        assert rung1["epochs_run"] == 1
        assert rung1["fit_seconds"] == pytest.approx(float(history[0]["elapsed_seconds"]), abs=0.01)
        assert float(history[2]["elapsed_seconds"]) > float(history[0]["elapsed_seconds"])
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        assert overrides[:2] == c["overrides"] and not any("stop_at_epoch" in o for o in overrides)

    # the summary: the swept keys (not the pause key), finished configurations ranked first,
    # and where each one stopped
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["swept_keys"] == ["optimizer.lr", "model.dropout"], summary["swept_keys"]
    with open(sweep / "summary.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["halving"] for r in table] == ["finished", "finished", "stopped", "failed", "failed", "failed"]
    assert table[0]["by_rung"].startswith("1: ") and ", 3: " in table[0]["by_rung"]
    assert table[2]["by_rung"].startswith("1: ") and "3: " not in table[2]["by_rung"]
    for row in table[:2]:  # a promoted configuration's time is both its launches
        launches = [
            json.loads((sweep / row["job"] / f).read_text()) for f in ("metrics.epoch1.json", "metrics.json")
        ]
        assert float(row["wall_seconds"]) == pytest.approx(sum(m["wall_seconds"] for m in launches), abs=0.02)
    assert "| halving | by_rung |" in (sweep / "summary.md").read_text()


# ------------------------------------------------------------------------------ sweep speed
def test_wandb_sweep_file_terminates_early_by_hyperband() -> None:
    cfg = yaml.safe_load((PROJECT_ROOT / "sweeps" / "wandb_sweep.yaml").read_text())
    assert cfg["early_terminate"] == {"type": "hyperband", "min_iter": 1, "eta": 3}
    assert cfg["metric"]["name"] == "val_accuracy"


@pytest.mark.slow
def test_bench_reports_jobs_per_hour_for_the_fast_preset(tmp_path: Path) -> None:
    run_dir = tmp_path / "bench"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gender.bench",
            "debug=tiny",
            "bench.sweep.only=true",
            "bench.sweep.batches=2",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, tail(proc)
    assert not (run_dir / "bench.json").exists()  # bench.sweep.only
    r = json.loads((run_dir / "sweep_jobs.json").read_text())
    assert r["preset"] == "fast" and r["epochs"] == 2 and r["job_metrics"]["epochs_run"] == 2
    assert r["extrapolated"] and r["batches_timed_per_epoch"] == 2 and r["train_batches_per_epoch"] == 4
    s = r["seconds"]
    parts = (
        "process_start_imports_config_exit",
        "tensorflow_import",
        "model_build_compile",
        "first_epoch_extra",
        "data_evaluation_outputs",
    )
    assert s["fixed_per_job"] == pytest.approx(sum(s[k] for k in parts), abs=0.06)
    assert s["job"] == pytest.approx(s["fixed_per_job"] + s["training_steady_state"], abs=0.02)
    assert r["jobs_per_hour_one_process_each"] == pytest.approx(3600 / s["job"], rel=0.01)
    assert r["jobs_per_hour_in_process"] >= r["jobs_per_hour_one_process_each"]
    assert "jobs per hour, a process per job" in proc.stdout
