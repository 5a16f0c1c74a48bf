"""Sweep summary from hand-built job directories, the report CLI and the Hydra callback."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from gender import report, sweep_summary
from gender.sweep_summary import figures, summarize
from gender.sweep_summary.summary import LOCK_FILE

ROOT = Path(__file__).resolve().parents[1]
GRID = [(lr, d) for lr in (0.001, 0.003, 0.006) for d in (0.2, 0.4)]


def make_job(
    sweep: Path,
    num: int,
    overrides: list[str],
    *,
    val: float | None = None,
    error: str | None = None,
    epochs: int = 3,
) -> Path:
    """A job dir as Hydra + gender.training leave it (real files, contract of ARCHITECTURE.md)."""
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"job": {"num": num}, "mode": "MULTIRUN"}})
    )
    (job / ".hydra" / "config.yaml").write_text(
        yaml.safe_dump({"optimizer": {"lr": 0.001}, "model": {"dropout": 0.0}})
    )
    ran = epochs if error is None else 1
    with (job / "history.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch", "accuracy", "loss", "val_accuracy", "val_loss", "learning_rate"])
        for e in range(1, ran + 1):  # numbered from 1, as gender.training writes it
            acc = (val or 0.5) * e / ran
            writer.writerow([e, acc, 1 - acc, acc, 1.1 - acc, 0.001])
    params = dict(o.split("=", 1) for o in overrides if "=" in o)
    if error is None:
        metrics = {
            "status": "completed",
            "val_accuracy": val,
            "val_loss": 1.1 - (val or 0),
            "test_accuracy": (val or 0) - 0.01,
            "epochs_run": ran,
            "wall_seconds": 12.5 + num,
            "overrides": overrides,
            "params": {k: float(v) for k, v in params.items() if k in ("optimizer.lr",)},
            "rung": num % 2,
        }
        (job / "metrics.json").write_text(json.dumps(metrics))
    else:
        failure = {"status": "failed", "error": error, "overrides": overrides}
        (job / "failure.json").write_text(json.dumps(failure))
        (job / "error.txt").write_text(f"Traceback (most recent call last):\n{error}\n")
    return job


def grid_sweep(sweep: Path, failed_job: int | None = 3) -> dict[int, float]:
    vals = {}
    for num, (lr, d) in enumerate(GRID):
        overrides = ["data=synthetic", "logger=none", f"optimizer.lr={lr}", f"model.dropout={d}"]
        if num == failed_job:
            make_job(sweep, num, overrides, error="UserError: data.root does not exist")
        else:
            vals[num] = round(0.6 + 0.05 * num - 0.02 * (num % 2), 4)
            make_job(sweep, num, overrides, val=vals[num])
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return vals


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_grid_sweep_table_order_failed_row_and_files(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    vals = grid_sweep(sweep)
    summary = summarize(sweep)

    rows = read_csv(sweep / "summary.csv")
    assert len(rows) == 6
    expected = sorted(vals, key=lambda n: -vals[n])
    assert [int(r["job"]) for r in rows] == [*expected, 3]
    assert [r["status"] for r in rows] == ["completed"] * 5 + ["failed"]
    assert [float(r["val_accuracy"]) for r in rows[:5]] == sorted(vals.values(), reverse=True)
    failed = rows[-1]
    assert failed["val_accuracy"] == "" and "data.root does not exist" in failed["error"]
    assert failed["optimizer.lr"] == "0.003" and failed["model.dropout"] == "0.4"
    assert rows[0]["epochs_run"] == "3" and float(rows[0]["wall_seconds"]) == 12.5 + expected[0]
    assert summary.swept_keys == ["optimizer.lr", "model.dropout"]

    for name in (
        "summary.csv",
        "summary.md",
        "summary.json",
        "index.html",
        "heatmap.png",
        "learning_curves.png",
    ):
        path = sweep / name
        assert path.is_file() and path.stat().st_size > 0, name
    for png in ("heatmap.png", "learning_curves.png"):
        assert (sweep / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(sweep.glob(".*.tmp")), "temporary files left behind"
    assert (sweep / "summary.md").stat().st_mode & 0o777 == 0o644

    best = expected[0]
    lr, d = GRID[best]
    command = f"python -m gender.run data=synthetic logger=none optimizer.lr={lr} model.dropout={d}"
    assert summary.best is not None and summary.best.num == best
    assert summary.best_command == command
    page = (sweep / "summary.md").read_text()
    assert command in page and "heatmap.png" in page and "learning_curves.png" in page
    assert "data.root does not exist" in page
    html_page = (sweep / "index.html").read_text()
    assert command in html_page and "<img src='heatmap.png'" in html_page
    doc = json.loads((sweep / "summary.json").read_text())
    assert doc["best"]["job"] == best and doc["status_counts"] == {
        "completed": 5,
        "unfinished": 0,
        "failed": 1,
    }


def test_heatmap_is_a_grid_for_a_grid_and_a_scatter_otherwise(tmp_path: Path) -> None:
    grid = tmp_path / "grid"
    grid_sweep(grid)
    jobs = sweep_summary.collect_jobs(grid)
    keys = sweep_summary.swept_keys(jobs)
    assert figures.plot_by_params(jobs, keys, tmp_path)[0] == "heatmap"

    optuna = tmp_path / "optuna"
    for num, (lr, d) in enumerate([(0.00013, 0.05), (0.0021, 0.51), (0.0087, 0.33)]):
        make_job(
            optuna,
            num,
            ["hparams_search=lr_dropout_optuna", f"optimizer.lr={lr}", f"model.dropout={d}"],
            val=0.7 + 0.01 * num,
        )
    (optuna / "optimization_results.yaml").write_text(
        "name: optuna\nbest_params:\n  optimizer.lr: 0.0087\n  model.dropout: 0.33\nbest_value: 0.72\n"
    )
    summary = summarize(optuna)
    assert summary.figure_kind == "scatter" and summary.figure == optuna / "heatmap.png"
    # the sweep-only override is not part of the reproduce command
    assert summary.best_command == "python -m gender.run optimizer.lr=0.0087 model.dropout=0.33"
    assert summary.optuna and summary.optuna["best_value"] == 0.72
    assert "best_value" not in (optuna / "summary.csv").read_text()
    assert "0.72" in (optuna / "summary.md").read_text()


def test_unfinished_job_and_values_taken_from_composed_config(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    make_job(sweep, 0, ["trainer.epochs=2"], val=0.8)
    make_job(sweep, 1, ["trainer.epochs=3", "optimizer.lr=0.01"], val=0.9)
    running = make_job(sweep, 2, ["trainer.epochs=4"], val=0.95)
    (running / "metrics.json").unlink()
    summary = summarize(sweep)
    assert [j.num for j in summary.jobs] == [1, 0, 2]
    assert summary.jobs[-1].status == "unfinished" and summary.jobs[-1].epochs_run == 3
    assert summary.swept_keys == ["trainer.epochs", "optimizer.lr"]
    # a swept key a job did not override: the job's own value, from its .hydra/config.yaml
    assert [j.params["optimizer.lr"] for j in summary.jobs] == [0.01, 0.001, 0.001]
    assert "model.dropout" not in summary.jobs[0].params  # not swept: not a column
    assert summary.best_command == "python -m gender.run trainer.epochs=3 optimizer.lr=0.01"


def test_no_completed_job_still_writes_a_page(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    make_job(sweep, 0, ["optimizer.lr=0.1"], error="RuntimeError: boom")
    summary = summarize(sweep)
    assert summary.best is None and summary.best_command is None
    assert "No job has completed yet" in (sweep / "summary.md").read_text()


def test_reproduce_command_quotes_and_drops_sweep_only_overrides() -> None:
    job = sweep_summary.JobRecord(
        num=0,
        path=Path("0"),
        status="completed",
        overrides=[
            "hparams_search=lr_dropout_optuna",
            "hydra.sweeper.n_trials=3",
            "data.root='/data/my faces'",
            "+trainer.extra=1",
        ],
    )
    assert sweep_summary.reproduce_command(job) == (
        "python -m gender.run 'data.root='\"'\"'/data/my faces'\"'\"'' +trainer.extra=1"
    )


def test_report_cli_prints_table_and_paths(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sweep = tmp_path / "sweep"
    vals = grid_sweep(sweep)
    assert report.main([str(sweep)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["rank", "job", "status", "val_accuracy"]
    best = max(vals, key=vals.get)
    assert lines[2].split()[1] == str(best)
    assert "failed" in lines[7] and "data.root does not exist" in lines[7]
    assert "reproduce: python -m gender.run data=synthetic" in out
    assert str(sweep / "heatmap.png") in out and str(sweep / "summary.md") in out


def test_report_cli_one_line_error_for_a_dir_without_jobs(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for target in (tmp_path / "empty", tmp_path / "missing"):
        proc = subprocess.run(
            [sys.executable, "-m", "gender.report", str(target)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2
        assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
        assert "Traceback" not in proc.stderr


def test_concurrent_summaries_are_serialised(tmp_path: Path) -> None:
    """Several processes summarising at once (joblib jobs ending together) leave whole files."""
    sweep = tmp_path / "sweep"
    grid_sweep(sweep)
    code = "import sys; from gender.sweep_summary import summarize; summarize(sys.argv[1])"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(sweep)], cwd=ROOT) for _ in range(3)]
    assert [p.wait(timeout=180) for p in procs] == [0, 0, 0]
    assert len(read_csv(sweep / "summary.csv")) == 6
    assert not list(sweep.glob(".*.tmp"))
    assert (sweep / LOCK_FILE).exists()


APP = """
import json, os, sys
from pathlib import Path
import hydra
from hydra.core.hydra_config import HydraConfig

