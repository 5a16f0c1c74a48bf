"""Sweeps end to end: Hydra grid, Optuna, joblib, submitit and a W&B native sweep command.

Every job is tiny (synthetic 32x32 images, 1 epoch) and every assertion reads what the jobs
wrote into their own directories. The multi-job tests are marked slow (they run in CI); the
config checks at the top take a second or two.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import NOISE
from hydra import compose, initialize_config_dir
from PIL import Image

from gender import CONF_DIR, PROJECT_ROOT

CONF = str(CONF_DIR)
SWEEP_FILE = PROJECT_ROOT / "sweeps" / "wandb_sweep.yaml"
TINY = ("debug=tiny", "trainer.epochs=1", "trainer.verbose=0")
#: The summary callback, also when conf/hydra/default.yaml does not (yet) name it.
CALLBACK = "++hydra.callbacks.sweep_summary._target_=gender.sweep_summary.SweepSummaryCallback"
GRID = {(lr, d) for lr in (0.001, 0.006) for d in (0.2, 0.4)}


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One decoded-image cache for the whole module: the synthetic set is drawn once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No W&B credentials or user state; W&B home, config, cache and data in tmp."""
    home = tmp_path / "home"
    home.mkdir()
    out = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "NETRC"}
    out.update(
        HOME=str(home),
        WANDB_CONFIG_DIR=str(home / "config"),
        WANDB_CACHE_DIR=str(home / "cache"),
        WANDB_DATA_DIR=str(home / "data"),
        WANDB_SILENT="true",
        HYDRA_FULL_ERROR="1",
    )
    # `/usr/bin/env python` (the W&B agent's interpreter) must be this interpreter
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out.get('PATH', '')}"
    return out


