"""Config composition: every option of every group composes, presets set what they promise."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import CONF_DIR, compose_cfg
from omegaconf import OmegaConf

from gender import PROJECT_ROOT
from gender.config import validate
from gender.errors import UserError

GROUPS = {
    group: sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))
    for group in (
        "data",
        "data/split",
        "augmentation",
        "model",
        "optimizer",
        "trainer",
        "logger",
        "experiment",
        "hparams_search",
        "debug",
    )
}


REQUIRED = {  # options with a key the user must set
    ("data/split", "holdout_kind"): ["data.split.holdout_kind=128x128"],
    ("data", "folder"): ["data.root=/data/faces"],
    ("model", "descriptor_mlp"): ["data.face=descriptor", "augmentation=none"],  # it takes descriptors
}


@pytest.mark.parametrize(("group", "option"), [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_option_composes_and_validates(group, option):
    cfg = compose_cfg(f"{group}={option}", *REQUIRED.get((group, option), []))
    assert OmegaConf.select(cfg, group.replace("/", ".")) is not None or group in (
        "experiment",
        "hparams_search",
        "debug",
    )
    validate(cfg)


def test_defaults_are_the_seed_recipe_on_the_real_data_with_a_large_test_split():
    cfg = compose_cfg()
    assert cfg.data.name == "genderface" and list(cfg.data.classes) == ["male", "female"]
    assert dict(cfg.data.classes) == {"male": ["man"], "female": ["woman"]}
    assert cfg.data.image_size == 128 and cfg.data.batch_size == 32
    assert dict(cfg.data.split) == {"train": 0.8, "val": 0.1, "test": 0.1, "seed": None}
    assert cfg.model.name == "seed_cnn" and cfg.model.dropout == 0.4
    assert cfg.optimizer.lr == 0.006 and cfg.optimizer._target_ == "keras.optimizers.Adam"
    assert cfg.augmentation.flip == "horizontal" and cfg.augmentation.rotation == 0.1
    assert cfg.augmentation.brightness == 0.1 and cfg.augmentation.zoom == 0.0
    assert cfg.data.root == str(PROJECT_ROOT / "data" / "genderface")


def test_experiment_seed_is_the_seed_project():
    cfg = compose_cfg("experiment=seed")
    assert dict(cfg.data.split) == {"train": 0.8, "val": 0.199, "test": 0.001, "seed": None}
    assert (cfg.model.name, cfg.model.dropout, cfg.optimizer.lr) == ("seed_cnn", 0.4, 0.006)
    assert (cfg.data.image_size, cfg.data.batch_size) == (128, 32)


def test_experiment_best_changes_several_groups():
    cfg = compose_cfg("experiment=best")
    assert cfg.model.name == "rescnn" and cfg.optimizer._target_ == "keras.optimizers.AdamW"
    assert cfg.optimizer.schedule == "cosine" and cfg.trainer.label_smoothing > 0
    assert cfg.augmentation.zoom > 0 and cfg.augmentation.blur > 0
    assert cfg.model.test_time_flip and list(cfg.model.blocks_per_stage) == [1, 1, 2, 2]
    assert cfg.data.image_size == 80 and cfg.trainer.mixed_precision == "auto" and cfg.trainer.epochs == 30
    assert cfg.data.face == "align" and cfg.trainer.class_weight == "balanced_per_kind"
    assert cfg.data.face_detector == "hog"  # the CNN fallback lost on FairFace (docs/results.md)
    assert cfg.augmentation.fused and cfg.augmentation.grayscale > 0
    assert cfg.augmentation.white_balance == 0  # cross_source measured no better (docs/results.md)


def test_previous_best_is_kept_to_compare_against():
    cfg = compose_cfg("experiment=best_in_domain")
    assert cfg.data.face == "none" and cfg.augmentation.white_balance == 0
    assert cfg.trainer.class_weight is None and cfg.data.image_size == 80


def test_experiment_fast_is_a_short_schedule_with_light_augmentation():
    cfg = compose_cfg("experiment=fast")
    assert (cfg.model.name, cfg.data.image_size, cfg.trainer.epochs) == ("rescnn", 64, 4)
    assert cfg.augmentation.zoom == 0 and cfg.augmentation.rotation == 0.1  # the seed's layers
    assert not cfg.model.test_time_flip


def test_data_dir_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GENDER_DATA_DIR", str(tmp_path))
    assert compose_cfg().data.root == f"{tmp_path}/genderface"


def test_synthetic_root_is_keyed_by_its_settings():
    a = compose_cfg("data=synthetic")
    b = compose_cfg("data=synthetic", "data.synthetic.n_per_class=10")
    assert a.data.root != b.data.root and a.data.root.startswith(a.paths.cache_dir)


def test_cli_shows_the_composed_config_without_tensorflow():
    from helpers import run_cli

    proc = run_cli("gender.run", "--cfg", "job", "optimizer=sgd", "optimizer.lr=0.02")
    assert proc.returncode == 0, proc.stderr
    cfg = OmegaConf.create(proc.stdout)
    assert cfg.optimizer._target_ == "keras.optimizers.SGD" and cfg.optimizer.lr == 0.02


@pytest.mark.parametrize("value", ["-1", "0.5", "true"])
def test_split_seed_must_be_a_non_negative_integer(value):
    with pytest.raises(UserError, match=r"data\.split\.seed=\S+ is invalid: a non-negative integer"):
        validate(compose_cfg(f"data.split.seed={value}"))


def test_holdout_kind_without_a_kind_is_one_clear_error():
    with pytest.raises(UserError, match="data.split.holdout_kind=KIND"):
        validate(compose_cfg("data/split=holdout_kind"))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optimizer.ema_momentum=1.5", "optimizer.ema_momentum=1.5 is invalid: must be in [0, 1]"),
        ("optimizer.ema_start_epoch=0", "optimizer.ema_start_epoch=0 is invalid: must be an integer >= 1"),
        ("optimizer.ema_start_epoch=2.5", "optimizer.ema_start_epoch=2.5 is invalid"),
    ],
)
def test_weight_averaging_settings_are_checked(override, expected):
    with pytest.raises(UserError, match=re.escape(expected)):
        validate(compose_cfg("optimizer.use_ema=true", override))