@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    out = Path(HydraConfig.get().runtime.output_dir)
    if cfg.x == cfg.fail_on:
        raise FileNotFoundError(f"data.root {cfg.x} does not exist")
    with open(out / "history.csv", "w") as fh:
        fh.write("epoch,accuracy,loss,val_accuracy,val_loss,learning_rate\\n")
        fh.write(f"0,0.5,0.7,{cfg.x / 10},0.6,0.001\\n")
    (out / "metrics.json").write_text(json.dumps({"status": "completed",
        "val_accuracy": cfg.x / 10, "epochs_run": 1, "wall_seconds": 0.1}))
    print("TF loaded in job:", "tensorflow" in sys.modules)
    return cfg.x / 10

if __name__ == "__main__":
    main()
"""


CONFIG = """
x: 1
fail_on: -1
hydra:
  callbacks:
    sweep_summary:
      _target_: gender.sweep_summary.SweepSummaryCallback
"""


def run_app(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(APP))
    (tmp_path / "conf").mkdir(exist_ok=True)
    (tmp_path / "conf" / "config.yaml").write_text(CONFIG)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, str(app), *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)


def test_callback_summarises_a_failed_multirun(tmp_path: Path) -> None:
    """One job raises: Hydra exits non-zero, skips on_multirun_end, yet the summary is complete."""
    sweep = tmp_path / "multirun"
    proc = run_app(tmp_path, "-m", "x=3,2,7", "fail_on=2", f"hydra.sweep.dir={sweep}")
    assert proc.returncode != 0, proc.stderr
    rows = read_csv(sweep / "summary.csv")
    assert [(r["job"], r["status"]) for r in rows] == [
        ("2", "completed"),
        ("0", "completed"),
        ("1", "failed"),
    ]
    failure = json.loads((sweep / "1" / "failure.json").read_text())
    assert failure["status"] == "failed"
    assert failure["error"] == "FileNotFoundError: data.root 2 does not exist"
    assert "Traceback" in (sweep / "1" / "error.txt").read_text()
    assert "python -m gender.run x=7 fail_on=2" in (sweep / "summary.md").read_text()


def test_callback_ignores_single_runs_and_summarises_multirun_end(tmp_path: Path) -> None:
    run_dir = tmp_path / "single"
    proc = run_app(tmp_path, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr
    assert not (run_dir / "summary.md").exists()

    sweep = tmp_path / "multirun"
    proc = run_app(tmp_path, "-m", "x=4,5", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr
    assert "Sweep summary (multirun end)" in proc.stdout + proc.stderr
    assert [r["job"] for r in read_csv(sweep / "summary.csv")] == ["1", "0"]
    assert "TF loaded in job: False" in proc.stdout


# ----------------------------------------------------------------------------- whatever is swept


def test_one_swept_key_plots_accuracy_against_it(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    for num, smoothing in enumerate((0.0, 0.05, 0.1)):
        make_job(sweep, num, [f"trainer.label_smoothing={smoothing}"], val=0.8 + 0.01 * num)
    summary = summarize(sweep)
    assert summary.swept_keys == ["trainer.label_smoothing"]
    assert summary.figure_kind == "by_param" and summary.figure.name == "accuracy_by_param.png"
    page = (sweep / "summary.md").read_text()
    assert "## val_accuracy by trainer.label_smoothing" in page and "optimizer.lr" not in page
    assert "dropout" not in json.dumps(json.loads((sweep / "summary.json").read_text())["best"])


def test_two_keys_other_than_lr_and_dropout_make_a_four_cell_heatmap(tmp_path: Path) -> None:
    """label smoothing x lr: the heat map is over those two keys, one cell per job (no dropout)."""
    sweep = tmp_path / "s"
    grid = [(s, lr) for s in (0.0, 0.1) for lr in (0.001, 0.003)]
    for num, (smoothing, lr) in enumerate(grid):
        make_job(
            sweep, num, [f"trainer.label_smoothing={smoothing}", f"optimizer.lr={lr}"], val=0.7 + 0.05 * num
        )
    summary = summarize(sweep)
    assert summary.swept_keys == ["trainer.label_smoothing", "optimizer.lr"]
    assert summary.figure_kind == "heatmap"
    assert "## val_accuracy over trainer.label_smoothing x optimizer.lr" in (sweep / "summary.md").read_text()
    doc = json.loads((sweep / "summary.json").read_text())
    assert doc["best"]["params"] == {"trainer.label_smoothing": 0.1, "optimizer.lr": 0.003}
    assert [set(r) & {"model.dropout"} for r in doc["jobs"]] == [set()] * 4
    # the cells are the four jobs' own accuracies (none folded into another)
    jobs = summary.jobs
    cells = {(j.params["trainer.label_smoothing"], j.params["optimizer.lr"]): j.val_accuracy for j in jobs}
    assert len(cells) == 4


def test_three_keys_draw_parallel_coordinates_and_drop_stale_figures(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    make_job(sweep, 0, ["optimizer=adam", "optimizer.lr=0.001"], val=0.7)
    make_job(sweep, 1, ["optimizer=sgd", "optimizer.lr=0.01"], val=0.8)
    assert summarize(sweep).figure_kind == "heatmap"  # two keys so far
    make_job(sweep, 2, ["optimizer=adamw", "optimizer.lr=0.003", "model.dropout=0.3"], val=0.75)
    summary = summarize(sweep)
    assert summary.swept_keys == ["optimizer", "optimizer.lr", "model.dropout"]
    assert summary.figure_kind == "parallel"
    assert (sweep / "parallel_coordinates.png").is_file() and not (sweep / "heatmap.png").exists()
    assert [j.params["optimizer"] for j in summary.jobs] == ["sgd", "adamw", "adam"]
    assert "(parallel coordinates)" in (sweep / "index.html").read_text()


def test_many_single_runs_are_labelled_by_their_overrides(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for when, overrides, val in (
        ("2026-11-27/10-00-00", ["optimizer.lr=0.003"], 0.8),
        ("2026-11-27/11-00-00", [], 0.7),
        ("2026-11-28/09-00-00", ["experiment=fast"], 0.9),
    ):
        job = make_job(runs / when, 0, overrides, val=val)
        job.rename(runs / when.replace("/", "/x"))  # a run dir is not named by a number
        hydra = runs / when.replace("/", "/x") / ".hydra" / "hydra.yaml"
        hydra.write_text(yaml.safe_dump({"hydra": {"job": {"num": 0}, "mode": "RUN"}}))
    summary = summarize(runs)
    assert summary.figure_kind == "by_job"
    assert [j.label for j in summary.jobs] == ["experiment=fast", "optimizer.lr=0.003", "x11-00-00"]
    assert [r["job"] for r in read_csv(runs / "summary.csv")] == [
        "2026-11-28/x09-00-00",
        "2026-11-27/x10-00-00",
        "2026-11-27/x11-00-00",
    ]
    assert (
        "Job experiment=fast (`2026-11-28/x09-00-00/`) is best by val_accuracy"
        in (runs / "summary.md").read_text()
    )


def test_index_links_each_job_folder_plots_and_wandb_run(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    grid_sweep(sweep)
    (sweep / "0" / "plots").mkdir()
    (sweep / "0" / "plots" / "roc.png").write_bytes(b"png")
    online = {
        "id": "abc123",
        "project": "gender",
        "entity": "team",
        "mode": "online",
        "url": "https://wandb.ai/team/gender/runs/abc123",
    }
    (sweep / "0" / "wandb").mkdir()
    (sweep / "0" / "wandb" / "run.json").write_text(json.dumps(online))
    offline = {"id": "def456", "project": "gender", "entity": "team", "mode": "offline"}
    run_folder = sweep / "1" / "wandb" / "offline-run-20261127_120000-def456"
    run_folder.mkdir(parents=True)
    (sweep / "1" / "wandb" / "run.json").write_text(json.dumps(offline))
    page = summarize(sweep) and (sweep / "index.html").read_text()
    assert "<a href='0/'>folder</a>" in page and "<a href='0/plots/roc.png'>roc</a>" in page
    assert "<a href='https://wandb.ai/team/gender/runs/abc123'>W&amp;B run</a>" in page
    assert "W&amp;B run <code>def456</code> (not synced)" in page
    (run_folder / "run-def456.wandb.synced").write_text("")  # what `wandb sync` leaves
    page = summarize(sweep) and (sweep / "index.html").read_text()
    assert "<a href='https://wandb.ai/team/gender/runs/def456'>W&amp;B run</a>" in page


def test_extra_columns_from_metrics_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A sweeper's own keys (here ``rung``) become columns: summarize(..., extra_columns=...)."""
    sweep = tmp_path / "sweep"
    grid_sweep(sweep, failed_job=None)
    summary = summarize(sweep, extra_columns=["rung"])
    assert [r["rung"] for r in read_csv(sweep / "summary.csv")] == [str(j.num % 2) for j in summary.jobs]
    assert report.main([str(sweep), "--column", "rung"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split()[-2:] == ["rung", "error"]


def test_wandb_agent_runs_are_a_search_like_any_sweep(tmp_path: Path) -> None:
    """Single runs that all set the same keys (``outputs/wandb-sweeps/ID``) get the figure over them."""
    root = tmp_path / "wandb-sweeps" / "abc"
    for name, (lr, d) in zip(("r1", "r2", "r3"), [(0.0012, 0.31), (0.004, 0.1), (0.0002, 0.5)], strict=True):
        overrides = ["logger=wandb", f"optimizer.lr={lr}", f"model.dropout={d}"]
        job = make_job(root, 0, overrides, val=0.7 + d / 10)
        job.rename(root / name)
        (root / name / ".hydra" / "hydra.yaml").write_text(
            yaml.safe_dump({"hydra": {"job": {"num": 0}, "mode": "RUN"}})
        )
    summary = summarize(root)
    assert summary.swept_keys == ["optimizer.lr", "model.dropout"] and summary.figure_kind == "scatter"
