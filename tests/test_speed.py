"""Speed options and the benchmark: each runs for real on tiny data; no timing is ever asserted."""

from __future__ import annotations

import json
import logging
import math
import textwrap
from pathlib import Path

import pytest
from helpers import compose_cfg, make_images, run_cli
from omegaconf import open_dict

from gender import CONF_DIR, PROJECT_ROOT
from gender.training import train

BENCH_KEYS = (
    "pipeline_images_per_s",
    "pipeline_first_epoch_images_per_s",
    "train_step_images_per_s",
    "end_to_end_images_per_s",
    "seed_recipe_images_per_s",
    "inference_images_per_s",
    "peak_rss_mb",
    "ratio_end_to_end_vs_train_step",
    "ratio_framework_vs_seed_recipe",
)
FOLDER = (
    "data=folder",
    "data.classes.male=[man]",
    "data.classes.female=[woman]",
    "data.image_size=32",
    "data.batch_size=8",
)
ONE_STEP = ("trainer.epochs=1", "trainer.limit_batches=1", "trainer.verbose=0", "logger=none")


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return make_images(tmp_path / "images", {"man": 20, "woman": 20})


@pytest.fixture
def float32_policy():
    """train() sets the process-wide Keras dtype policy; later tests in this process expect float32."""
    yield
    import keras

    keras.mixed_precision.set_global_policy("float32")


def tiny_train_cfg(images: Path, tmp_path: Path, *overrides: str):
    return compose_cfg(*FOLDER, f"data.root={images}", *ONE_STEP, *overrides, tmp_path=tmp_path)


@pytest.mark.slow
def test_bench_cli_writes_every_figure(tmp_path, images):
    run_dir = tmp_path / "bench"
    proc = run_cli(
        "gender.bench",
        *FOLDER,
        f"data.root={images}",
        "bench.steps=2",
        "bench.warmup_steps=1",
        "bench.repeats=2",
        "bench.cached_batches=2",
        "bench.sweep.preset=null",
        "bench.face_images=8",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run_dir / "bench.json").read_text())
    for key in BENCH_KEYS:
        value = result[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)
    assert result["cache_reused"] is False  # a fresh cache dir: the first epoch built it
    assert all(len(v) == 2 for v in result["repetitions"].values())  # bench.repeats took effect
    assert result["settings"]["image_size"] == 32 and result["settings"]["batch_size"] == 8
    assert result["settings"]["seed_recipe_files"] == 40  # the seed recipe read the same files
    assert result["machine"]["cpu_count"] >= 1 and result["machine"]["tensorflow"]
    face_ms = result["face_stage_ms_per_image"]  # each face stage timed on the same files
    stages = {"none", "crop", "align", "align+cnn", "descriptor"}
    assert set(face_ms) == stages and all(v > 0 for v in face_ms.values())
    assert face_ms["align"] > face_ms["none"]  # detection and landmarks cost something
    assert face_ms["descriptor"] > face_ms["align"]  # and the descriptor network on top
    assert face_ms["align+cnn"] > face_ms["align"]  # no face in these images: the CNN searched each
    assert "face stage align (ms per image)" in proc.stdout
    assert result["config"]["data"]["root"] == str(images)
    assert "framework / seed recipe" in proc.stdout


