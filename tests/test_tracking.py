"""Tracker against the real W&B SDK in offline mode, read back from the files it writes.

The runs are read with ``wandb leet inspect --json`` (the SDK's own reader of the
``run-*.wandb`` transaction log), so what is asserted is what ``wandb sync`` would upload.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli
from omegaconf import OmegaConf

from gender import PROJECT_ROOT
from gender.tracking import Tracker, flatten, redact_secrets, resolved_config
from gender.tracking.config import secret_values

REPO = Path(__file__).resolve().parents[1]
SECRET = "sk-test-0123456789abcdef"
WANDB_ENV = (
    "WANDB_API_KEY",
    "WANDB_MODE",
    "WANDB_DIR",
    "WANDB_BASE_URL",
    "WANDB_PROJECT",
    "WANDB_ENTITY",
    "WANDB_RUN_GROUP",
    "WANDB_NAME",
    "WANDB_TAGS",
    "WANDB_JOB_TYPE",
    "WANDB_IDENTITY_TOKEN_FILE",
    "WANDB_DISABLED",
    "WANDB_SILENT",
    "NETRC",
)


@pytest.fixture
def wandb_home(tmp_path, monkeypatch):
    """No credentials and no user state: W&B's home, config, cache and data dirs in tmp."""
    home = tmp_path / "home"
    home.mkdir()
    for name in WANDB_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    for name, sub in (
        ("WANDB_CONFIG_DIR", "config"),
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_DATA_DIR", "data"),
    ):
        monkeypatch.setenv(name, str(home / sub))
    monkeypatch.chdir(tmp_path)
    yield home
    import wandb

    # The SDK snapshots os.environ when it first sets up; start the next test afresh.
    wandb.teardown()


def make_cfg(mode: str = "offline", **logger):
    """A composed-by-hand job config with the keys a sweep varies."""
    return OmegaConf.create(
        {
            "seed": 0,
            "optimizer": {"name": "adam", "lr": 0.003},
            "model": {"name": "tiny", "dropout": 0.2},
            "paths": {"output_dir": "${hydra:runtime.output_dir}"},  # unresolvable outside Hydra
            "secrets": {"wandb_api_key": SECRET, "note": "kept"},
            "logger": {
                "project": "gender-test",
                "entity": None,
                "mode": mode,
                "group": None,
                "name": None,
                "tags": ["test"],
                "dir": None,
                "log_model": True,
                "log_predictions": 5,
                "init_timeout": 5,
                **logger,
            },
        }
    )


def leet(run: Path, *args: str) -> str:
    """`wandb leet inspect --json ARGS RUN`: the SDK's own reader of the .wandb log."""
    cmd = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", *args, str(run)]
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout


def summary_of(run: Path) -> dict:
    """State, exit code, config and summary of one W&B run folder."""
    return json.loads(leet(run, "--summary"))


def records_of(run: Path) -> list[dict]:
    """Every record of the run's transaction log (run header, history, artifacts, exit)."""
    return [json.loads(line) for line in leet(run).splitlines() if line.strip()]


def header_of(run: Path) -> dict:
    return next(r["run"] for r in records_of(run) if r["type"] == "run")


def only_run(run_dir: Path) -> Path:
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    return runs[0]


def tiny_model_fit(callbacks: list):
    """A 32x32 model fitted for 2 epochs on random pixels."""
    import keras

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3)).astype("float32")
    y = np.arange(16) % 2
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.003), loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, validation_data=(x[:8], y[:8]), epochs=2, batch_size=8, verbose=0, callbacks=callbacks)
    return model, x, y


