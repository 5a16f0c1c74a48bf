"""A saved model and its inputs: load it safely, read what it expects, predict batches of images.

Shared by training (its test evaluation), ``gender.evaluate`` and ``gender.predict``, so every
path loads, decodes and predicts the same way.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from gender.config import is_probability
from gender.data import load_face
from gender.errors import UserError
from gender.face import DESCRIPTOR_CHIP, DESCRIPTOR_SIZE, FaceSettings
from gender.io import read_json
from gender.log import quiet_tensorflow

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"


def resolve_model_path(path: str | os.PathLike[str]) -> Path:
    """A run directory means its ``model.keras``; anything else must be a ``.keras`` file."""
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / MODEL_FILE).is_file():
            raise UserError(
                f"model_path={path} is a directory without {MODEL_FILE}; "
                "pass a training run directory or a .keras file"
            )
        return p / MODEL_FILE
    if not p.exists():
        raise UserError(f"model_path={path} does not exist")
    if p.suffix != ".keras":
        raise UserError(f"model_path={path} is not a .keras file (Keras 3 native format)")
    return p


def load_model(path: str | os.PathLike[str]) -> Any:
    """Load a ``.keras`` model in safe mode: a model file must not be able to run code.

    A model holding a Python ``Lambda`` (or other arbitrary code) is refused with a UserError
    instead of being executed.
    """
    model_file = resolve_model_path(path)
    quiet_tensorflow()  # TensorFlow starts here, its start-up lines filtered
    import keras

    import gender.model  # noqa: F401 - registers MirrorImage, used by test-time-flip models

    try:
        model = keras.saving.load_model(model_file, compile=False, safe_mode=True)
    except Exception as e:  # keras raises ValueError/TypeError/OSError/zip errors alike
        first = (str(e).splitlines() or [type(e).__name__])[0]
        if "safe_mode" in str(e) or "arbitrary code" in str(e):
            raise UserError(
                f"refusing to load {model_file}: it contains Python code (e.g. a Lambda layer) "
                "that only loads with safe_mode off; rebuild the model without it"
            ) from None
        raise UserError(f"cannot load model {model_file}: {first[:200]}") from None
    _check_output(model, model_file)
    return model


def _check_output(model: Any, where: Path) -> None:
    shape = tuple(model.output_shape) if not isinstance(model.output_shape, list) else None
    if shape is None or len(shape) != 2 or shape[-1] not in (1, 2):
        raise UserError(
            f"{where}: expected one sigmoid output unit (or a 2-way softmax), "
            f"got output shape {model.output_shape}"
        )


def model_image_size(model: Any, fallback: int | None = None, face: FaceSettings | None = None) -> int:
    """Side length the model expects, read from its input shape (models take square RGB); for a
    descriptor model (``face``: ``data.face=descriptor``) the descriptor chip's, once its input is
    checked to be the descriptor."""
    shape = model.input_shape
    if isinstance(shape, list):
        raise UserError(f"expected a model with one image input, got inputs {shape}")
    if face is not None and face.describes:
        if tuple(shape[1:]) != face.input_shape(DESCRIPTOR_CHIP):
            raise UserError(
                f"the face stage is data.face=descriptor (128 numbers per face), but the model takes {shape}"
            )
        return DESCRIPTOR_CHIP
    if len(shape) == 2 and shape[-1] == DESCRIPTOR_SIZE:
        raise UserError(
            f"the model takes a face descriptor {shape}, not an image: pass face=descriptor "
            "(a training run directory records it)"
        )
    if len(shape) != 4 or shape[-1] != 3:
        raise UserError(f"expected a model taking (size, size, 3) images, got input {shape}")
    h, w = shape[1], shape[2]
    if h is None or w is None:
        if not fallback:
            raise UserError("the model accepts any image size; set image_size=N")
        return int(fallback)
    if h != w:
        raise UserError(f"expected a square model input, got {h}x{w}")
    return int(h)


def predict_probs(model: Any, images: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
    """Probability of class index 1 for a batch of raw [0, 255] RGB images (or descriptors; or,
    for a model with several inputs, a batch per input name)."""
    if isinstance(images, Mapping):
        x: Any = {name: np.asarray(batch, dtype=np.float32) for name, batch in images.items()}
        n = len(next(iter(x.values())))
    else:
        x = np.asarray(images, dtype=np.float32)
        n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        # predict_on_batch under a multi-replica strategy returns one copy of the batch per
        # replica (Keras 3); predict splits the batch across the replicas correctly
        out = model.predict(x, batch_size=len(x), verbose=0)
    else:
        out = model.predict_on_batch(x)
    out = np.asarray(out, dtype=np.float64)
    prob = out[:, 1] if out.ndim == 2 and out.shape[1] == 2 else out.reshape(n)
    if not np.isfinite(prob).all():
        raise UserError("the model produced non-finite outputs (NaN/inf); the weights are broken")
    if (prob < -1e-6).any() or (prob > 1 + 1e-6).any():
        raise UserError(
            "the model's output is not a probability (values outside [0, 1]); expected a sigmoid output layer"
        )
    return np.clip(prob, 0.0, 1.0)


def _try(loader: Callable[[str], Any], path: str) -> Any:
    try:
        return loader(path)
    except (ValueError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            return "missing: file not found"
        return (str(e).splitlines() or [type(e).__name__])[0] or type(e).__name__


def decode_batches(
    paths: Sequence[str],
    loader: Callable[[str], Any],
    batch_size: int,
    workers: int | None = None,
    processes: bool = False,
) -> Iterator[tuple[int, list[Any]]]:
    """Yield ``(start, items)`` per batch; an item is what ``loader`` returned or a one-line
    reason string when it raised ValueError/OSError.

    A file that fails to decode becomes a reason string, so one bad file never stops the rest.
    ``processes`` decodes in one worker process per core instead of threads, for loaders that hold
    Python's GIL (dlib's descriptor network); ``loader`` must then be picklable (no closure).
    """
    if processes:
        spawn = multiprocessing.get_context("spawn")  # no fork of a process TensorFlow runs in
        pool: Any = ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1, mp_context=spawn)
    else:
        pool = ThreadPoolExecutor(max_workers=workers or min(4, (os.cpu_count() or 1) + 1))
    load = partial(_try, loader)
    with pool:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            yield start, list(pool.map(load, chunk, chunksize=max(1, len(chunk) // 8) if processes else 1))


def trained_class_names(run_dir: Path | None) -> list[str] | None:
    """Class order the model was trained with, from the run's saved Hydra config."""
    if run_dir is None:
        return None
    cfg_file = run_dir / ".hydra" / "config.yaml"
    if not cfg_file.is_file():
        return None

    saved = OmegaConf.load(cfg_file)
    classes = OmegaConf.select(saved, "data.classes")
    return list(classes) if classes is not None else None


