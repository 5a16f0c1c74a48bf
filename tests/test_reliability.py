"""Reliability: no silent wrong result, no lost or altered run, whatever the user does (issue 15).

One test (or more) per point of the issue, each named for what it protects; docs/reliability.md
lists them in a table that ``test_reliability_table_names_existing_tests`` keeps true.
"""

from __future__ import annotations

import builtins
import csv
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line, cli_in_process, compose_cfg, interrupt_after, make_images, run_cli
from omegaconf import OmegaConf
from PIL import Image

from gender import PROJECT_ROOT
from gender import data as gdata
from gender.errors import UserError

TINY = ["debug=tiny", "logger=none"]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# ------------------------------------------------------------------------------------ helpers
def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path) and the SHA-1 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def compose_app(name: str, *overrides: str):
    return compose_cfg(*overrides, config_name=name)


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".tmp-*")] if folder.exists() else []


def tiny_synthetic(cache: Path) -> None:
    """The debug=tiny data set, drawn in this process (no run needed) under ``cache``."""
    from gender.synthetic import ensure_synthetic

    cfg = compose_cfg(*TINY)
    ensure_synthetic(
        cache / f"synthetic-{cfg.data.synthetic.n_per_class}x"
        f"{cfg.data.synthetic.size}px-seed{cfg.data.synthetic.seed}",
        **cfg.data.synthetic,
    )


def _sigint_default() -> None:
    """A child started from a shell job may inherit SIGINT ignored; Ctrl-C must reach it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _limit_file_size(limit: int):
    """A file-size limit stands in for a full disk: writes past it fail (EFBIG) as ENOSPC would,
    for any user and on any filesystem (Python ignores SIGXFSZ)."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def run_limited(limit: int, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        preexec_fn=_limit_file_size(limit),
    )


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="module")
def finished_run(module_dir: Path) -> Path:
    """A real finished debug=tiny run."""
    run_dir = module_dir / "finished"
    proc = run_cli("gender.run", *TINY, f"paths.cache_dir={module_dir / 'cache'}", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def interrupted_run(module_dir: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """A real run stopped with Ctrl-C (SIGINT) after its first epoch, and what it printed."""
    run_dir = module_dir / "interrupted"
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gender.run",
            *TINY,
            "trainer.epochs=12",
            f"paths.cache_dir={module_dir / 'cache'}",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_default,
    )
    history = run_dir / "history.csv"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) >= 2:
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.02)
    out, err = proc.communicate(timeout=300)
    return run_dir, subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# ------------------------------------------------- 1. a finished run is never altered
@pytest.mark.slow
def test_new_run_aimed_at_a_finished_run_is_refused_before_anything_is_written(finished_run):
    before = snapshot(finished_run)
    proc = run_cli("gender.run", *TINY, "optimizer.lr=0.001", f"hydra.run.dir={finished_run}")
    assert_one_line(proc, 2, "holds a finished run")
    assert snapshot(finished_run) == before  # .hydra/*.yaml, run.log: byte-identical, no failure.json


def test_evaluate_predict_or_bench_aimed_at_a_run_leave_it_untouched(finished_run, tmp_path):
    before = snapshot(finished_run)
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    for args in (
        ("gender.predict", f"model_path={finished_run}", str(image)),
        ("gender.evaluate", f"model_path={finished_run}", "logger=none"),
        ("gender.bench",),
    ):
        proc = run_cli(*args, f"hydra.run.dir={finished_run}")
        assert_one_line(proc, 2, "already holds a run")
    assert snapshot(finished_run) == before