def test_offline_run_records_config_history_evaluation_and_model(tmp_path, wandb_home):
    from PIL import Image

    run_dir = tmp_path / "run"
    with Tracker.start(make_cfg(), run_dir) as tracker:
        assert tracker.enabled
        model, x, y = tiny_model_fit(tracker.keras_callbacks())
        model.save(run_dir / "model.keras")
        prob = model.predict(x, verbose=0).ravel()
        rows = []
        for i in range(len(x)):
            path = tmp_path / "images" / f"{i}.png"
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(x[i].astype("uint8")).save(path)
            rows.append(
                {
                    "path": str(path),
                    "true": int(y[i]),
                    "pred": int(prob[i] >= 0.5),
                    "prob": float(prob[i]),
                    "group": "synthetic",
                }
            )
        cm = np.zeros((2, 2), int)
        for r in rows:
            cm[r["true"], r["pred"]] += 1
        correct = sum(r["true"] == r["pred"] for r in rows)
        result = {
            "n": len(rows),
            "accuracy": correct / len(rows),
            "roc_auc": 0.5,
            "per_class": {"male": {"recall": 0.5}},
            "confusion_matrix": cm.tolist(),
        }
        tracker.log_summary({"val_accuracy": 0.75, "best_epoch": 2})
        tracker.log_evaluation(result, rows, ["male", "female"])
        tracker.log_model(
            run_dir / "model.keras", {"val_accuracy": 0.75, "best_epoch": 2, "test_accuracy_ci95": [0.5, 0.9]}
        )
    assert not tracker.enabled

    run = only_run(run_dir)
    summary, records = summary_of(run), records_of(run)
    assert summary["state"] == "finished" and summary["exit_code"] == 0
    record = json.loads((run_dir / "wandb" / "run.json").read_text())
    assert record["id"] == summary["run_id"] and record["mode"] == "offline"
    assert record["folder"] == run.name
    assert summary["project"] == "gender-test" and summary["tags"] == ["test"]
    config = summary["config"]
    assert config["optimizer"]["lr"] == 0.003 and config["model"]["dropout"] == 0.2
    assert config["paths"]["output_dir"] == "${hydra:runtime.output_dir}"
    assert config["secrets"] == {"note": "kept"}
    header = next(r["run"] for r in records if r["type"] == "run")
    assert header["job_type"] == "train"

    epochs = [
        r["history"]["item"]
        for r in records
        if r["type"] == "history" and "epoch/val_accuracy" in r["history"]["item"]
    ]
    assert [e["epoch/epoch"] for e in epochs] == [1, 2]  # as history.csv and best_epoch count
    assert all(
        {"epoch/accuracy", "epoch/loss", "epoch/val_loss", "epoch/learning_rate"} <= e.keys() for e in epochs
    )
    assert epochs[0]["epoch/learning_rate"] == pytest.approx(0.003)

    s = summary["summary"]
    assert s["val_accuracy"] == 0.75 and s["best_epoch"] == 2
    assert s["test/accuracy"] == pytest.approx(correct / len(rows))
    assert s["test/per_class/male/recall"] == 0.5
    assert s["test/confusion_matrix_table"]["_type"] == "table-file"
    assert s["test/roc_table"]["_type"] == "table-file"  # wandb.plot.roc_curve's table
    roc = json.loads((run / "files" / s["test/roc_table"]["path"]).read_text())
    assert roc["columns"] == ["class", "fpr", "tpr"] and {r[0] for r in roc["data"]} == {"female"}
    table = s["test/predictions"]
    assert table["nrows"] == 5 and table["ncols"] == 7
    table_json = json.loads((run / "files" / table["path"]).read_text())
    misclassified = [not row[4] for row in table_json["data"]]
    assert misclassified == sorted(misclassified, reverse=True)  # mistakes first

    artifacts = [r["artifact"] for r in records if r["type"] == "artifact"]
    (model_art,) = [a for a in artifacts if a["type"] == "model"]
    assert model_art["name"] == f"model-{summary['run_id']}"
    assert sorted(model_art["aliases"]) == ["best", "latest"]
    metadata = json.loads(model_art["metadata"])
    assert metadata["val_accuracy"] == 0.75 and metadata["best_epoch"] == 2
    assert metadata["test_accuracy_ci95"] == [0.5, 0.9]
    assert metadata["config"] == {
        "seed": 0,
        "model.name": "tiny",
        "model.dropout": 0.2,
        "optimizer.name": "adam",
        "optimizer.lr": 0.003,
    }
    assert [c["path"] for c in model_art["manifest"]["contents"]] == ["model.keras"]
    images = [
        c["path"]
        for a in artifacts
        for c in a["manifest"]["contents"]
        if c["path"].startswith("media/images/")
    ]
    assert images, "the predictions table carries image thumbnails"

    # The secret is nowhere in what W&B wrote (run files, logs, staged artifacts).
    for root in (run_dir, wandb_home):
        for path in root.rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path


