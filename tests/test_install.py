"""A regular install: the wheel holds every config, runs from any folder, and ships the console
scripts; users add config options of their own with ``hydra.searchpath``.

The wheel tests build from a copy of the checkout with ``pip wheel --no-build-isolation`` and
install it with ``pip install --no-deps --target`` (offline, a few seconds); they are marked slow
because they start several processes that import TensorFlow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from PIL import Image

from gender import CONF_DIR, PROJECT_ROOT

SCRIPTS = {  # console script -> the module its `python -m` form runs
    "gender-run": "gender.run",
    "gender-evaluate": "gender.evaluate",
    "gender-predict": "gender.predict",
    "gender-ensemble": "gender.ensemble",
    "gender-bench": "gender.bench",
    "gender-report": "gender.report",
    "gender-resume": "gender.resume",
}


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())


def test_console_scripts_point_at_each_command():
    scripts = _pyproject()["project"]["scripts"]
    assert set(scripts) == set(SCRIPTS)
    for name, target in scripts.items():
        module, _, func = target.partition(":")
        assert module == SCRIPTS[name]
        assert callable(getattr(__import__(module, fromlist=[func]), func)), target


def test_dev_extra_pulls_every_optional_extra():
    """`pip install -e .[dev]` must give the tests everything: every other extra's packages."""
    extras = _pyproject()["project"]["optional-dependencies"]
    dev = set(extras["dev"])
    for name, packages in extras.items():
        assert set(packages) <= dev, f"[dev] lacks part of [{name}]"


# ------------------------------------------------------------------- user config options
BIG = """\
# a model option of the user's own, outside the package
defaults:
  - seed_cnn
  - _self_
filters: [48, 96]
"""


def _user_conf(root: Path) -> Path:
    (root / "my_conf" / "model").mkdir(parents=True)
    (root / "my_conf" / "model" / "big.yaml").write_text(BIG)
    return root / "my_conf"


def test_searchpath_adds_a_user_option(tmp_path):
    """`hydra.searchpath=[file://my_conf] model=big`, relative to the current folder, as the README
    shows; `--cfg job` prints the composed config without training."""
    _user_conf(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gender.run",
            "hydra.searchpath=[file://my_conf]",
            "model=big",
            "--cfg",
            "job",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    model = yaml.safe_load(proc.stdout)["model"]
    assert model["filters"] == [48, 96] and model["name"] == "seed_cnn"
    assert model["dense_units"] == [128, 64]  # the rest from the packaged seed_cnn


def test_searchpath_option_passes_the_precheck(tmp_path):
    """A single run checks its config before Hydra starts: a user option must pass that too."""
    from gender.run import precheck

    conf = _user_conf(tmp_path)
    precheck([f"hydra.searchpath=[file://{conf}]", "model=big", "data=synthetic"])
    from gender.errors import UserError

    with pytest.raises(UserError, match="model=big is not an option"):
        precheck(["model=big"])


# -------------------------------------------------------------------------------- the wheel
@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The project built as a wheel from a clean copy and installed into a fresh folder."""
    base = tmp_path_factory.mktemp("install")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(PROJECT_ROOT / name, src / name)
    for package in ("gender", "hydra_plugins"):
        if (PROJECT_ROOT / package).is_dir():
            shutil.copytree(
                PROJECT_ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
    wheels, target = base / "wheels", base / "target"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]

    def pip_ok(*args: str) -> None:
        proc = subprocess.run([*pip, *args], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]

    pip_ok("wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(wheels))
    (wheel,) = wheels.glob("*.whl")
    pip_ok("install", "--no-deps", "--no-compile", "--target", str(target), str(wheel))
    return {"wheel": wheel, "target": target, "base": base}


def _env(target: Path) -> dict[str, str]:
    """The installed copy first on the path, whatever else this interpreter has installed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(PYTHONPATH=str(target), WANDB_MODE="disabled", GENDER_PROGRESS="0")
    env.pop("GENDER_PROJECT_ROOT", None)
    return env


@pytest.mark.slow
def test_wheel_holds_every_config_and_script(installed):
    with zipfile.ZipFile(installed["wheel"]) as whl:
        names = whl.namelist()
        entry_points = next(whl.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    shipped = {n for n in names if n.startswith("gender/conf/") and n.endswith(".yaml")}
    expected = {f"gender/conf/{p.relative_to(CONF_DIR).as_posix()}" for p in CONF_DIR.rglob("*.yaml")}
    assert shipped == expected
    assert "gender/conf/__init__.py" in names  # Hydra finds pkg://gender.conf from console scripts
    for script in SCRIPTS:
        assert f"{script} = " in entry_points
    top = {n.split("/", 1)[0] for n in names if "/" in n and ".dist-info/" not in n}
    assert top == {"gender"} | ({"hydra_plugins"} if (PROJECT_ROOT / "hydra_plugins").is_dir() else set())


@pytest.mark.slow
def test_installed_package_runs_from_another_folder(installed, tmp_path):
    """`python -m gender.run debug=tiny` outside the checkout: configs from the package, outputs
    under the current folder's outputs/; then the console scripts on what it wrote."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    env, target = _env(installed["target"]), installed["target"]
    where = subprocess.run(
        [sys.executable, "-c", "import gender; print(gender.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert Path(where.stdout.strip()).is_relative_to(target), where.stdout + where.stderr

    proc = subprocess.run(
        [sys.executable, "-m", "gender.run", "debug=tiny", "logger=none", "trainer.epochs=1"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (metrics,) = (work / "outputs" / "runs").glob("*/*/metrics.json")
    run_dir = metrics.parent
    assert (run_dir / "model.keras").is_file() and (work / "outputs" / ".cache").is_dir()

    # console scripts: the same commands as python -m gender.<name>
    bin_dir = target / "bin"
    for script in SCRIPTS:
        assert (bin_dir / script).is_file(), script
    cfg = subprocess.run(
        [str(bin_dir / "gender-run"), "debug=tiny", "--cfg", "job"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cfg.returncode == 0, cfg.stderr[-2000:]
    assert yaml.safe_load(cfg.stdout)["data"]["image_size"] == 32

    image = work / "face.png"
    Image.new("RGB", (40, 50), (200, 120, 90)).save(image)
    pred = subprocess.run(
        [
            str(bin_dir / "gender-predict"),
            f"model_path={run_dir}",
            str(image),
            f"output={work / 'preds.csv'}",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pred.returncode == 0, pred.stdout[-2000:] + pred.stderr[-3000:]
    assert "1 of 1 inputs predicted" in pred.stdout
    assert str(image) in (work / "preds.csv").read_text()  # the bare argument was an input

    report = subprocess.run(
        [str(bin_dir / "gender-report"), str(work / "nothing")],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 2 and report.stderr.startswith("error: ")
    resume = subprocess.run(
        [str(bin_dir / "gender-resume"), str(run_dir)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resume.returncode != 0 and "already finished" in resume.stderr
    for script in ("gender-evaluate", "gender-bench"):
        helped = subprocess.run(
            [str(bin_dir / script), "--help"], cwd=work, env=env, capture_output=True, text=True, timeout=120
        )
        assert helped.returncode == 0 and "Powered by Hydra" in helped.stdout, script
