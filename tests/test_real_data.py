"""On ../shared/data/genderface (opt-in: GENDER_REAL_DATA=1, which .ci/run sets)."""

from __future__ import annotations

import csv
import json

import pytest
from helpers import REAL_DATA, run_cli

pytestmark = pytest.mark.real_data


@pytest.mark.slow
def test_real_data_run_through_the_cli(tmp_path):
    """The real folders, the real class mapping and the default split: thousands of test images."""
    run_dir = tmp_path / "run"
    proc = run_cli(
        "gender.run",
        f"data.root={REAL_DATA}",
        "data.image_size=32",
        "trainer.epochs=1",
        "trainer.limit_batches=20",
        "logger=none",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    sizes = metrics["split_sizes"]
    assert sizes["val"] >= 2400 and sizes["test"] >= 2400 and sizes["train"] > 19000
    assert metrics["test_images"] == sizes["test"]
    with open(run_dir / "split.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["class"] for r in rows} == {"male", "female"}
    assert {r["source"] for r in rows} == {"man", "woman"}
    by_split = {}
    for r in rows:
        by_split.setdefault(r["sha1"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_split.values())  # duplicates never straddle splits
    with open(run_dir / "skipped_files.csv") as f:
        skipped = list(csv.DictReader(f))
    assert skipped and all("conflicting label" in r["reason"] for r in skipped)  # cross-filed copies
    assert sum(sizes.values()) + len(skipped) == 24451