def test_under_a_wandb_sweep_agent_each_epoch_logs_the_sweep_metric(tmp_path, wandb_home, monkeypatch):
    """Hyperband early termination (sweeps/wandb_sweep.yaml) reads ``val_accuracy``'s history:
    under an agent (WANDB_SWEEP_ID set) every epoch logs it under that name; otherwise only
    ``epoch/val_accuracy``."""
    for sweep_id, run_dir in ((None, tmp_path / "plain"), ("abc123", tmp_path / "agent")):
        if sweep_id:
            monkeypatch.setenv("WANDB_SWEEP_ID", sweep_id)
        with Tracker.start(make_cfg(), run_dir) as tracker:
            tiny_model_fit(tracker.keras_callbacks())
        epochs = [
            r["history"]["item"]
            for r in records_of(only_run(run_dir))
            if r["type"] == "history" and "epoch/val_accuracy" in r["history"]["item"]
        ]
        assert len(epochs) == 2
        bare = [e.get("val_accuracy") for e in epochs]
        if sweep_id:
            assert bare == [e["epoch/val_accuracy"] for e in epochs]
        else:
            assert bare == [None, None]


@pytest.mark.parametrize("how", ["logger_none", "mode_disabled", "env_disabled", "unusable"])
def test_disabled_tracking_writes_no_files(tmp_path, wandb_home, monkeypatch, caplog, how):
    """No run and no W&B file; an unusable logger setting costs one warning, not the job."""
    if how == "unusable":
        cfg = make_cfg(init_timeout="soon")
    elif how == "logger_none":
        cfg = make_cfg()
        cfg.logger = OmegaConf.load(REPO / "gender" / "conf" / "logger" / "none.yaml")
    elif how == "mode_disabled":
        cfg = make_cfg(mode="disabled")
    else:
        monkeypatch.setenv("WANDB_MODE", "disabled")
        cfg = make_cfg()
        cfg.logger = OmegaConf.load(REPO / "gender" / "conf" / "logger" / "wandb.yaml")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with Tracker.start(cfg, run_dir) as tracker:
        assert not tracker.enabled
        assert tracker.keras_callbacks() == []
        tracker.log_summary({"val_accuracy": 0.5})
        tracker.log_evaluation({"accuracy": 0.5}, [], ["male", "female"])
        tracker.log_model(run_dir / "model.keras")
    tracker.finish()
    warnings = [r for r in caplog.records if r.name.startswith("gender.tracking")]
    assert len(warnings) == (how == "unusable")
    assert list(run_dir.iterdir()) == []
    assert not list(wandb_home.rglob("*"))


def test_online_without_api_key_falls_back_offline_with_one_warning(tmp_path, wandb_home, caplog):
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="gender.tracking"):
        with Tracker.start(make_cfg(mode="online"), run_dir) as tracker:
            assert tracker.enabled
            tracker.log_summary({"test": {"accuracy": 0.6}})
    warnings = [r for r in caplog.records if r.name.startswith("gender.tracking")]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "API key" in message and "offline" in message and "\n" not in message
    summary = summary_of(only_run(run_dir))
    assert summary["state"] == "finished"
    assert summary["summary"]["test/accuracy"] == 0.6


JOB_SCRIPT = """
import time
from pathlib import Path
import hydra
from hydra.core.hydra_config import HydraConfig
from gender.tracking import Tracker

@hydra.main(version_base=None, config_path={conf!r}, config_name="config")
def main(cfg):
    started = time.monotonic()
    with Tracker.start(cfg, Path(HydraConfig.get().runtime.output_dir)) as tracker:
        print(f"started in {{time.monotonic() - started:.1f}} s", flush=True)
        tracker.log_summary({{"val_accuracy": cfg.optimizer.lr}})

main()
"""


def hydra_app(tmp_path: Path, logger: str = "wandb") -> Path:
    """A tiny Hydra app whose job only opens and closes its Tracker, with the real logger group."""
    conf = tmp_path / "conf"
    (conf / "logger").mkdir(parents=True)
    for name in ("wandb", "tensorboard", "none"):
        (conf / "logger" / f"{name}.yaml").write_text((REPO / f"gender/conf/logger/{name}.yaml").read_text())
    (conf / "config.yaml").write_text(
        textwrap.dedent(f"""\
        defaults:
          - logger: {logger}
          - _self_
        optimizer: {{lr: 0.001}}
        model: {{dropout: 0.0}}
        hydra:
          job:
            config:
              override_dirname:
                exclude_keys: [logger, experiment]
        """)
    )
    script = tmp_path / "job.py"
    script.write_text(JOB_SCRIPT.format(conf=str(conf)))
    return script