def test_sweep_into_an_existing_sweep_dir_is_refused(tmp_path):
    sweep = tmp_path / "sweep"
    for job in ("0", "1"):
        (sweep / job / ".hydra").mkdir(parents=True)
        (sweep / job / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (sweep / "0" / "metrics.json").write_text('{"status": "completed"}\n')
    (sweep / "summary.md").write_text("# the sweep\n")
    before = snapshot(sweep)
    proc = run_cli("gender.run", "-m", *TINY, "seed=1,2", f"hydra.sweep.dir={sweep}")
    assert_one_line(proc, 2, "already holds 2 jobs (1 finished)")
    assert snapshot(sweep) == before


def test_an_interpolated_run_or_sweep_dir_is_checked_where_hydra_writes(finished_run, tmp_path, monkeypatch):
    """``hydra.run.dir=${paths.log_dir}/...`` (the W&B sweep file's) is guarded at the folder it
    resolves to, and no folder named after the literal text appears."""
    from gender.run_dir import guard_run_dir, guard_sweep_dir

    monkeypatch.chdir(tmp_path)
    logs = [*TINY, f"paths.log_dir={finished_run.parent}"]
    with pytest.raises(UserError, match="holds a finished run"):
        guard_run_dir([*logs, "hydra.run.dir=${paths.log_dir}/" + finished_run.name])
    assert guard_run_dir([*logs, "hydra.run.dir=${paths.log_dir}/new/${oc.env:NO_SUCH_VAR,x}"]) is None
    assert (finished_run.parent / "new" / "x").is_dir()
    with pytest.raises(UserError, match=r"already holds \d+ jobs"):
        guard_sweep_dir(["-m", *logs, "hydra.sweep.dir=${paths.log_dir}", "seed=1,2"])
    assert not list(tmp_path.iterdir())  # nothing named "${paths.log_dir}" in the working folder


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path):
    from gender.run_dir import claim_new_dir

    default = str(tmp_path / "runs" / "2026-01-01" / "12-00-00")
    first, second = claim_new_dir(default), claim_new_dir(default)
    assert first == default and second == default + "_2"
    assert Path(first).is_dir() and Path(second).is_dir()


# ------------------------------- 2. an interrupted run resumes only with its own configuration
@pytest.mark.slow
def test_interrupted_run_refuses_a_different_configuration(interrupted_run):
    run_dir, _ = interrupted_run
    assert not (run_dir / "metrics.json").exists()
    before = snapshot(run_dir)
    proc = run_cli("gender.run", *TINY, "trainer.epochs=12", "optimizer.lr=0.003", f"hydra.run.dir={run_dir}")
    line = assert_one_line(proc, 2, "holds an interrupted run recorded with other settings")
    assert "optimizer.lr (0.006 -> 0.003)" in line and f"python -m gender.resume {run_dir}" in line
    assert snapshot(run_dir) == before  # the recorded config is still the run's own


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals: main thread")
def test_ctrl_c_during_a_checkpoint_write_lands_after_it():
    from gender.io import deferred_interrupt

    outer = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        done = []
        with pytest.raises(KeyboardInterrupt):
            with deferred_interrupt():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the signal arrives while the "write" goes on
                done.append(True)
        assert done == [True]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job ignores Ctrl-C: still ignored
        with deferred_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, outer)


def test_ctrl_c_prints_the_resume_line_and_no_traceback(interrupted_run):
    run_dir, proc = interrupted_run
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "gender.resume" in line]
    assert lines == [f"interrupted: resume with  python -m gender.resume {run_dir}"]
    assert json.loads((run_dir / "failure.json").read_text())["error"].startswith("KeyboardInterrupt")


