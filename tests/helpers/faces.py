"""Drawn faces that dlib's HOG detector finds: tests of the face stage without any real photo."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFilter


def draw_face_photo(size=(640, 480), center=(420, 220), r=80, bg=(70, 110, 150)) -> Image.Image:
    """A plain drawn face on a larger background; dlib's HOG face detector finds it."""
    im = Image.new("RGB", size, bg)
    d = ImageDraw.Draw(im)
    cx, cy = center
    d.ellipse([cx - r * 1.05, cy - r * 1.45, cx + r * 1.05, cy + r * 1.1], fill=(60, 40, 30))
    d.ellipse([cx - r * 0.85, cy - r * 1.1, cx + r * 0.85, cy + r * 1.15], fill=(225, 185, 155))
    for ex in (cx - r * 0.36, cx + r * 0.36):
        d.rectangle([ex - r * 0.26, cy - r * 0.42, ex + r * 0.26, cy - r * 0.34], fill=(70, 50, 40))
        d.ellipse([ex - r * 0.2, cy - r * 0.22, ex + r * 0.2, cy - r * 0.06], fill=(40, 30, 30))
    d.polygon(
        [(cx, cy - r * 0.05), (cx - r * 0.12, cy + r * 0.35), (cx + r * 0.12, cy + r * 0.35)],
        fill=(200, 160, 130),
    )
    d.ellipse([cx - r * 0.35, cy + r * 0.55, cx + r * 0.35, cy + r * 0.72], fill=(150, 70, 70))
    return im.filter(ImageFilter.GaussianBlur(1))