def run_app(script: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    done = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=script.parent,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_online_unreachable_falls_back_offline_and_later_jobs_skip_the_wait(tmp_path, wandb_home):
    """The first job waits init_timeout and records offline; the sweep remembers why in its
    folder, so the next job (in any process) goes straight to offline with one warning."""
    key = "k" * 40
    script = hydra_app(tmp_path)
    done = run_app(
        script,
        "-m",
        "optimizer.lr=0.1,0.2",
        "logger.mode=online",
        "logger.init_timeout=2",
        "hydra.sweep.dir=multirun/s",
        env={"WANDB_API_KEY": key, "HOME": str(wandb_home), "WANDB_BASE_URL": "http://127.0.0.1:9"},
    )
    output = done.stdout + done.stderr
    warnings = [line for line in output.splitlines() if "W&B online tracking unavailable" in line]
    assert len(warnings) == 2 and "earlier in this sweep" in warnings[1]
    assert key not in output
    seconds = [float(line.split()[2]) for line in done.stdout.splitlines() if line.startswith("started in")]
    assert seconds[1] < 2, f"the second job must not wait for the same timeout again: {seconds}"
    assert (tmp_path / "multirun" / "s" / "wandb" / "online-unavailable.json").is_file()
    for job in ("0", "1"):
        assert summary_of(only_run(tmp_path / "multirun" / "s" / job))["state"] == "finished"


def test_exception_in_body_finishes_run_as_failed_and_propagates(tmp_path, wandb_home):
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="boom"):
        with Tracker.start(make_cfg(), run_dir) as tracker:
            tracker.log_summary({"val_accuracy": 0.1})
            raise RuntimeError("boom")
    assert not tracker.enabled
    tracker.finish()  # idempotent
    summary = summary_of(only_run(run_dir))
    assert summary["state"] == "failed" and summary["exit_code"] == 1


def test_two_trackers_in_one_process_are_two_runs(tmp_path, wandb_home):
    first = Tracker.start(make_cfg(), tmp_path / "job0", job_type="train")
    # The second job starts while the first was never finished (a crashed job body):
    # W&B closes the first run instead of handing it back.
    second = Tracker.start(make_cfg(), tmp_path / "job1", job_type="evaluate")
    second.log_summary({"val_accuracy": 0.9})
    second.finish()
    first.finish()
    s0 = summary_of(only_run(tmp_path / "job0"))
    s1 = summary_of(only_run(tmp_path / "job1"))
    assert s0["run_id"] != s1["run_id"]
    assert s0["state"] == s1["state"] == "finished"
    assert "val_accuracy" not in s0["summary"] and s1["summary"]["val_accuracy"] == 0.9
    assert header_of(only_run(tmp_path / "job1"))["job_type"] == "evaluate"