@pytest.mark.slow
def test_resume_may_change_epochs_but_refuses_other_keys(interrupted_run):
    run_dir, _ = interrupted_run
    before = snapshot(run_dir)
    refused = run_cli("gender.resume", str(run_dir), "optimizer.lr=0.1")
    assert_one_line(refused, 2, "cannot change optimizer.lr (0.006 -> 0.1) on a resume")
    assert snapshot(run_dir) == before
    with open(run_dir / "history.csv") as f:
        done = len(list(csv.DictReader(f)))
    epochs = done + 1
    proc = run_cli("gender.resume", str(run_dir), f"trainer.epochs={epochs}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"trainer.epochs (12 -> {epochs})" in proc.stderr  # said so
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert metrics["epochs_run"] == len(rows) == epochs
    assert metrics["params"].get("optimizer.lr", 0.006) == 0.006  # params: only keys set on the command line
    assert {float(r["learning_rate"]) for r in rows} == {0.006}  # one learning rate, as recorded
    recorded = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert recorded.trainer.epochs == epochs and recorded.optimizer.lr == 0.006


# ------------------------------------------- 3. no command overwrites a file it did not create
def test_predict_never_replaces_a_file_it_did_not_create(model_file, tmp_path):
    from gender.prediction import run_predict

    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    existing = tmp_path / "mine.csv"
    existing.write_text("precious\n")
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    shutil.copy(model_file, run / "model.keras")
    model_bytes = (run / "model.keras").read_bytes()
    (tmp_path / "link.csv").symlink_to(run / "model.keras")

    def predict(*overrides: str):
        cfg = compose_app("predict", f"model_path={run}", f"inputs=[{image}]", *overrides)
        return run_predict(cfg, tmp_path / "out")

    with pytest.raises(UserError, match="already exists; pass overwrite=true"):
        predict(f"output={existing}")
    assert existing.read_text() == "precious\n"
    for target in (run / "model.keras", tmp_path / "link.csv"):
        with pytest.raises(UserError, match="is never replaced"):
            predict(f"output={target}", "overwrite=true")
    assert (run / "model.keras").read_bytes() == model_bytes
    with pytest.raises(UserError, match="is a folder"):
        predict(f"output={tmp_path}", "overwrite=true")
    predict(f"output={existing}", "overwrite=true")  # asked for: replaced
    assert existing.read_text().startswith("path,class,probability,status")


# ------------------------------------------------ 4. every image loads with its real pixels
def write_png16(path: Path, array: np.ndarray) -> Path:
    """A 16-bit PNG (grayscale for 2-D, RGB for 3-D arrays), encoded by hand: Pillow cannot
    write 16-bit RGB."""
    h, w = array.shape[:2]
    color_type = 2 if array.ndim == 3 else 0
    raw = b"".join(b"\0" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return path


def test_sixteen_bit_grayscale_png_keeps_its_brightness(tmp_path):
    gradient = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (32, 1))
    path = write_png16(tmp_path / "gray16.png", gradient)
    assert Image.open(path).mode == "I;16"
    rgb = np.asarray(gdata.open_rgb(path))
    expected = np.rint(gradient / 257.0).astype(np.uint8)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], expected)  # not clipped to white


def _exif_rotated(path: Path, orientation: int) -> Path:
    """Left half red, right half blue (40x20), stored with an EXIF orientation."""
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = (255, 0, 0)
    a[:, 20:] = (0, 0, 255)
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, exif=exif.tobytes())
    return path