def test_bench_of_a_descriptor_model_times_it_and_skips_the_pixel_only_seed_recipe(tmp_path, images):
    run_dir = tmp_path / "bench"
    proc = run_cli(
        "gender.bench",
        *FOLDER,
        f"data.root={images}",
        "experiment=face_descriptor",
        "bench.steps=1",
        "bench.warmup_steps=1",
        "bench.repeats=1",
        "bench.cached_batches=1",
        "bench.sweep.preset=null",
        "bench.face_images=0",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run_dir / "bench.json").read_text())
    assert result["train_step_images_per_s"] > 0 and result["seed_recipe_images_per_s"] is None
    assert "seed recipe not timed: with data.face=descriptor" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_bench_applies_speed_options_to_every_model(tmp_path, images):
    """The documented comparison command: augmentation in the model, mixed precision and XLA."""
    run_dir = tmp_path / "bench"
    proc = run_cli(
        "gender.bench",
        *FOLDER,
        f"data.root={images}",
        "bench.steps=1",
        "bench.warmup_steps=1",
        "bench.repeats=1",
        "bench.seed_recipe=false",
        "augmentation.placement=model",
        "trainer.mixed_precision=true",
        "trainer.jit_compile=true",
        "bench.sweep.preset=null",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run_dir / "bench.json").read_text())
    s = result["settings"]
    assert (s["augmentation_placement"], s["mixed_precision"], s["jit_compile"]) == (
        "model",
        "mixed_float16",
        True,
    )
    assert result["end_to_end_images_per_s"] > 0 and result["seed_recipe_images_per_s"] is None


def test_bench_bad_setting_is_one_line(tmp_path, images):
    proc = run_cli(
        "gender.bench",
        *FOLDER,
        f"data.root={images}",
        "bench.warmup_steps=0",
        f"hydra.run.dir={tmp_path / 'bench'}",
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: bench.warmup_steps=0 is invalid: must be an integer >= 1"
    )


@pytest.mark.slow
def test_jobs_of_a_sweep_decode_once(tmp_path, images, caplog, float32_policy):
    """Two training jobs with the same data config: only the first decodes, the second reuses it."""
    caplog.set_level(logging.INFO, logger="gender.data")
    for job in ("job0", "job1"):
        cfg = tiny_train_cfg(images, tmp_path, f"optimizer.lr={0.001 if job == 'job0' else 0.01}")
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / job)
        train(cfg)
    decoded = [r.getMessage() for r in caplog.records if r.getMessage().startswith("decoding ")]
    assert decoded == [
        f"decoding 40 images at 32px into {next((tmp_path / 'cache').glob('images-*'))} "
        "(once per data configuration)"
    ]


@pytest.mark.parametrize(("setting", "policy"), [("true", "mixed_float16"), ("bfloat16", "mixed_bfloat16")])
def test_mixed_precision_keeps_a_float32_output_and_trains_on_cpu(
    tmp_path, images, float32_policy, caplog, setting, policy
):
    import keras

    from gender.runtime import native_policies

    metrics = train(tiny_train_cfg(images, tmp_path, f"trainer.mixed_precision={setting}"))
    warned = [r.getMessage() for r in caplog.records if "does not run" in r.getMessage()]
    if policy in native_policies():
        assert warned == []
    else:  # emulated half precision: the user hears that it is far slower, once
        assert len(warned) == 1 and warned[0].startswith(f"trainer.mixed_precision={setting}: this machine")
    assert math.isfinite(metrics["train_loss"])
    model = keras.saving.load_model(tmp_path / "run" / "model.keras", compile=False)
    assert model.get_layer("prob").dtype_policy.name == "float32"
    assert model.output.dtype == "float32"
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(layer.dtype_policy.name == policy for layer in convs)
    assert metrics["runtime"]["dtype_policy"] == policy


def test_automatic_precision_is_what_the_machine_runs_natively(tmp_path, images, float32_policy):
    """Without a GPU: bfloat16 where /proc/cpuinfo lists a native bfloat16 unit, else float32."""
    import tensorflow as tf

    from gender.runtime import native_dtype_policy

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU decides the policy by its compute capability")

    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    expected = "mixed_bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"
    assert native_dtype_policy() == expected
    metrics = train(tiny_train_cfg(images, tmp_path, "trainer.mixed_precision=auto"))
    assert metrics["runtime"]["dtype_policy"] == expected