def face_settings_for(
    model_path: str | os.PathLike[str],
    face: str | None = None,
    margin: float | None = None,
    detector: str | None = None,
) -> FaceSettings:
    """The face stage a model was trained with (its run's ``data.face``, ``face_margin`` and
    ``face_detector``), so evaluate and predict apply exactly what training applied. ``face`` set
    explicitly is used for a bare ``.keras`` file; for a training run it must agree with the
    recorded one."""
    run_dir = resolve_model_path(model_path).parent
    cfg_file = run_dir / ".hydra" / "config.yaml"
    recorded = None
    if cfg_file.is_file():
        data = OmegaConf.select(OmegaConf.load(cfg_file), "data") or {}
        recorded = FaceSettings.from_config(data)
    if face is None:
        return recorded or FaceSettings()
    if detector is None and recorded is not None:
        detector = recorded.detector  # else FaceSettings' own default
    given = FaceSettings.from_config(
        {"face": face, "face_margin": 0.5 if margin is None else margin, "face_detector": detector}
    )
    if recorded is not None and given != recorded:
        raise UserError(
            f"face={given.mode} (margin {given.margin:g}, detector {given.detector}) differs from what the "
            f"model was trained with (data.face={recorded.mode}, margin {recorded.margin:g}, detector "
            f"{recorded.detector}); leave face unset to use that"
        )
    return given


def decision_threshold_for(model_path: str | os.PathLike[str], given: float | None = None) -> float:
    """``given`` when set; else the threshold the model's training run decided on (its
    metrics.json, ``trainer.decision_threshold``), so evaluate and predict call faces as the run's
    test figures did; 0.5 for a bare ``.keras`` file or a run from before the option."""
    if given is not None:
        return float(given)
    path = resolve_model_path(model_path).parent / "metrics.json"
    if not path.is_file():
        return 0.5
    metrics = read_json(path)
    if metrics is None:
        raise UserError(f"cannot read {path} (for the run's decision threshold); pass threshold=P")
    value = metrics.get("decision_threshold", 0.5)
    if not is_probability(value):
        raise UserError(f"{path}: decision_threshold={value} is not a probability; pass threshold=P")
    return float(value)