def _kind(name: str, tmp: Path) -> tuple[Path, dict[tuple[int, int], tuple[int, int, int]]]:
    """(file, {(row, col): expected RGB}) for one kind of image."""
    red, blue = (255, 0, 0), (0, 0, 255)
    if name == "rgb16_png":
        a = np.zeros((8, 8, 3), np.uint16)
        a[..., 0], a[..., 1], a[..., 2] = 65535, 128 * 257, 10 * 257
        return write_png16(tmp / "rgb16.png", a), {(0, 0): (255, 128, 10)}
    if name == "gray16_tiff":
        a = np.full((8, 8), 200 * 257, np.uint16)
        path = tmp / "gray16.tif"
        Image.fromarray(a).save(path)
        return path, {(0, 0): (200, 200, 200)}
    if name == "palette":
        p = Image.new("P", (8, 8))
        p.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
        p.putpixel((0, 0), 1)
        p.save(tmp / "palette.png")
        return tmp / "palette.png", {(0, 0): (200, 100, 50), (4, 4): (10, 20, 30)}
    if name == "palette_transparent":
        p = Image.new("P", (8, 8))
        p.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
        p.putpixel((0, 0), 1)
        p.save(tmp / "palette_t.png", transparency=0)
        return tmp / "palette_t.png", {(0, 0): (200, 100, 50), (4, 4): (255, 255, 255)}
    if name == "cmyk_jpeg":
        rgb = np.zeros((64, 64, 3), np.uint8)
        rgb[...] = (200, 50, 100)
        Image.fromarray(rgb).convert("CMYK").save(tmp / "cmyk.jpg", quality=98)
        return tmp / "cmyk.jpg", {(32, 32): (200, 50, 100)}
    if name.startswith("exif_"):
        orientation = int(name.split("_")[1])
        path = _exif_rotated(tmp / f"exif{orientation}.jpg", orientation)
        # as displayed: 6 turns it 90 degrees clockwise (red on top), 8 counter-clockwise (red at
        # the bottom), 3 half a turn (red on the right)
        return path, {
            6: {(2, 10): red, (37, 10): blue},
            8: {(2, 10): blue, (37, 10): red},
            3: {(10, 2): blue, (10, 37): red},
        }[orientation]
    if name == "animated_gif":
        frames = [Image.new("RGB", (16, 16), c) for c in (red, blue)]
        frames[0].save(tmp / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
        return tmp / "anim.gif", {(8, 8): red}
    if name == "rgba":
        a = np.zeros((8, 8, 4), np.uint8)
        a[..., 0], a[:4, :, 3], a[4:, :, 3] = 255, 255, 0
        Image.fromarray(a, "RGBA").save(tmp / "rgba.png")
        return tmp / "rgba.png", {(0, 0): red, (7, 7): (255, 255, 255)}
    if name == "gray_alpha":
        a = np.zeros((8, 8, 2), np.uint8)
        a[..., 0], a[:4, :, 1] = 40, 255
        Image.fromarray(a, "LA").save(tmp / "la.png")
        return tmp / "la.png", {(0, 0): (40, 40, 40), (7, 7): (255, 255, 255)}
    raise KeyError(name)


KINDS = [
    "rgb16_png",
    "gray16_tiff",
    "palette",
    "palette_transparent",
    "cmyk_jpeg",
    "exif_3",
    "exif_6",
    "exif_8",
    "animated_gif",
    "rgba",
    "gray_alpha",
]


@pytest.mark.parametrize("kind", KINDS)
def test_every_image_kind_loads_with_its_real_pixels(kind, tmp_path):
    path, expected = _kind(kind, tmp_path)
    rgb = np.asarray(gdata.open_rgb(path)).astype(int)
    for (row, col), color in expected.items():
        assert np.abs(rgb[row, col] - np.array(color)).max() <= 6, (kind, row, col, rgb[row, col])
    # the loader every stage uses, resized, keeps the colours (JPEG draft decoding included)
    small = gdata.load_image(path, 8).astype(int)
    assert small.shape == (8, 8, 3)


def test_training_evaluation_and_prediction_share_one_loader():
    from gender import inference, prediction, scoring

    # evaluate and predict prepare a file with ModelInputs.load, which calls training's loader
    assert inference.load_face is gdata.load_face
    assert prediction.ModelInputs is inference.ModelInputs and scoring.ModelInputs is inference.ModelInputs


def test_evaluate_and_predict_apply_the_training_runs_size_limit(model_file, tmp_path):
    from gender.prediction import run_predict
    from gender.scoring import run_evaluation

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    shutil.copy(model_file, run / "model.keras")
    saved = compose_cfg("data=folder", f"data.root={tmp_path / 'faces'}", "data.max_pixels=2000")
    OmegaConf.save(saved, run / ".hydra" / "config.yaml")
    root = make_images(tmp_path / "faces", {"male": 3, "female": 3})  # 32x32 = 1024 pixels: fine
    Image.new("RGB", (100, 100), (200, 0, 0)).save(root / "female" / "big.png")  # 10,000: too large
    preds = run_predict(compose_app("predict", f"model_path={run}", f"inputs=[{root}]"), tmp_path / "p")
    status = {Path(p.path).name: p.status for p in preds if "big" in p.path}
    assert status["big.png"].startswith("error: too large"), status
    cfg = compose_app(
        "evaluate", f"model_path={run}", "data=folder", f"data.root={root}", "logger=none", "mistakes=0"
    )
    metrics = run_evaluation(cfg, tmp_path / "e")
    assert [Path(s["path"]).name for s in metrics["skipped"]] == ["big.png"]
    assert metrics["n"] == 6


# ----------------------------------------- 5. unreadable files: skipped and listed, retried
def _block(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make files called ``name`` unreadable: chmod for a normal user; root reads anything, so
    there the data module's ``open`` refuses it as the kernel would."""

    def guarded_open(path, *args, **kwargs):
        if Path(path).name == name:
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(gdata, "open", guarded_open, raising=False)


def test_unreadable_files_are_skipped_and_listed_never_a_traceback(tmp_path, monkeypatch):
    root = make_images(tmp_path / "faces", {"male": 12, "female": 12})
    male = root / "male"
    (male / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (male / "loop_a.png").symlink_to(male / "loop_b.png")
    (male / "loop_b.png").symlink_to(male / "loop_a.png")
    os.mkfifo(male / "pipe.png")  # reading it would block forever
    shutil.copy(male / "0001.png", male / "locked.png")
    if IS_ROOT:
        _block(monkeypatch, "locked.png")
    else:
        (male / "locked.png").chmod(0)
    cfg = compose_cfg("data=folder", f"data.root={root}", "data.image_size=32", tmp_path=tmp_path)
    ds = gdata.prepare(cfg.data, 0, tmp_path / "cache")
    reasons = {Path(p).name: r for p, r in ds.report.bad}
    assert reasons["dangling.png"].startswith("missing")
    assert reasons["loop_a.png"] == reasons["loop_b.png"] == "unreadable: symlink loop"
    assert reasons["pipe.png"] == "not a regular file"
    assert reasons["locked.png"] == "unreadable: Permission denied"
    assert sum(len(v) for v in ds.splits.values()) == 24
    gdata.write_data_report(ds.report, tmp_path)
    with open(tmp_path / "skipped_files.csv") as f:
        listed = {Path(r["path"]).name for r in csv.DictReader(f)}
    assert set(reasons) <= listed


def test_files_that_vanish_during_a_run_are_skipped_and_listed(tmp_path, monkeypatch):
    root = make_images(tmp_path / "faces", {"male": 12, "female": 12})
    discover = gdata.discover

    def discover_then_delete(*args, **kwargs):
        samples = discover(*args, **kwargs)
        (root / "female" / "0003.png").unlink()  # gone between the listing and the decoding
        return samples

    monkeypatch.setattr(gdata, "discover", discover_then_delete)
    cfg = compose_cfg("data=folder", f"data.root={root}", "data.image_size=32", tmp_path=tmp_path)
    ds = gdata.prepare(cfg.data, 0, tmp_path / "cache")
    assert [(Path(p).name, r.split(":")[0]) for p, r in ds.report.bad] == [("0003.png", "missing")]


def test_a_skipped_file_is_retried_once_it_can_be_read(tmp_path, monkeypatch):
    root = make_images(tmp_path / "faces", {"male": 4})
    paths = sorted(str(p) for p in (root / "male").iterdir())
    link = root / "male" / "later.png"
    link.symlink_to(tmp_path / "target.png")
    locked = root / "male" / "locked.png"
    shutil.copy(paths[0], locked)
    paths += [str(link), str(locked)]
    if IS_ROOT:
        _block(monkeypatch, "locked.png")
    else:
        locked.chmod(0)
    first = gdata.build_cache(paths, 32, tmp_path / "cache")
    assert [r.split(":")[0] for r in first.reasons[-2:]] == ["missing", "unreadable"]
    shutil.copy(paths[1], tmp_path / "target.png")  # the link now points at an image
    monkeypatch.undo()
    locked.chmod(0o644)
    second = gdata.build_cache(paths, 32, tmp_path / "cache")
    assert second.ok.all(), second.reasons
    np.testing.assert_array_equal(second.images[-2], second.images[1])


# ------------------------------------------ 6. data too small to split honestly: never quiet
def test_a_class_too_small_for_the_split_is_an_error(tmp_path):
    root = make_images(tmp_path / "faces", {"male": 1, "female": 10})
    cfg = compose_cfg("data=folder", f"data.root={root}", "data.image_size=32", tmp_path=tmp_path)
    with pytest.raises(UserError, match="class male has 1 usable images, too few for data.split"):
        gdata.prepare(cfg.data, 0, tmp_path / "cache")


def test_a_given_test_split_of_one_class_is_a_loud_warning(tmp_path, capsys):
    root = make_images(tmp_path / "faces", {"male": 10, "female": 10})
    test_dir = make_images(tmp_path / "test", {"female": 3}, seed=1)
    (test_dir / "male").mkdir()
    (test_dir / "male" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    cfg = compose_cfg(
        "data=folder",
        f"data.root={root}",
        f"data.test_dir={test_dir}",
        "data.image_size=32",
        tmp_path=tmp_path,
    )
    ds = gdata.prepare(cfg.data, 0, tmp_path / "cache")
    assert ds.report.warnings and "test split holds one class only" in ds.report.warnings[0]
    assert "warning: the test split holds one class only (3 images of female)" in capsys.readouterr().err
    assert "WARNING" in ds.report.summary()


# ------------------------------------------- 7. config mistakes: one line before any data
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data=folder"], "data.root must be set (data=folder:"),
        (["seed=abc"], "seed=abc is invalid: must be an integer"),
        (["seed=1.5"], "seed=1.5 is invalid: must be an integer"),
        (["data.image_size=2"], "data.image_size=2 is too small for model=seed_cnn"),
        (["optimizer.lr=inf"], "optimizer.lr=inf is invalid: must be a finite number"),
        (["optimizer.lr=nan"], "optimizer.lr=nan is invalid: must be a finite number"),
        (["trainer.class_weight=equal"], "trainer.class_weight=equal is invalid"),
    ],
)
def test_config_mistakes_are_one_line_before_any_data_is_read(tmp_path, capsys, overrides, expected):
    run_dir = tmp_path / "run"
    proc = cli_in_process(
        "gender.run",
        "logger=none",
        *overrides,
        f"paths.cache_dir={tmp_path / 'c'}",
        f"hydra.run.dir={run_dir}",
        capsys=capsys,
    )
    assert_one_line(proc, 2, expected)
    assert not run_dir.exists() and not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    ("app", "override", "expected"),
    [
        ("predict", "batch_size=0", "batch_size=0 is invalid: must be a positive integer"),
        ("predict", "threshold=1.5", "threshold=1.5 is invalid: must be a probability in [0, 1]"),
        ("evaluate", "threshold=-0.1", "threshold=-0.1 is invalid"),
        ("evaluate", "batch_size=0", "batch_size=0 is invalid"),
        ("evaluate", "sample=0", "sample=0 is invalid"),
    ],
)
def test_scoring_settings_are_checked_before_any_image_is_read(tmp_path, app, override, expected):
    from gender.prediction import run_predict
    from gender.scoring import run_evaluation

    cfg = compose_app(app, f"model_path={tmp_path / 'nowhere.keras'}", override)
    with pytest.raises(UserError) as info:  # before the model (which does not exist) is looked at
        (run_predict if app == "predict" else run_evaluation)(cfg, tmp_path / "out")
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("module", "args", "expected"),
    [
        ("gender.run", ["logger=wandb", "data.root={tmp}/nowhere"], "nowhere does not exist: get the data"),
        ("gender.predict", ["model_path={tmp}", "a.png", "batch_size=0"], "batch_size=0 is invalid"),
        ("gender.evaluate", ["model_path={tmp}/missing"], "model_path={tmp}/missing does not exist"),
    ],
)
def test_a_mistake_the_job_finds_is_one_line_before_tensorflow_starts(tmp_path, module, args, expected):
    """Mistakes a job finds before it needs TensorFlow come back without waiting for its import: the
    command's real entrypoint in a fresh interpreter, which reports whether TensorFlow (or a W&B
    run) started."""
    argv = [module, *(a.format(tmp=tmp_path) for a in args), f"hydra.run.dir={tmp_path / 'out'}"]
    expected = expected.format(tmp=tmp_path)
    code = (
        "import importlib, sys\n"
        f"sys.argv = {argv!r}\n"
        "try:\n"
        f"    importlib.import_module({module!r}).cli()\n"
        "finally:\n"
        "    print('started:', 'tensorflow' in sys.modules, 'wandb' in sys.modules, file=sys.stderr)\n"
    )
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    line = assert_one_line(proc, 2, expected)
    assert proc.stderr.splitlines()[-1] == "started: False False", proc.stderr[-2000:]
    assert module != "gender.run" or "data=synthetic" in line  # the way to try without data


# ------------------------------------- 8. a full disk or an unwritable folder: one line
@pytest.mark.slow
def test_full_disk_during_training_is_one_line_and_leaves_nothing_half_written(tmp_path):
    cache, run_dir = tmp_path / "cache", tmp_path / "run"
    tiny_synthetic(cache)
    proc = run_limited(
        1 << 20, "gender.run", *TINY, f"paths.cache_dir={cache}", f"hydra.run.dir={run_dir}"
    )  # 1 MiB: the images fit, the weights do not
    line = assert_one_line(proc, 1, "cannot write")
    assert "File too large" in line and "free some space" in line
    assert not temp_files(run_dir) and not (run_dir / "model.keras").exists()
    for name in ("history.csv", "split.csv", "environment.json"):  # what is there is whole
        assert (run_dir / name).read_text().endswith("\n"), name


@pytest.mark.slow
def test_full_disk_while_decoding_is_one_line_not_a_crash(tmp_path):
    cache, run_dir = tmp_path / "cache", tmp_path / "run"
    tiny_synthetic(cache)
    proc = run_limited(
        200_000, "gender.run", *TINY, f"paths.cache_dir={cache}", f"hydra.run.dir={run_dir}"
    )  # the decoded images need 245,888 bytes
    assert_one_line(proc, 1, "File too large")
    assert not list(cache.glob("images-*")) and not temp_files(cache)  # nothing half-built


@pytest.mark.slow
def test_unwritable_output_folder_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    proc = run_cli("gender.run", *TINY, f"hydra.run.dir={blocker / 'run'}")
    assert_one_line(proc, 2, "cannot create it: Not a directory")
    proc = run_cli(
        "gender.predict",
        f"model_path={tmp_path}",
        "a.png",
        f"output={blocker / 'x.csv'}",
        f"hydra.run.dir={tmp_path / 'out'}",
    )
    assert_one_line(proc, 2, "is a file, not a folder")


def test_orphaned_temp_files_of_a_killed_cache_build_are_removed(tmp_path):
    root = make_images(tmp_path / "faces", {"male": 3})
    paths = sorted(str(p) for p in (root / "male").iterdir())
    built = gdata.build_cache(paths, 32, tmp_path / "cache")
    (built.directory / "index.json").unlink()  # as if the build had been killed before the end
    orphan = built.directory / ".tmp-k1ll3d-images.npy"
    orphan.write_bytes(b"\0" * 4096)
    again = gdata.build_cache(paths, 32, tmp_path / "cache")
    assert not again.reused and not orphan.exists() and not temp_files(built.directory)
    assert again.ok.all()


# ------------------------------------------------- 9. resume survives a damaged state
def test_resume_falls_back_to_the_earlier_state_when_the_latest_is_damaged(tmp_path, monkeypatch, capsys):
    from gender import checkpoints, training

    cfg = compose_cfg(*TINY, "trainer.epochs=4", tmp_path=tmp_path)
    run_dir = Path(cfg.paths.output_dir)
    interrupt_after(2, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        training.train(cfg)
    monkeypatch.undo()
    backup = checkpoints.backup_dir(run_dir)
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 2
    (backup / "training_metadata.json").write_text("")  # killed while Keras wrote it
    metrics = training.train(cfg)
    assert "resuming from the earlier one, after epoch 1" in capsys.readouterr().err
    with open(run_dir / "history.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2", "3", "4"]
    assert metrics["epochs_run"] == 4
    assert checkpoints.best_weights_epoch(run_dir) == metrics["best_epoch"]  # metrics describe the model


def test_a_tie_on_validation_accuracy_keeps_the_epoch_with_the_lower_loss(tmp_path):
    """A small head tied its badly calibrated first epoch with later ones (test ECE 19% against 1%)."""
    import keras

    from gender import checkpoints
    from gender.callbacks import BestWeights

    epochs = [(0.9775, 0.2697), (0.9775, 0.0959), (0.9762, 0.0873), (0.9775, 0.0822), (0.9770, 0.0800)]
    rows = [  # history.csv's rows hold strings
        {"epoch": str(e), "val_accuracy": str(acc), "val_loss": str(loss)}
        for e, (acc, loss) in enumerate(epochs, 1)
    ]
    assert checkpoints.best_epoch(rows, "val_accuracy")["epoch"] == "4"
    assert checkpoints.best_epoch(rows, "val_loss")["epoch"] == "5"  # a loss needs no tie-break
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    saver = BestWeights(tmp_path, "val_accuracy", None)
    saver.set_model(model)
    for epoch, (acc, loss) in enumerate(epochs[:3]):
        saver.on_epoch_end(epoch, {"val_accuracy": acc, "val_loss": loss})
    assert checkpoints.best_weights_epoch(tmp_path) == 2
    resumed = BestWeights(tmp_path, "val_accuracy", rows[1])  # a resumed run goes on from epoch 2
    resumed.set_model(model)
    for epoch, (acc, loss) in enumerate(epochs[3:], 3):
        resumed.on_epoch_end(epoch, {"val_accuracy": acc, "val_loss": loss})
    assert checkpoints.best_weights_epoch(tmp_path) == 4


def test_damaged_resume_state_without_an_earlier_one_says_what_to_delete(tmp_path):
    import h5py

    from gender import checkpoints

    backup = checkpoints.backup_dir(tmp_path)
    backup.mkdir(parents=True)
    with h5py.File(backup / "latest.weights.h5", "w") as f:
        f["w"] = np.zeros(3)
    (backup / "training_metadata.json").write_text('{"epoch": 3, "ba')  # truncated
    with pytest.raises(UserError, match=f"delete {re.escape(str(backup))} to train this run again"):
        checkpoints.repair_backup(tmp_path)
    (backup / "training_metadata.json").write_text('{"epoch": 3, "batch": 0}')
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 10)  # truncated
    with pytest.raises(UserError, match="latest.weights.h5 is unreadable"):
        checkpoints.repair_backup(tmp_path)


# --------------------------------- 10. nothing scored: non-zero; W&B stays in its places
def test_predict_exits_non_zero_when_nothing_could_be_scored(model_file, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    out = tmp_path / "out"
    proc = run_cli(
        "gender.predict", f"model_path={model_file}", str(bad), "image_size=32", f"hydra.run.dir={out}"
    )
    assert_one_line(proc, 2, "none of the 1 inputs could be predicted")
    with open(out / "predictions.csv") as f:  # the reason is still recorded
        assert [r["status"].split(":")[0] for r in csv.DictReader(f)] == ["error"]


def test_evaluate_exits_non_zero_when_nothing_could_be_scored(model_file, tmp_path):
    from gender.scoring import run_evaluation

    root = tmp_path / "faces"
    for cls in ("male", "female"):
        (root / cls).mkdir(parents=True)
        (root / cls / "bad.png").write_bytes(b"not an image")
    cfg = compose_app(
        "evaluate", f"model_path={model_file}", "data=folder", f"data.root={root}", "logger=none"
    )
    with pytest.raises(UserError, match="none of the 2 images could be read"):
        run_evaluation(cfg, tmp_path / "out")
    assert not (tmp_path / "out" / "metrics.json").exists()


# ----------------------------------------------------------- the table in docs/reliability.md
def test_reliability_table_names_existing_tests():
    """Every row of docs/reliability.md names a test that exists (here, or in the file it names as
    ``test_x.py::test_name``), and every test here (but this one) has a row: the table cannot drift
    from what is checked."""
    table = (PROJECT_ROOT / "docs" / "reliability.md").read_text()
    named = set(re.findall(r"`(test_\w+)`", table))
    elsewhere = re.findall(r"`(test_\w+\.py)::(test_\w+)`", table)
    here = set(re.findall(r"^def (test_\w+)", Path(__file__).read_text(), re.M))
    assert named, "no tests named in docs/reliability.md"
    assert named <= here, f"the table names tests that do not exist: {sorted(named - here)}"
    for file, test in elsewhere:
        assert f"\ndef {test}(" in (Path(__file__).parent / file).read_text(), (
            f"{file}::{test} does not exist"
        )
    missing = here - named - {"test_reliability_table_names_existing_tests"}
    assert not missing, f"tests without a row in docs/reliability.md: {sorted(missing)}"