def test_hydra_multirun_jobs_share_group_and_are_named_by_overrides(tmp_path, wandb_home):
    script = hydra_app(tmp_path)
    run_app(
        script,
        "-m",
        "optimizer.lr=0.1,0.2",
        "model.dropout=0.5",
        f"+db.password={SECRET}",
        "hydra.sweep.dir=outputs/multirun/2026-11-27/12-30-00",
        env={"HOME": str(wandb_home)},
    )
    sweep = tmp_path / "outputs" / "multirun" / "2026-11-27" / "12-30-00"
    jobs = [records_of(only_run(sweep / job)) for job in "01"]
    assert [[r["exit"]["exit_code"] for r in recs if r["type"] == "exit"] for recs in jobs] == [[0], [0]]
    headers = [next(r["run"] for r in recs if r["type"] == "run") for recs in jobs]
    # the sweep folder's date and time, whichever folder the command ran from
    assert [h["run_group"] for h in headers] == ["2026-11-27/12-30-00"] * 2
    assert [h["display_name"] for h in headers] == [
        "+db.password=***,model.dropout=0.5,optimizer.lr=0.1",
        "+db.password=***,model.dropout=0.5,optimizer.lr=0.2",
    ]
    assert headers[0]["run_id"] != headers[1]["run_id"]
    # the job's .hydra/ files go with the run, the secret masked
    files = only_run(sweep / "0") / "files" / "hydra"
    assert sorted(p.name for p in files.iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert "+db.password=***" in (files / "overrides.yaml").read_text()
    for path in (tmp_path / "outputs").rglob("*"):  # what W&B wrote, not Hydra's own files
        if path.is_file() and "wandb" in path.parts:
            assert SECRET.encode() not in path.read_bytes(), path
    # SWEEP/wandb/ links every job's run: `wandb leet` / `wandb sync` over the whole sweep.
    links = sorted(p for p in (sweep / "wandb").iterdir() if p.name.startswith("offline-run-"))
    assert all(link.is_symlink() for link in links)
    assert sorted(link.resolve() for link in links) == sorted(
        only_run(sweep / job).resolve() for job in ("0", "1")
    )


def test_a_run_without_overrides_gets_a_readable_name(tmp_path, wandb_home):
    script = hydra_app(tmp_path)
    run_app(script, "hydra.run.dir=plain", env={"HOME": str(wandb_home)})
    header = header_of(only_run(tmp_path / "plain"))
    assert header["display_name"] == "defaults" and not header.get("run_group")
    # only presets on the command line (excluded from names in a sweep): named by them
    run_app(script, "+experiment=best", "hydra.run.dir=preset", env={"HOME": str(wandb_home)})
    assert header_of(only_run(tmp_path / "preset"))["display_name"] == "+experiment=best"


def test_blank_wandb_mode_in_the_environment_counts_as_unset(tmp_path, wandb_home):
    """``export WANDB_MODE=`` (blank, common in CI) must not make W&B reject its settings."""
    script = hydra_app(tmp_path)
    run_app(script, "hydra.run.dir=run", env={"HOME": str(wandb_home), "WANDB_MODE": ""})
    assert summary_of(only_run(tmp_path / "run"))["state"] == "finished"


def tf_value(event) -> float:
    """The scalar of a TensorBoard tensor event."""
    from tensorboard.util import tensor_util

    return float(tensor_util.make_ndarray(event.tensor_proto))


def test_tensorboard_logger_alone_and_with_wandb(tmp_path, wandb_home):
    """logger=tensorboard: Keras' TensorBoard callback, epochs from 1, the final metrics with the
    job's hyperparameters; no W&B files. logger=[wandb,tensorboard]: both."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for name, wandb_too in (("tensorboard", False), ("[wandb,tensorboard]", True)):
        cfg = make_cfg()
        composed = OmegaConf.create({})
        for option in name.strip("[]").split(","):
            composed = OmegaConf.merge(composed, OmegaConf.load(REPO / f"gender/conf/logger/{option}.yaml"))
        cfg.logger = composed
        run_dir = tmp_path / name
        with Tracker.start(cfg, run_dir) as tracker:
            assert tracker.enabled == wandb_too
            tiny_model_fit(tracker.keras_callbacks())
            tracker.log_summary({"val_accuracy": 0.75, "best_epoch": 2, "status": "completed"})
        assert (run_dir / "wandb").exists() == wandb_too
        train = EventAccumulator(str(run_dir / "tensorboard" / "train")).Reload()
        val = EventAccumulator(str(run_dir / "tensorboard" / "validation")).Reload()
        assert [e.step for e in train.Tensors("epoch_loss")] == [1, 2]
        assert [e.step for e in val.Tensors("epoch_accuracy")] == [1, 2]
        assert "epoch_learning_rate" in train.Tags()["tensors"]
        final = EventAccumulator(str(run_dir / "tensorboard")).Reload()
        (point,) = final.Tensors("val_accuracy")
        assert point.step == 2 and float(tf_value(point)) == pytest.approx(0.75)
        assert "_hparams_/session_start_info" in final.Tags()["tensors"]


def test_logger_group_composes_with_the_project_config(wandb_home, monkeypatch):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "gender" / "conf"), version_base="1.3"):
        default = compose(config_name="config")
        none = compose(config_name="config", overrides=["logger=none"])
        board = compose(config_name="config", overrides=["logger=tensorboard"])
        both = compose(config_name="config", overrides=["logger=[wandb,tensorboard]"])
        monkeypatch.setenv("WANDB_MODE", "online")
        online = compose(config_name="config")
    assert default.logger.keys() == none.logger.keys()
    assert online.logger.mode == "online"
    monkeypatch.delenv("WANDB_MODE")
    assert default.logger.mode == "offline" and none.logger.mode == "disabled"
    assert default.logger.project == "gender" and default.logger.log_predictions == 500
    assert list(board.logger.keys()) == ["tensorboard"]
    assert set(both.logger.keys()) == {*default.logger.keys(), "tensorboard"}


def test_config_helpers():
    cfg = OmegaConf.create(
        {"a": "${hydra:job.name}", "b": {"c": "${x}", "api_key": "k"}, "x": 1, "tokenizer": "t"}
    )
    assert resolved_config(cfg) == {
        "a": "${hydra:job.name}",
        "b": {"c": 1, "api_key": "k"},
        "x": 1,
        "tokenizer": "t",
    }
    assert redact_secrets(resolved_config(cfg)) == {
        "a": "${hydra:job.name}",
        "b": {"c": 1},
        "x": 1,
        "tokenizer": "t",
    }
    assert flatten({"test": {"accuracy": np.float32(0.5), "ci": [0.1, 0.9]}, "nan": float("nan")}) == {
        "test/accuracy": 0.5,
        "test/ci": [0.1, 0.9],
        "nan": None,
    }
    assert secret_values(
        {"db": {"password": "hunter22"}, "x": "visible"}, ["+api_token=abcdef", "lr=0.1"]
    ) == {"hunter22", "abcdef"}


@pytest.mark.slow
def test_cli_run_offline_leaves_one_complete_wandb_run(tmp_path, wandb_home):
    """The whole job through ``python -m gender.run``: what W&B wrote, read back with its own
    reader; then ``gender.evaluate`` on that run names the model it scored. Neither writes anything
    outside its run directory and the user's W&B and plotting caches: not the working directory,
    not ``$TMPDIR``, not the project."""
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    project_before = {p.name for p in PROJECT_ROOT.iterdir()}
    env = {"HOME": str(wandb_home), "TMPDIR": str(tmp)}
    run_dir = tmp_path / "run"
    proc = run_cli(
        "gender.run",
        "debug=tiny",
        "trainer.epochs=3",
        "optimizer.lr=0.002",
        "model.dropout=0.3",
        "logger.mode=offline",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run_dir}",
        cwd=cwd,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(run_dir)
    summary, records = summary_of(run), records_of(run)
    config = summary["config"]
    assert config["optimizer"]["lr"] == 0.002 and config["model"]["dropout"] == 0.3
    assert config["environment"]["packages"]["tensorflow"]  # versions recorded for reproduction
    epochs = [
        r["history"]["item"]
        for r in records
        if r["type"] == "history" and "epoch/val_accuracy" in r["history"]["item"]
    ]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # one epoch numbering: W&B's epoch/epoch, history.csv and best_epoch
    history = (run_dir / "history.csv").read_text().splitlines()[1:]
    assert [e["epoch/epoch"] for e in epochs] == [int(r.split(",")[0]) for r in history] == [1, 2, 3]
    best = next(e for e in epochs if e["epoch/epoch"] == metrics["best_epoch"])
    assert best["epoch/val_accuracy"] == pytest.approx(metrics["val_accuracy"], abs=1e-5)
    s = summary["summary"]
    assert s["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert s["test/confusion_matrix_table"]["_type"] == "table-file"
    assert s["test/predictions"]["nrows"] == metrics["test_images"]
    (model_art,) = [
        r["artifact"] for r in records if r["type"] == "artifact" and r["artifact"]["type"] == "model"
    ]
    assert sorted(model_art["aliases"]) == ["best", "latest"]
    assert json.loads(model_art["metadata"])["best_epoch"] == metrics["best_epoch"]
    assert summary["state"] == "finished"
    assert (run / "files" / "hydra" / "overrides.yaml").is_file()

    # offline, W&B refuses use_artifact: the training run and the model's digest go in the config
    eval_dir = tmp_path / "eval"
    proc = run_cli(
        "gender.evaluate",
        f"model_path={run_dir}",
        "logger.mode=offline",
        f"hydra.run.dir={eval_dir}",
        cwd=cwd,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = summary_of(only_run(eval_dir))
    link = evaluated["config"]["model_artifact"]
    assert link["training_run_id"] == summary["run_id"]
    assert link["artifact"] == f"model-{summary['run_id']}:best"
    assert link["digest"] == model_art["digest"]
    assert header_of(only_run(eval_dir))["job_type"] == "evaluate"

    assert not any(cwd.iterdir()) and not any(tmp.iterdir())
    # W&B's config, cache and data dirs (the fixture points them into home); not W&B's: plotting and Keras
    allowed = ("config/", "cache/", "data/", ".cache/matplotlib", ".config/matplotlib", ".keras")
    written = [str(p.relative_to(wandb_home)) for p in wandb_home.rglob("*") if p.is_file()]
    assert all(w.startswith(allowed) for w in written), written
    assert not {"wandb", "artifacts"} & ({p.name for p in PROJECT_ROOT.iterdir()} - project_before)
