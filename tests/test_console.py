"""A quiet, readable console: no TensorFlow start-up lines, one format for log lines, progress
bars only on a terminal, and one line naming the extra an option needs."""

from __future__ import annotations

import io
import logging
import os
import sys
from pathlib import Path

import pytest
from helpers import run_cli

from gender.extras import missing_extra, single_run_overrides
from gender.log import BelowLevel, ConsoleFormatter, startup_lines_to_keep
from gender.progress import progress

# What TensorFlow 2.21 wrote at every start on a CPU machine before gender.log filtered it
# (long lines shortened).
STARTUP = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1795872194.551918   14257 port.cc:153] oneDNN custom operations are on. You may see ...
I0000 00:00:1795872194.552377   14257 cudart_stub.cc:31] Could not find cuda drivers on your machine...
I0000 00:00:1795872557.367644   16252 cpu_feature_guard.cc:227] This TensorFlow binary is optimized...
To enable the following instructions: AVX2 AMX_TILE, in other operations, rebuild TensorFlow \
with the appropriate compiler flags.
W0000 00:00:1795872197.195791   14257 gpu_device.cc:2344] Cannot dlopen some GPU libraries.
E0000 00:00:1795872198.755821   14257 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error
"""


def test_startup_noise_is_dropped_and_the_rest_kept():
    other = "E0000 00:00:1795872198.755821   14257 op_kernel.cc:1234] something real broke"
    text = STARTUP + "/x/y.py:3: UserWarning: keep me\n" + other + "\n"
    assert startup_lines_to_keep(text, gpu_expected=False) == ["/x/y.py:3: UserWarning: keep me", other]
    # a GPU is installed but TensorFlow found none: the CUDA errors say why
    kept = startup_lines_to_keep(text, gpu_expected=True)
    assert any("cuInit" in line for line in kept) and not any("oneDNN" in line for line in kept)


def _record(name: str, level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, None, None)


def test_one_console_format():
    fmt = ConsoleFormatter()
    assert fmt.format(_record("gender.data", logging.INFO, "decoding 8 images")) == "decoding 8 images"
    assert fmt.format(_record("gender.tracking", logging.WARNING, "offline")) == "warning: offline"
    assert fmt.format(_record("hydra.core.utils", logging.INFO, "Launching")) == "hydra: Launching"
    assert (
        fmt.format(_record("hydra_plugins.hydra_optuna_sweeper._impl", logging.INFO, "Best value: 1"))
        == "hydra: Best value: 1"
    )
    assert fmt.format(_record("absl", logging.ERROR, "bad")) == "error: absl: bad"
    below = BelowLevel("WARNING")
    assert below.filter(_record("gender", logging.INFO, "x"))
    assert not below.filter(_record("gender", logging.WARNING, "x"))


@pytest.mark.parametrize("forced, drawn", [("1", True), ("0", False), ("", False)])
def test_progress_bar_only_where_asked(monkeypatch, capsys, forced, drawn):
    """Not a terminal (pytest's capture): no bar unless GENDER_PROGRESS=1; the items pass through."""
    monkeypatch.setenv("GENDER_PROGRESS", forced)
    batches = [(0, [1, 2, 3]), (3, [4, 5])]
    out = list(progress(iter(batches), total=5, desc="scoring", count=lambda b: len(b[1])))
    assert out == batches
    err = capsys.readouterr().err
    assert ("scoring:" in err and "/5 [" in err) if drawn else err == ""


def test_progress_default_follows_the_terminal(monkeypatch):
    monkeypatch.delenv("GENDER_PROGRESS", raising=False)

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    assert list(progress(range(3), desc="decoding")) == [0, 1, 2]
    assert "decoding" in sys.stderr.getvalue()


def test_missing_extra_is_one_line(monkeypatch):
    from hydra.errors import MissingConfigException

    optuna = MissingConfigException(
        "In 'hydra/config': Could not find 'hydra/sweeper/optuna'", missing_cfg_file="hydra/sweeper/optuna"
    )
    slurm = MissingConfigException(
        "In 'hydra/launcher/slurm': Could not load 'hydra/launcher/submitit_slurm'.",
        missing_cfg_file="hydra/launcher/submitit_slurm",
    )
    other = MissingConfigException("Could not find 'model/big'", missing_cfg_file="model/big")
    monkeypatch.setattr("gender.extras.installed", lambda module: True)
    assert missing_extra(optuna) is None  # installed: not about an extra
    monkeypatch.setattr("gender.extras.installed", lambda module: False)
    assert str(missing_extra(optuna)) == (
        "hydra/sweeper=optuna needs the optional 'optuna' extra "
        "(hydra-optuna-sweeper): pip install 'gender-hydra[optuna]'"
    )
    assert str(missing_extra(slurm)).startswith("hydra/launcher=slurm needs the optional 'slurm' extra")
    assert missing_extra(other) is None
    assert single_run_overrides(
        ["-m", "optimizer.lr=0.1,0.2", "model.dropout=interval(0, 1)", "hparams_search=lr_dropout_optuna"]
    ) == ["hparams_search=lr_dropout_optuna"]
    assert single_run_overrides(["-m", "--config-dir", "x"]) is None


HIDE_PLUGINS = """\
# As if installed without the [optuna] and [slurm] extras: their plugins and libraries absent.
import importlib.abc, os, sys

class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("optuna", "submitit"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, _Absent())
import hydra_plugins
hydra_plugins.__path__ = [os.path.join(os.path.dirname(__file__), "hydra_plugins")]
"""


@pytest.mark.parametrize(
    "args, extra",
    [
        (["-m", "hparams_search=lr_dropout_optuna", "debug=tiny"], "optuna"),
        (["hparams_search=lr_dropout_optuna", "debug=tiny"], "optuna"),
        (["-m", "hydra/launcher=slurm", "optimizer.lr=0.001,0.003"], "slurm"),
    ],
)
def test_option_without_its_extra_names_the_extra(tmp_path, args, extra):
    import hydra_plugins

    site = tmp_path / "site"
    (site / "hydra_plugins").mkdir(parents=True)
    # An editable install can list the checkout's hydra_plugins twice on the path: link each once.
    folders = dict.fromkeys(Path(d).resolve() for d in hydra_plugins.__path__ if Path(d).is_dir())
    for src in (p for d in folders for p in d.iterdir()):
        link = site / "hydra_plugins" / src.name
        hidden = ("hydra_optuna_sweeper", "hydra_submitit_launcher", "__pycache__")
        if src.is_dir() and src.name not in hidden and not link.exists():
            link.symlink_to(src)
    (site / "sitecustomize.py").write_text(HIDE_PLUGINS)
    pythonpath = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    proc = run_cli(
        "gender.run",
        *args,
        "logger=none",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        env={"PYTHONPATH": pythonpath},
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout[-1000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert f"pip install 'gender-hydra[{extra}]'" in proc.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()
