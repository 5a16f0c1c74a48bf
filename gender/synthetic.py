"""An offline demo set of procedurally drawn face-like images (``data=synthetic``).

The two classes differ in learnable but noisy cues (hair length, beard shadow, lip colour, jaw
width), each drawn with a class-dependent probability, so a model can learn them but cannot be
perfect. It exists so the whole pipeline runs offline in about a minute; its accuracy is not a result.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

log = logging.getLogger(__name__)

CLASSES = ("male", "female")


def draw_face(rng: np.random.Generator, female: bool, size: int) -> Image.Image:
    """One face-like picture; every cue agrees with the class only with some probability."""
    s = size / 64.0
    bg = tuple(int(v) for v in rng.integers(40, 220, 3))
    im = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(im)
    skin = np.array([rng.uniform(120, 240), rng.uniform(90, 200), rng.uniform(60, 170)])
    skin = tuple(int(v) for v in skin)
    hair = tuple(int(v) for v in rng.integers(10, 120, 3))
    cx, cy = size / 2 + rng.normal(0, 2.5 * s), size / 2 + rng.normal(0, 2.5 * s)
    wide_jaw = rng.random() < (0.3 if female else 0.7)
    fw, fh = (17 if wide_jaw else 14) * s * rng.uniform(0.9, 1.1), 20 * s * rng.uniform(0.9, 1.1)
    long_hair = rng.random() < (0.75 if female else 0.2)
    if long_hair:  # hair falling beside the face, below the chin line
        d.rectangle([cx - fw - 5 * s, cy - fh - 3 * s, cx + fw + 5 * s, cy + fh + 6 * s], fill=hair)
    d.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=skin)
    d.chord([cx - fw, cy - fh - 2 * s, cx + fw, cy - fh / 3], 180, 360, fill=hair)
    if rng.random() < (0.15 if female else 0.6):  # beard shadow
        beard = tuple(max(0, c - 70) for c in skin)
        d.chord([cx - fw, cy, cx + fw, cy + fh], 0, 180, fill=beard)
    eye_y = cy - fh * 0.2
    for ex in (cx - fw * 0.45, cx + fw * 0.45):
        d.ellipse([ex - 2.5 * s, eye_y - 1.6 * s, ex + 2.5 * s, eye_y + 1.6 * s], fill=(30, 30, 40))
        brow = 1.8 * s if rng.random() < (0.3 if female else 0.7) else 0.9 * s
        d.rectangle([ex - 3.5 * s, eye_y - 4.5 * s, ex + 3.5 * s, eye_y - 4.5 * s + brow], fill=hair)
    red_lips = rng.random() < (0.7 if female else 0.25)
    lips = (190, 50, 70) if red_lips else tuple(max(0, c - 40) for c in skin)
    my = cy + fh * 0.5
    d.ellipse([cx - 5 * s, my - 1.5 * s, cx + 5 * s, my + 1.5 * s], fill=lips)
    im = im.rotate(rng.normal(0, 6), resample=Image.BILINEAR, fillcolor=bg)
    im = im.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0, 0.8) * s))
    noise = rng.normal(0, 8, (size, size, 3))
    arr = np.clip(np.asarray(im, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def generate(root: Path, n_per_class: int, size: int, seed: int) -> Path:
    """Write ``root/{male,female}/*.png|jpg``; a quarter are JPEG to exercise both decoders."""
    rng = np.random.default_rng(seed)
    for cls in CLASSES:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            im = draw_face(rng, cls == "female", size)
            if i % 4 == 3:
                im.save(root / cls / f"{cls}_{i:05d}.jpg", quality=90)
            else:
                im.save(root / cls / f"{cls}_{i:05d}.png")
    return root


def ensure_synthetic(root: Path, n_per_class: int = 300, size: int = 64, seed: int = 0) -> Path:
    """Generate the set once under ``root`` (a marker file says it is complete), then reuse it."""
    root = Path(root)
    marker = root / ".complete"
    if not marker.exists():
        log.info("generating synthetic demo data (%d images per class) in %s", n_per_class, root)
        tmp = root.with_name(root.name + f".tmp{os.getpid()}")
        generate(tmp, n_per_class, size, seed)
        (tmp / ".complete").write_text("ok\n")
        if root.exists():  # another job finished first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, root)
    return root