def max_pixels_for(model_path: str | os.PathLike[str], configured: int | None = None) -> int | None:
    """The image size limit the model's training run applied (its ``data.max_pixels``), so
    evaluate and predict skip exactly what training skipped; else ``configured`` (None: the
    loader's default, ``data.DEFAULT_MAX_PIXELS``)."""
    cfg_file = resolve_model_path(model_path).parent / ".hydra" / "config.yaml"
    if cfg_file.is_file():
        value = OmegaConf.select(OmegaConf.load(cfg_file), "data.max_pixels", default=None)
        if value is not None:
            return int(value)
    return configured


@dataclass(frozen=True)
class ModelInput:
    """One input of a saved model and how a file becomes it: its face stage and image size."""

    name: str
    face: FaceSettings
    size: int


@dataclass(frozen=True)
class ModelInputs:
    """Everything a model takes from one file: one input for a training run, one per kind of input
    for an ensemble of an image network and a descriptor head (``gender.ensembling``)."""

    inputs: tuple[ModelInput, ...]

    @classmethod
    def single(cls, face: FaceSettings | None, size: int) -> ModelInputs:
        """The one input of a training run's model: its face stage at its image size."""
        face = face or FaceSettings()
        return cls((ModelInput("descriptor" if face.describes else "image", face, size),))

    @property
    def face(self) -> FaceSettings:
        """The stage whose found / not found a report counts: the image network's, when there is one."""
        images = [i.face for i in self.inputs if not i.face.describes]
        return (images or [self.inputs[0].face])[0]

    @property
    def size(self) -> int:
        return next((i.size for i in self.inputs if not i.face.describes), self.inputs[0].size)

    @property
    def describes(self) -> bool:
        """Some input is a face descriptor: files are best prepared in worker processes."""
        return any(i.face.describes for i in self.inputs)

    def describe(self) -> str:
        if len(self.inputs) == 1:
            return self.inputs[0].face.describe()
        return " + ".join(f"{i.name}: {i.face.describe()}" for i in self.inputs)

    def load(self, path: str, max_pixels: int | None) -> tuple[Any, bool, str]:
        """(the model's input for one file, whether the face stage found no face, its "WxH");
        ValueError on bad files (``data.load_face`` per input)."""
        if len(self.inputs) == 1:
            only = self.inputs[0]
            return load_face(path, only.size, max_pixels, only.face)
        out, missing, kind = {}, False, ""
        for i in self.inputs:
            out[i.name], no_face, kind = load_face(path, i.size, max_pixels, i.face)
            missing = missing or no_face
        return out, missing, kind

    @staticmethod
    def stack(items: Sequence[Any]) -> Any:
        """One batch from loaded inputs: an array, or one array per input name."""
        if isinstance(items[0], Mapping):
            return {name: np.stack([item[name] for item in items]) for name in items[0]}
        return np.stack(items)


def model_inputs_for(model: Any, model_path: str | os.PathLike[str], cfg: Any) -> ModelInputs:
    """What evaluate and predict feed ``model``: the inputs an ensemble recorded, else the face
    stage its training run recorded (or ``cfg.face`` for a bare file) at the model's image size."""
    cfg_file = resolve_model_path(model_path).parent / ".hydra" / "config.yaml"
    recorded = OmegaConf.select(OmegaConf.load(cfg_file), "ensemble.inputs") if cfg_file.is_file() else None
    if recorded:
        if cfg.get("face") is not None:
            raise UserError(
                "face= applies to a model with one input; this ensemble records a face stage per input"
            )
        return ModelInputs(
            tuple(ModelInput(str(i.name), FaceSettings.from_config(i), int(i.image_size)) for i in recorded)
        )
    face = face_settings_for(model_path, cfg.get("face"), cfg.get("face_margin"), cfg.get("face_detector"))
    fallback = cfg.get("image_size") or OmegaConf.select(cfg, "data.image_size", default=None)
    size = model_image_size(model, fallback, face)
    return ModelInputs.single(face, size)


def require_model_path(cfg: Any, example: str) -> None:
    """A missing ``model_path`` is a user mistake: one line with an example, not a traceback."""

    if OmegaConf.is_missing(cfg, "model_path") or not cfg.model_path:
        raise UserError(f"model_path is required (a training run directory or a .keras file), e.g. {example}")