def multirun(
    sweep_dir: Path,
    cache: Path,
    env: dict[str, str],
    *args: str,
    tiny: tuple[str, ...] = TINY,
    timeout: int = 900,
) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "gender.run",
        "-m",
        *tiny,
        f"paths.cache_dir={cache}",
        f"hydra.sweep.dir={sweep_dir}",
        CALLBACK,
        *args,
    ]
    return subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def jobs_of(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def metrics(job: Path) -> dict:
    return json.loads((job / "metrics.json").read_text())


def summary_rows(sweep_dir: Path) -> list[dict[str, str]]:
    import csv

    with (sweep_dir / "summary.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def wandb_records(run_dir: Path, env: dict[str, str]) -> tuple[dict, dict]:
    """(run header, summary) of the one offline W&B run in a job dir, read by the SDK itself."""
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    cmd = [sys.executable, "-m", "wandb", "leet", "inspect", "--json"]
    out = subprocess.run(
        [*cmd, str(runs[0])], capture_output=True, text=True, check=True, timeout=120, env=env
    ).stdout
    header = next(
        json.loads(x)["run"] for x in out.splitlines() if x.strip() and json.loads(x)["type"] == "run"
    )
    summary = subprocess.run(
        [*cmd, "--summary", str(runs[0])], capture_output=True, text=True, check=True, timeout=120, env=env
    ).stdout
    return header, json.loads(summary)["summary"]


def tail(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout[-3000:] + "\n----\n" + proc.stderr[-5000:]


def agent_command(sweep_cfg: dict, params: dict) -> list[str]:
    """The argv ``wandb agent`` runs for one suggested parameter set.

    Mirrors ``wandb.wandb_agent.Agent._command_run`` (wandb 0.31) line for line, using the SDK's
    own helpers for the macro expansion and the ``${args_no_hyphens}`` list.
    """
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    command = {"args": {k: {"value": v} for k, v in params.items()}, "program": sweep_cfg.get("program")}
    sweep_command = sweep_utils.create_sweep_command(list(sweep_cfg["command"]))
    sweep_vars = sweep_utils.create_sweep_command_args(command)
    sweep_vars["interpreter"] = ["python"]
    sweep_vars["program"] = [command["program"]]
    sweep_vars["env"] = ["/usr/bin/env"]
    argv: list[str] = []
    for chunk in sweep_command:
        chunk = str(chunk)
        if chunk.startswith("${") and chunk.endswith("}"):
            argv += sweep_vars.get(chunk[2:-1]) or []
        else:
            argv.append(chunk)
    return argv


def compose_hydra(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


# ----------------------------------------------------------------------------- fast checks
def test_launching_process_never_imports_tensorflow() -> None:
    """Parallel launchers fork/spawn from this process: TensorFlow must start in the jobs only."""
    code = "import sys, gender.run, gender.sweep_summary, gender.report; print('tensorflow' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip() == "False"


def test_search_presets_compose() -> None:
    grid = compose_hydra("hparams_search=lr_dropout_grid").hydra.sweeper
    assert grid.params == {"optimizer.lr": "0.001,0.003,0.006", "model.dropout": "0.2,0.4,0.6"}

    cfg = compose_hydra("hparams_search=lr_dropout_optuna", "hydra.sweeper.n_trials=3")
    optuna = cfg.hydra.sweeper
    assert optuna._target_.endswith("OptunaSweeper") and optuna.direction == "maximize"
    assert optuna.sampler._target_ == "optuna.samplers.TPESampler"
    assert optuna.sampler.seed == 1234 and optuna.storage is None and optuna.n_trials == 3
    assert optuna.params == {
        "optimizer.lr": "tag(log, interval(1e-4, 1e-2))",
        "model.dropout": "interval(0.0, 0.6)",
    }


def test_optuna_parses_the_search_space() -> None:
    """The installed optuna (2.10 with numpy 2) builds the distributions the sweeper will use."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
    from optuna.distributions import LogUniformDistribution, UniformDistribution

    params = compose_hydra("hparams_search=lr_dropout_optuna").hydra.sweeper.params
    space, fixed = create_params_from_overrides([f"{k}={v}" for k, v in params.items()])
    assert fixed == {}
    assert space["optimizer.lr"] == LogUniformDistribution(1e-4, 1e-2)
    assert space["model.dropout"] == UniformDistribution(0.0, 0.6)


def test_launcher_presets_compose() -> None:
    parallel = compose_hydra("hydra/launcher=parallel").hydra
    assert parallel.launcher._target_.endswith("JoblibLauncher") and parallel.launcher.n_jobs == 2
    assert parallel.job.env_set == {
        "TF_NUM_INTRAOP_THREADS": "1",
        "TF_NUM_INTEROP_THREADS": "2",
        "TF_FORCE_GPU_ALLOW_GROWTH": "true",
    }
    four = compose_hydra(
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=4",
        "trainer.intra_op_threads=4",
        "hydra.job.env_set.TF_NUM_INTEROP_THREADS='4'",
    )
    assert four.hydra.launcher.n_jobs == 4 and four.trainer.intra_op_threads == 4
    assert four.hydra.job.env_set.TF_NUM_INTEROP_THREADS == "4"  # a str, as os.environ needs

    local = compose_hydra("hydra/launcher=local").hydra
    assert local.launcher._target_.endswith("submitit_launcher.LocalLauncher")
    assert local.job.env_set.TF_NUM_INTRAOP_THREADS == "1"

    slurm = compose_hydra(
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=30",
        "hydra.launcher.array_parallelism=3",
        "hydra.launcher.gpus_per_node=2",
        "hydra.launcher.cpus_per_task=4",
        "hydra.launcher.mem_gb=16",
    ).hydra.launcher
    assert slurm._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (
        slurm.partition,
        slurm.timeout_min,
        slurm.array_parallelism,
        slurm.gpus_per_node,
        slurm.cpus_per_task,
        slurm.mem_gb,
    ) == ("gpu", 30, 3, 2, 4, 16)


def test_slurm_preset_makes_a_valid_sbatch_script(tmp_path: Path, monkeypatch) -> None:
    """The preset's values reach sbatch, mapped the way the submitit launcher maps them."""
    import submitit
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit only checks that srun exists
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")

    cfg = compose_hydra(
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=30",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    HydraConfig.instance().set_config(cfg)
    params = dict(instantiate(cfg.hydra.launcher).params)
    # as hydra_plugins.hydra_submitit_launcher.submitit_launcher.BaseSubmititLauncher.launch
    executor = submitit.AutoExecutor(
        cluster="slurm",
        folder=params.pop("submitit_folder"),
        slurm_max_num_timeout=params.pop("max_num_timeout"),
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python -m gender.run", "uid")
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --time=30",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32GB",
        "#SBATCH --nodes=1",
    ):
        assert line in script, script
    assert f"{tmp_path / 'sweep'}/.submitit/" in script
    assert executor._executor.parameters["array_parallelism"] == 8


def test_wandb_sweep_file_is_valid() -> None:
    cfg = yaml.safe_load(SWEEP_FILE.read_text())
    assert cfg["method"] in ("bayes", "grid", "random")
    assert cfg["metric"] == {"name": "val_accuracy", "goal": "maximize"}
    lr, dropout = cfg["parameters"]["optimizer.lr"], cfg["parameters"]["model.dropout"]
    assert lr == {"distribution": "log_uniform_values", "min": 0.0001, "max": 0.01}
    assert dropout == {"distribution": "uniform", "min": 0.0, "max": 0.6}
    command = cfg["command"]
    assert command[:4] == ["${env}", "${interpreter}", "-m", "gender.run"]
    assert command[-1] == "${args_no_hyphens}" and "logger=wandb" in command

    argv = agent_command(cfg, {"optimizer.lr": 0.0023, "model.dropout": 0.31})
    assert argv[:4] == ["/usr/bin/env", "python", "-m", "gender.run"]
    assert argv[-2:] == ["optimizer.lr=0.0023", "model.dropout=0.31"]


def test_wandb_sweep_file_passes_the_sdk_schema() -> None:
    """W&B's own sweep-config validation (the `sweeps` engine of `pip install wandb[sweeps]`)."""
    sweeps = pytest.importorskip("sweeps", reason="needs wandb[sweeps] for offline validation")
    if not hasattr(sweeps, "schema_violations_from_proposed_config"):  # our own sweeps/ folder
        pytest.skip("needs wandb[sweeps] (the `sweeps` package) for offline validation")
    cfg = yaml.safe_load(SWEEP_FILE.read_text())
    assert sweeps.schema_violations_from_proposed_config(cfg) == []
    run = sweeps.next_run(cfg, [], validate=True)  # what the server would suggest first
    values = {k: float(v["value"]) for k, v in run.config.items()}
    assert 1e-4 <= values["optimizer.lr"] <= 1e-2 and 0.0 <= values["model.dropout"] <= 0.6


# ----------------------------------------------------------------------------- sweeps
@pytest.mark.slow
def test_grid_sweep_four_jobs_summary_and_one_wandb_group(tmp_path, cache, env) -> None:
    sweep = tmp_path / "grid"
    proc = multirun(
        sweep,
        cache,
        env,
        "optimizer.lr=0.001,0.006",
        "model.dropout=0.2,0.4",
        "logger=wandb",
        "logger.mode=offline",
    )
    assert proc.returncode == 0, tail(proc)
    jobs = jobs_of(sweep)
    assert [j.name for j in jobs] == ["0", "1", "2", "3"]
    found = {
        (m["params"]["optimizer.lr"], m["params"]["model.dropout"]): (int(j.name), m)
        for j in jobs
        for m in [metrics(j)]
    }
    assert set(found) == GRID

    # the table is the jobs' metrics.json, best first (ties: lower val_loss, then job number)
    rows = summary_rows(sweep)
    expected = sorted(found.values(), key=lambda t: (-t[1]["val_accuracy"], t[1]["val_loss"], t[0]))
    assert [int(r["job"]) for r in rows] == [num for num, _ in expected]
    for row, (_, m) in zip(rows, expected, strict=True):
        assert float(row["val_accuracy"]) == pytest.approx(m["val_accuracy"])
        assert float(row["test_accuracy"]) == pytest.approx(m["test_accuracy"])
        assert row["status"] == "completed" and int(row["epochs_run"]) == m["epochs_run"] == 1
    for name in ("summary.md", "index.html", "heatmap.png", "learning_curves.png"):
        assert (sweep / name).stat().st_size > 0
    best = jobs[expected[0][0]]
    best_overrides = yaml.safe_load((best / ".hydra" / "overrides.yaml").read_text())
    command = "python -m gender.run " + " ".join(best_overrides)
    assert command in (sweep / "summary.md").read_text()
    assert json.loads((sweep / "summary.json").read_text())["best"]["command"] == command

    # one offline W&B run per job, all in one group named after the sweep folder (its last two parts)
    groups = set()
    for job in jobs:
        header, summary = wandb_records(job, env)
        groups.add(header["run_group"])
        assert summary["val_accuracy"] == pytest.approx(metrics(job)["val_accuracy"])
    assert groups == {"/".join(sweep.parts[-2:])}


@pytest.mark.slow
def test_optuna_sweep_three_trials_and_best_params(tmp_path, cache, env) -> None:
    sweep = tmp_path / "optuna"
    proc = multirun(
        sweep, cache, env, "hparams_search=lr_dropout_optuna", "hydra.sweeper.n_trials=3", "logger=none"
    )
    assert proc.returncode == 0, tail(proc)
    jobs = jobs_of(sweep)
    assert len(jobs) == 3 and all((j / "metrics.json").is_file() for j in jobs)
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(result["best_params"]) == {"optimizer.lr", "model.dropout"}
    values = [metrics(j)["val_accuracy"] for j in jobs]
    assert result["best_value"] == pytest.approx(max(values))
    best = next(
        metrics(j)
        for j in jobs
        if metrics(j)["val_accuracy"] == max(values)
        and metrics(j)["params"]["optimizer.lr"] == pytest.approx(result["best_params"]["optimizer.lr"])
    )
    assert best["params"]["model.dropout"] == pytest.approx(result["best_params"]["model.dropout"])
    for j in jobs:
        lr, dropout = metrics(j)["params"]["optimizer.lr"], metrics(j)["params"]["model.dropout"]
        assert 1e-4 <= lr <= 1e-2 and 0.0 <= dropout <= 0.6
    page = (sweep / "summary.md").read_text()
    assert "Optuna" in page and "hparams_search" not in page.split("```bash")[1].split("```")[0]
    assert len(summary_rows(sweep)) == 3
    # the console: Hydra's and the sweeper's lines in the project's format, no alembic, no
    # TensorFlow start-up lines
    console = proc.stdout + proc.stderr
    assert "alembic" not in console and "setup plugin" not in console
    assert console.count("hydra: Launching 1 jobs locally") == 3
    assert [line for line in console.splitlines() if NOISE.search(line)] == []


@pytest.mark.slow
def test_joblib_launcher_runs_two_jobs_at_once(tmp_path, cache, env) -> None:
    sweep = tmp_path / "parallel"
    proc = multirun(sweep, cache, env, "hydra/launcher=parallel", "optimizer.lr=0.001,0.006", "logger=none")
    assert proc.returncode == 0, tail(proc)
    jobs = jobs_of(sweep)
    assert len(jobs) == 2
    # Hydra writes .hydra/ as a job starts; the job writes metrics.json as it ends
    starts = [(j / ".hydra" / "overrides.yaml").stat().st_mtime for j in jobs]
    ends = [(j / "metrics.json").stat().st_mtime for j in jobs]
    assert max(starts) < min(ends), f"jobs did not overlap: starts {starts}, ends {ends}"
    for job in jobs:
        hydra_cfg = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert hydra_cfg["job"]["env_set"]["TF_NUM_INTRAOP_THREADS"] == "1"
    assert [r["status"] for r in summary_rows(sweep)] == ["completed"] * 2


@pytest.mark.slow
def test_submitit_local_sweep_completes(tmp_path, cache, env) -> None:
    sweep = tmp_path / "submitit"
    # one job: the launcher's path (a job in its own process, its log under .submitit/) is the
    # same for each; two jobs at once are the joblib test's
    proc = multirun(sweep, cache, env, "hydra/launcher=local", "optimizer.lr=0.001", "logger=none")
    assert proc.returncode == 0, tail(proc)
    jobs = jobs_of(sweep)
    assert len(jobs) == 1 and (jobs[0] / "metrics.json").is_file()
    assert list((sweep / ".submitit").glob("*/*_log.out")), "submitit ran no job"
    assert [r["status"] for r in summary_rows(sweep)] == ["completed"]


def make_folder(root: Path, n: int = 20) -> Path:
    """A tiny image folder in the layout data=folder expects (male/, female/)."""
    rng = np.random.default_rng(0)
    for name, base in (("male", 90), ("female", 160)):
        (root / name).mkdir(parents=True)
        for i in range(n):
            pixels = np.clip(rng.normal(base, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
    return root


@pytest.mark.slow
def test_failed_job_is_recorded_others_complete_exit_nonzero(tmp_path, cache, env) -> None:
    """A nonexistent data.root fails job 0 at run time; job 1 still runs; Hydra exits non-zero."""
    images = make_folder(tmp_path / "images")
    missing = tmp_path / "no-such-dir"
    sweep = tmp_path / "failing"
    tiny_folder = (
        "data=folder",
        "data.image_size=32",
        "data.batch_size=16",
        "trainer.epochs=1",
        "trainer.verbose=0",
        "logger=none",
    )
    proc = multirun(sweep, cache, env, f"data.root={missing},{images}", tiny=tiny_folder)
    assert proc.returncode != 0, tail(proc)
    failed, ok = jobs_of(sweep)
    failure = json.loads((failed / "failure.json").read_text())
    assert failure["status"] == "failed" and "does not exist" in failure["error"]
    assert not (failed / "metrics.json").exists()
    assert (failed / "error.txt").read_text().startswith("Traceback")
    assert metrics(ok)["status"] == "completed"
    rows = summary_rows(sweep)
    assert [(r["job"], r["status"]) for r in rows] == [("1", "completed"), ("0", "failed")]
    assert "does not exist" in rows[1]["error"]
    assert f"data.root={images}" in (sweep / "summary.md").read_text()


@pytest.mark.slow
def test_wandb_agent_command_runs_one_suggestion(tmp_path, cache, env) -> None:
    """The exact argv `wandb agent` builds from sweeps/wandb_sweep.yaml trains and reports."""
    cfg = yaml.safe_load(SWEEP_FILE.read_text())
    params = {"optimizer.lr": 0.0023, "model.dropout": 0.31}
    argv = agent_command(cfg, params)
    run_env = {**env, "WANDB_SWEEP_ID": "sweep123", "WANDB_RUN_ID": "run456"}  # set by the agent
    extra = [*TINY, f"paths.log_dir={tmp_path / 'outputs'}", f"paths.cache_dir={cache}"]
    proc = subprocess.run(
        [*argv, *extra], cwd=PROJECT_ROOT, env=run_env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, tail(proc)
    run_dir = tmp_path / "outputs" / "wandb-sweeps" / "sweep123" / "run456"
    m = metrics(run_dir)
    assert {k: m["params"][k] for k in params} == pytest.approx(params)  # with the other overrides
    header, summary = wandb_records(run_dir, env)
    assert header["sweep_id"] == "sweep123" and header["run_id"] == "run456"
    assert summary["val_accuracy"] == pytest.approx(m["val_accuracy"])  # the sweep's metric

    # the sweep's runs summarise like a Hydra sweep
    proc = subprocess.run(
        [sys.executable, "-m", "gender.report", str(run_dir.parent)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "reproduce: python -m gender.run logger=wandb" in proc.stdout