def test_a_resumed_run_keeps_the_precision_it_started_in(caplog):
    """mixed_precision=auto picks by machine; a run resumed on another machine must not switch."""
    import keras

    from gender.runtime import configure_runtime, native_dtype_policy

    auto = {"mixed_precision": "auto"}
    try:
        assert configure_runtime(auto, 0) == native_dtype_policy()
        assert configure_runtime(auto, 0, started_in="float32") == "float32"
        assert keras.mixed_precision.global_policy().name == "float32"
        other = "mixed_bfloat16" if native_dtype_policy() == "float32" else "float32"
        assert configure_runtime(auto, 0, started_in=other) == other
        assert keras.mixed_precision.global_policy().name == other
        if other != "float32":  # a precision this machine emulates: said once, slow but faithful
            assert "this run started in bfloat16 and continues in it" in caplog.text
        # an explicit setting is the user's choice, as on any run
        assert configure_runtime({"mixed_precision": False}, 0, started_in=other) == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_the_environment_names_the_cpu_features_that_set_the_speed():
    from gender.environment import CPU_FLAGS, describe

    env = describe(7)
    assert env["seed"] == 7 and set(env["cpu_flags"]) <= set(CPU_FLAGS)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():  # each feature is named exactly when the kernel lists it
        listed = {
            w for line in cpuinfo.read_text().splitlines() if line.startswith("flags") for w in line.split()
        }
        assert env["cpu_flags"] == [flag for flag in CPU_FLAGS if flag in listed]


def test_native_half_precision_follows_the_hardware():
    from gender.runtime import native_half_precision

    assert native_half_precision(None, "fpu sse2 avx2 fma") == ()
    assert native_half_precision(None, "avx2 avx512f avx512_bf16") == ("mixed_bfloat16",)
    assert native_half_precision(None, "avx2 amx_bf16 amx_tile") == ("mixed_bfloat16",)
    assert native_half_precision((6, 1), "") == ()
    assert native_half_precision((7, 5), "") == ("mixed_float16",)
    assert native_half_precision((9, 0), "") == ("mixed_float16", "mixed_bfloat16")
    assert native_half_precision((0, 0), "") == ()  # a GPU whose capability TF does not report


@pytest.mark.slow
def test_xla_trains_a_step_on_cpu(tmp_path, images):
    metrics = train(tiny_train_cfg(images, tmp_path, "trainer.jit_compile=true"))
    assert math.isfinite(metrics["train_loss"]) and metrics["epochs_run"] == 1
    assert metrics["runtime"]["jit_compile"] is True  # XLA really ran (Keras falls back silently)


MIRRORED = textwrap.dedent("""
    import json, sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict
    import gender.training as training

    replicas = []
    make = training.distribution_strategy

    def spy(name):
        strategy = make(name)
        replicas.append(strategy.num_replicas_in_sync)
        return strategy

    training.distribution_strategy = spy
    with initialize_config_dir(config_dir=sys.argv[1], version_base="1.3"):
        cfg = compose(config_name="config", overrides=sys.argv[3:])
    with open_dict(cfg):
        cfg.paths.output_dir = sys.argv[2] + "/run"
        cfg.paths.cache_dir = sys.argv[2] + "/cache"
    metrics = training.train(cfg)
    print(json.dumps({"replicas": replicas, "epochs_run": metrics["epochs_run"]}))
""")


@pytest.mark.slow
def test_mirrored_strategy_over_two_logical_cpus(tmp_path, images):
    """Logical devices must exist before TensorFlow initialises: hence a fresh process."""
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED)
    proc = run_cli(
        "mirrored",
        str(CONF_DIR),
        str(tmp_path),
        *FOLDER,
        f"data.root={images}",
        "trainer.epochs=1",
        "trainer.verbose=0",
        "logger=none",
        "trainer.strategy=mirrored",
        cwd=tmp_path,
        env={"PYTHONPATH": str(PROJECT_ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"replicas": [2], "epochs_run": 1}
    assert (tmp_path / "run" / "metrics.json").is_file()
