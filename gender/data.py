"""Face images on disk -> validated, decoded-once uint8 cache -> deterministic split -> ``tf.data``.

Every file is read once per data configuration: decoding, resizing, validation and hashing happen in
one pass whose result (``images.npy`` + ``index.json``) is cached under ``paths.cache_dir`` and keyed
by the file list and the image size, so every job of a sweep reuses it. Training then only gathers
uint8 batches from that array, so the input pipeline stays behind the training step. With
``data.face=descriptor`` the cache holds each face's 128 descriptor numbers (float32) instead.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import stat
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from gender.config import check_choice
from gender.errors import UserError
from gender.face import DESCRIPTOR_CHIP, FaceSettings, check_available, face_descriptor, face_view
from gender.io import atomic_path, directory_lock, write_csv, write_json
from gender.progress import progress

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
CACHE_VERSION = 3
DATA_HELP = (
    "get the data from Kaggle ('Biggest gender/face recognition dataset', folders man/ and woman/) "
    "and point data.root at it (or set GENDER_DATA_DIR), e.g. data.root=../shared/data/genderface; "
    "or try the offline demo set with data=synthetic"
)
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is bad data, not a half-grey image
#: images with more pixels are skipped as decompression bombs, by training, evaluate and predict
#: alike (``data.max_pixels``; the same default as conf/data/folder.yaml)
DEFAULT_MAX_PIXELS = 50_000_000


@dataclass(frozen=True)
class Sample:
    """One image file and the class it was filed under."""

    path: str
    label: int
    source: str  # the configured folder it came from (per-group reports)


@dataclass
class DataReport:
    """What the validation pass found; written to the run directory, summarised in one line."""

    total: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    ignored_hidden: int = 0
    duplicate_groups: int = 0
    duplicate_files: int = 0
    conflicts: list[tuple[str, str]] = field(default_factory=list)  # (path, classes)
    face_mode: str = "none"
    no_face: int = 0  # readable images in which the face stage found no face (whole image used)
    warnings: list[str] = field(default_factory=list)  # what makes a figure of this run weak

    def summary(self) -> str:
        reasons = Counter(reason.split(":")[0] for _, reason in self.bad)
        bad = ", ".join(f"{n} {r}" for r, n in reasons.most_common()) or "none"
        return (
            f"data: {self.total} files, {self.total - len(self.bad)} usable; skipped: {bad}; "
            f"{self.ignored_hidden} hidden files ignored; {self.duplicate_files} exact duplicates in "
            f"{self.duplicate_groups} groups (kept in one split); "
            f"{len(self.conflicts)} files with conflicting labels excluded"
            + (
                f"; face stage ({self.face_mode}): no face found in {self.no_face} images, whole image used"
                + (" (described)" if self.face_mode == "descriptor" else "")
                if self.face_mode != "none"
                else ""
            )
            + "".join(f"; WARNING: {w}" for w in self.warnings)
        )


@dataclass
class ImageCache:
    """Decoded images of a file list: ``images[i]`` is ``paths[i]`` as uint8 (S, S, 3), or as its
    float32 (128,) face descriptor with ``data.face=descriptor``."""

    images: np.ndarray
    paths: list[str]
    ok: np.ndarray  # bool per path
    sha1: list[str]
    reasons: list[str]
    no_face: np.ndarray  # bool per path: the face stage found no face (whole image used)
    kinds: list[str]  # original image size as "WxH" (held-out-kind splits, per-kind reports)
    directory: Path
    reused: bool

    def index_of(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.paths)}


# ----------------------------------------------------------------------------------- discovery
def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name in {"Thumbs.db", "desktop.ini"}  # .DS_Store, ._* too


def _list_files(folder: Path, report: DataReport | None = None) -> tuple[list[Path], int]:
    """All non-hidden files under ``folder`` (recursively, sorted) and the number of hidden ones.

    A subfolder that cannot be listed is recorded in ``report.bad``: its files are not silently
    missing from the data."""
    files, hidden = [], 0

    def unreadable(error: OSError) -> None:
        if report is not None and error.filename:
            report.total += 1
            report.bad.append((str(error.filename), f"unreadable folder: {error.strerror}"))

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in sorted(filenames):
            if _is_hidden(name):
                hidden += 1
            else:
                files.append(Path(dirpath) / name)
    return files, hidden


def resolve_root(data_cfg: Any) -> Path:
    """The data root, materialising the synthetic set first when that is the configured data."""
    if data_cfg.get("synthetic"):
        from gender.synthetic import ensure_synthetic

        return ensure_synthetic(Path(data_cfg.root), **data_cfg.synthetic)
    return Path(data_cfg.root)


def check_root(root: str | os.PathLike) -> Path:
    """The data root as an absolute path; a missing or empty one is one line saying where to get data."""
    root = Path(root).expanduser().absolute()
    if not root.is_dir() or not any(root.iterdir()):
        state = "does not exist" if not root.exists() else "is empty"
        raise UserError(f"data.root={root} {state}: {DATA_HELP}")
    return root


def discover(data_cfg: Any, root: Path | None = None, report: DataReport | None = None) -> list[Sample]:
    """Every file of every configured class folder, labelled by ``data.classes`` order.

    ``data.classes`` maps each class name to a list of folders (relative to the root, or absolute),
    so several sources may feed one class. A subfolder of the root that maps to no class is an error
    unless listed in ``data.ignore_dirs``: silently dropping it could hide half a dataset.
    """
    root = check_root(root if root is not None else data_cfg.root)
    classes = dict(data_cfg.classes)
    if len(classes) != 2:
        raise UserError(f"data.classes must name exactly 2 classes, got {list(classes)}")
    report = report if report is not None else DataReport()
    mapped: set[Path] = set()
    samples: list[Sample] = []
    for label, (name, folders) in enumerate(classes.items()):
        if isinstance(folders, str):
            folders = [folders]
        count = 0
        for folder in folders:
            path = Path(folder).expanduser()
            path = path if path.is_absolute() else root / path
            if not path.is_dir():
                have = sorted(p.name for p in root.iterdir() if p.is_dir() and not _is_hidden(p.name))
                raise UserError(
                    f"data.classes.{name}: folder '{folder}' not found under {root} "
                    f"(folders there: {', '.join(have) or 'none'})"
                )
            mapped.add(path.resolve())
            files, hidden = _list_files(path, report)
            report.ignored_hidden += hidden
            samples += [Sample(str(f), label, str(folder)) for f in files]
            count += len(files)
        if count == 0:
            raise UserError(f"data.classes.{name}: no images in {list(folders)} under {root}")
    ignore = set(data_cfg.get("ignore_dirs") or [])
    unmapped = sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir()
        and not _is_hidden(p.name)
        and p.name not in ignore
        and p.resolve() not in mapped
        and not any(m.is_relative_to(p.resolve()) for m in mapped)
    )
    if unmapped:
        raise UserError(
            f"data.root has folders that map to no class: {', '.join(unmapped)}; "
            f"add them to data.classes (classes: {', '.join(classes)}) or to data.ignore_dirs"
        )
    report.total += len(samples)
    return samples


# ------------------------------------------------------------------------------- decoding
def _eight_bit(im: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer or float grayscale as 8-bit "L" with the same brightness: PIL's
    own conversion clips every value above 255 to white."""
    a = np.asarray(im)
    if im.mode.startswith("I;16") or (im.mode == "I" and a.size and a.max() > 255):
        a = a.astype(np.float64) / 257.0  # 65535 -> 255
    elif im.mode == "F":
        a = np.nan_to_num(a.astype(np.float64))
        if a.size and a.min() >= 0.0 and a.max() <= 1.0:  # a [0, 1] float image
            a = a * 255.0
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def open_rgb(path: str | os.PathLike, draft: int | None = None, max_pixels: int | None = None) -> Image.Image:
    """Decode any PIL-readable image to an RGB PIL image; raise ValueError on bad files.

    One loader for every kind of image, with its real pixels: grayscale (8- or 16-bit) and palette
    images become RGB, 16-bit channels are scaled (not clipped) to 8 bits, CMYK is converted,
    transparency is composited on white, EXIF rotation is applied, and an animated image gives
    its first frame. ``draft`` lets JPEG decode at a reduced scale (at least that many pixels a
    side). Images over ``max_pixels`` (None: ``DEFAULT_MAX_PIXELS``) are refused unread.
    Raises OSError when the file cannot be read at all (missing, permissions).
    """
    path = Path(path)
    max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise ValueError("not a regular file")
    if info.st_size == 0:
        raise ValueError("empty: zero-byte file")
    try:
        with Image.open(path) as im:
            original = im.size
            if max_pixels and im.width * im.height > max_pixels:
                raise ValueError(f"too large: {im.width}x{im.height} pixels exceeds data.max_pixels")
            if draft:
                im.draft("RGB", (draft, draft))
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode.startswith("I") or im.mode == "F":
                im = _eight_bit(im)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            rgb = im.convert("RGB")
            rgb.info["original_size"] = original  # before draft decoding and EXIF rotation
            return rgb
    except ValueError as e:
        if str(e).startswith("conversion from"):  # e.g. LAB or HSV: PIL has no way to RGB
            raise ValueError(f"not supported: {e}") from None
        raise
    except (FileNotFoundError, PermissionError):
        raise  # unreadable, not bad data: the caller says so (and retries it next time)
    except UnidentifiedImageError:
        raise ValueError("not an image: unidentified or unsupported format") from None
    except Image.DecompressionBombError as e:
        raise ValueError(f"too large: {e}") from None
    except (OSError, SyntaxError) as e:
        raise ValueError(f"corrupt: {str(e).splitlines()[0][:120]}") from None


def load_face(
    path: str | os.PathLike, size: int, max_pixels: int | None = None, face: FaceSettings | None = None
) -> tuple[np.ndarray, bool, str]:
    """(the model's input, whether the face stage found no face, original "WxH").

    The input is uint8 RGB (size, size, 3), or the face's float32 (128,) descriptor with
    ``data.face=descriptor``. Training, evaluation and prediction all use this one function, so a
    model sees the same input everywhere. Raises ValueError on bad files.
    """
    face = face or FaceSettings()
    # JPEG draft decoding is only safe without the face stage, which needs the face's detail
    im = open_rgb(path, draft=None if face.active else size, max_pixels=max_pixels)
    kind = "{}x{}".format(*im.info["original_size"])
    if not face.active:
        return np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.uint8), False, kind
    view, found = (
        face_descriptor(np.asarray(im), face) if face.describes else face_view(np.asarray(im), size, face)
    )
    return view, not found, kind


def load_image(
    path: str | os.PathLike, size: int, max_pixels: int | None = None, face: FaceSettings | None = None
) -> np.ndarray:
    """uint8 RGB (size, size, 3) of any image file (see ``load_face``); raise ValueError on bad files."""
    return load_face(path, size, max_pixels, face)[0]


def _file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def cache_key(paths: Sequence[str], image_size: int, max_pixels: int | None, face: str = "none") -> str:
    """Key a cache by the exact files (path, size, mtime, readable) and the decode settings.

    A file that cannot be read now (a broken link, a symlink loop, no permission) gets another
    key than once it can: fixing it rebuilds the cache instead of reusing the failure."""
    h = hashlib.sha1(f"v{CACHE_VERSION}|{image_size}|{max_pixels}|{face}".encode())
    for p in paths:
        try:
            st = os.stat(p)
        except OSError as e:
            h.update(f"{p}|unreadable:{e.errno}\n".encode())
            continue
        readable = "" if os.access(p, os.R_OK) else "|no-read"
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}{readable}\n".encode())
    return h.hexdigest()[:16]


def _unreadable_reason(error: OSError) -> str:
    """One line for a file that could not be read (as opposed to one that is not a good image)."""
    if isinstance(error, FileNotFoundError):
        return "missing: file not found (deleted, moved, or a broken link)"
    if error.errno == errno.ELOOP:
        return "unreadable: symlink loop"
    return f"unreadable: {error.strerror or type(error).__name__}"


def _now_readable(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            f.read(1)
        return True
    except OSError:
        return False


def _remove_orphans(directory: Path) -> None:
    """Temporary files a killed build left behind (only called while holding the lock)."""
    for orphan in directory.glob(".tmp-*"):
        try:
            orphan.unlink()
            log.info("removed %s, left by an interrupted cache build", orphan.name)
        except OSError:
            pass


def _reserve(path: Path, nbytes: int) -> None:
    """Allocate the whole file now: on a full disk this is an OSError (ENOSPC) here, instead of a
    SIGBUS later when a page of the memory map cannot be written."""
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, nbytes)
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # the filesystem cannot: write zeros
                f.seek(0, os.SEEK_END)
                block = b"\0" * (1 << 20)
                while f.tell() < nbytes:
                    f.write(block[: nbytes - f.tell()])
                f.flush()
                os.fsync(f.fileno())
            else:
                raise


def build_cache(
    paths: Sequence[str],
    image_size: int,
    cache_dir: str | os.PathLike,
    max_pixels: int | None = None,
    workers: int | None = None,
    in_memory: str | bool = "auto",
    face: FaceSettings | None = None,
) -> ImageCache:
    """Decode each file once into ``cache_dir/<key>/images.npy``; reuse it when the key matches.

    With a face stage the cache holds the face views, so detection and alignment cost once per
    data configuration.
    """
    face = face or FaceSettings()
    if face.describes:
        image_size = DESCRIPTOR_CHIP  # the network's own chip, whatever data.image_size says
    key = cache_key(paths, image_size, max_pixels, face.key())
    tag = "" if not face.active else f"-{face.mode}"
    name = "descriptors" if face.describes else f"images-{image_size}px{tag}"
    directory = Path(cache_dir) / f"{name}-{key}"
    index_file = directory / "index.json"
    reused = _reusable(index_file)
    if not reused:
        created = not directory.exists()
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with directory_lock(directory):
                reused = _reusable(index_file)  # another job may have built it while we waited
                if not reused:
                    _remove_orphans(directory)
                    known = _found_by_hog(paths, image_size, max_pixels, cache_dir, name, face)
                    _decode_into(directory, paths, image_size, max_pixels, workers, face, known)
        except OSError:
            if created:  # leave nothing half-built behind: the next build starts clean
                shutil.rmtree(directory, ignore_errors=True)
            raise
    index = json.loads(index_file.read_text())
    images = np.load(directory / "images.npy", mmap_mode="r")
    if in_memory is True or (in_memory == "auto" and images.nbytes < _available_memory() // 3):
        images = np.ascontiguousarray(images)
    reasons = index["reasons"]
    return ImageCache(
        images=images,
        paths=index["paths"],
        ok=np.array([not r for r in reasons], dtype=bool),
        sha1=index["sha1"],
        reasons=reasons,
        no_face=np.array(index["no_face"], dtype=bool),
        kinds=index["kinds"],
        directory=directory,
        reused=reused,
    )


def _found_by_hog(
    paths: Sequence[str],
    image_size: int,
    max_pixels: int | None,
    cache_dir: str | os.PathLike,
    name: str,
    face: FaceSettings,
) -> tuple[np.ndarray, dict] | None:
    """(inputs, index) of the complete HOG-only cache of the same files and stage, when building a
    ``hog_then_cnn`` one: wherever HOG found a face the second detector never runs, so those rows
    are the same and only the images HOG missed need the slow detector (genderface's descriptors:
    2,062 images searched again instead of 24,451 described). None when there is no such cache."""
    if face.detector != "hog_then_cnn" or not face.active:
        return None
    hog = dataclasses.replace(face, detector="hog")
    sibling = Path(cache_dir) / f"{name}-{cache_key(paths, image_size, max_pixels, hog.key())}"
    if not _reusable(sibling / "index.json"):
        return None
    try:
        index = json.loads((sibling / "index.json").read_text())
        inputs = np.load(sibling / "images.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None  # an unreadable sibling only costs the full decode
    if index.get("paths") != list(paths) or len(inputs) != len(paths):
        return None
    return inputs, index


def _reusable(index_file: Path) -> bool:
    """A complete cache whose unreadable files are all still unreadable: a file that failed to
    read (not to decode) and can be read now means the cache must be rebuilt."""
    if not index_file.exists():
        return False
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError):
        return False
    retry = [index["paths"][i] for i in index.get("retry", [])]
    if any(_now_readable(p) for p in retry):
        log.info(
            "%d files that could not be read last time are readable now: rebuilding the decode cache",
            sum(_now_readable(p) for p in retry),
        )
        return False
    return True


def _decode_into(
    directory: Path,
    paths: Sequence[str],
    image_size: int,
    max_pixels: int | None,
    workers: int | None,
    face: FaceSettings,
    known: tuple[np.ndarray, dict] | None = None,
) -> None:
    """Decode every file into ``directory/images.npy`` and write ``index.json`` (the marker of a
    complete cache) last, each atomically; rows where ``known`` (``_found_by_hog``) found a face
    are copied from it instead."""
    log.info(
        "decoding %d images at %dpx%s into %s (once per data configuration)",
        len(paths),
        image_size,
        f" with the face stage {face.describe()}" if face.active else "",
        directory,
    )
    shape = (len(paths), *face.input_shape(image_size))
    dtype = np.float32 if face.describes else np.uint8
    needed = int(np.prod(shape)) * np.dtype(dtype).itemsize + (1 << 20)
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise OSError(
            errno.ENOSPC,
            f"{os.strerror(errno.ENOSPC)} (the decoded images need "
            f"{needed / 2**20:.0f} MiB, {free / 2**20:.0f} MiB free)",
            str(directory),
        )
    with atomic_path(directory / "images.npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        _reserve(tmp, os.path.getsize(tmp))
        reasons = [""] * len(paths)
        digests = [""] * len(paths)
        no_face = [False] * len(paths)
        kinds = [""] * len(paths)
        retry: list[int] = []
        todo = list(range(len(paths)))
        if known is not None:
            inputs, index = known
            todo = [i for i in todo if index["reasons"][i] or index["no_face"][i]]
            for i in set(range(len(paths))) - set(todo):  # HOG found these faces: the same rows
                out[i] = inputs[i]
                digests[i], kinds[i] = index["sha1"][i], index["kinds"][i]
            reused = len(paths) - len(todo)
            log.info("%d faces reused from the HOG-only cache; searching %d again", reused, len(todo))
        jobs = [(paths[i], image_size, max_pixels, face) for i in todo]
        if face.describes:  # dlib's network holds the GIL: one process per core
            spawn = multiprocessing.get_context("spawn")  # no fork of a process TensorFlow may run in
            pool: Any = ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1, mp_context=spawn)
            results = pool.map(_decode_one, jobs, chunksize=16)
        else:
            pool = ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 2) + 2))
            results = pool.map(_decode_one, jobs)
        with pool:
            for i, (item, missing, kind, digest, reason, unreadable) in zip(
                todo, progress(results, total=len(todo), desc="decoding"), strict=True
            ):
                digests[i], reasons[i], no_face[i], kinds[i] = digest, reason, missing, kind
                if item is not None:
                    out[i] = item
                if unreadable:  # could not read it at all: retried by the next build
                    retry.append(i)
        out.flush()
        out = None  # release the memory map before the rename
    write_json(
        {
            "paths": list(paths),
            "reasons": reasons,
            "sha1": digests,
            "no_face": no_face,
            "kinds": kinds,
            "face": face.key(),
            "retry": sorted(retry),
        },
        directory / "index.json",
    )


def _decode_one(
    job: tuple[str, int, int | None, FaceSettings],
) -> tuple[np.ndarray | None, bool, str, str, str, bool]:
    """One file of the cache: (input or None, no face, kind, digest, reason it was skipped, whether
    it could not be read at all). A top-level function, so worker processes can run it."""
    path, image_size, max_pixels, face = job
    digest = ""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a pipe would block the read
            raise ValueError("not a regular file")
        digest = _file_digest(path)
        item, missing, kind = load_face(path, image_size, max_pixels, face)
        return item, missing, kind, digest, "", False
    except ValueError as e:
        return None, False, "", digest, str(e).splitlines()[0] or type(e).__name__, False
    except OSError as e:
        return None, False, "", digest, _unreadable_reason(e), True


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def image_kinds(sizes: Sequence[str], min_share: float = 0.05) -> list[str]:
    """Kind of each image: its original size ("100x100") when at least ``min_share`` of the
    images have that size, else ``other``. A data set that mixes sources usually mixes sizes too
    (the genderface set: tight 100x100 crops, 128x128 photos with background, other crops)."""
    counts = Counter(sizes)
    common = {k for k, n in counts.items() if k and n >= min_share * len(sizes)}
    return [k if k in common else "other" for k in sizes]


# ---------------------------------------------------------------------------------- split
def split_samples(
    samples: Sequence[Sample],
    ratios: dict[str, float],
    seed: int,
    digests: dict[str, str] | None = None,
) -> dict[str, list[Sample]]:
    """Deterministic split, stratified by class, that keeps exact duplicates together.

    Files are grouped by content digest (or by path without digests) and the groups ordered by
    digest before the seeded shuffle, so the split depends only on the files' contents, the
    ratios and the seed: never on the order a filesystem lists them in.
    """
    digests = digests or {}
    groups: dict[tuple[int, str], list[Sample]] = defaultdict(list)
    for s in samples:
        groups[(s.label, digests.get(s.path) or hashlib.sha1(s.path.encode()).hexdigest())].append(s)
    out: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    names = [n for n in SPLITS if ratios.get(n, 0) > 0]
    rng = np.random.default_rng(seed)
    for label in sorted({lbl for lbl, _ in groups}):
        keys = sorted(k for k in groups if k[0] == label)
        order = rng.permutation(len(keys))
        total = sum(len(groups[k]) for k in keys)
        quotas = _quotas(total, [ratios[n] for n in names])
        filled = dict.fromkeys(names, 0)
        split_idx = 0
        for i in order:
            members = groups[keys[i]]
            while split_idx < len(names) - 1 and filled[names[split_idx]] >= quotas[split_idx]:
                split_idx += 1
            name = names[split_idx]
            out[name].extend(members)
            filled[name] += len(members)
    for name in out:
        out[name].sort(key=lambda s: s.path)
    return out


def _quotas(total: int, ratios: Sequence[float]) -> list[int]:
    """Sizes per split that add up to ``total``; every split with a ratio gets at least one file."""
    raw = np.array(ratios, dtype=float) / sum(ratios) * total
    sizes = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - sizes))[: total - sizes.sum()]:
        sizes[i] += 1
    for i in range(len(sizes)):
        if sizes[i] == 0 and total >= len(sizes):
            sizes[i] = 1
            sizes[int(np.argmax(sizes))] -= 1
    return sizes.tolist()


def write_manifest(
    splits: dict[str, list[Sample]],
    class_names: Sequence[str],
    path: str | os.PathLike,
    digests: dict[str, str] | None = None,
) -> Path:
    """``split.csv``: which file went where, so any run can be re-evaluated on its own test files."""
    digests = digests or {}
    rows = (
        (s.path, s.label, class_names[s.label], name, s.source, digests.get(s.path, ""))
        for name in SPLITS
        for s in splits.get(name, [])
    )
    return write_csv(rows, ["path", "label", "class", "split", "source", "sha1"], path)


def read_manifest(path: str | os.PathLike) -> dict[str, list[Sample]]:
    """Read ``split.csv`` (or a run directory holding one) back into samples per split."""
    path = Path(path)
    if path.is_dir():
        path = path / "split.csv"
    if not path.is_file():
        raise UserError(f"no split manifest at {path}")
    out: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out[row["split"]].append(Sample(row["path"], int(row["label"]), row["source"]))
    return out


# ----------------------------------------------------------------------------- the pipeline
@dataclass
class Datasets:
    """Everything the trainer needs from the data, plus what it must record about it."""

    train: Any  # tf.data.Dataset of (uint8 images, float32 labels)
    val: Any
    test: Any
    splits: dict[str, list[Sample]]
    class_names: list[str]
    image_size: int
    report: DataReport
    cache: ImageCache
    indices: dict[str, np.ndarray]
    digests: dict[str, str]  # path -> SHA-1 of its bytes (duplicates, manifest)
    epoch: Any  # tf.Variable: the training epoch, which the shuffle order derives from

    def labels(self, split: str) -> np.ndarray:
        return np.array([s.label for s in self.splits[split]], dtype=np.float32)


def prepare(
    data_cfg: Any,
    seed: int,
    cache_dir: str | os.PathLike,
    class_weight: str | None = None,
    ages: Callable[[Sequence[str], Mapping[str, str]], np.ndarray] | None = None,
) -> Datasets:
    """Discover, validate, decode (cached) and split; build the tf.data pipelines without augmentation.

    ``class_weight`` (``trainer.class_weight``) makes the training pipeline yield per-image loss
    weights as a third element (see ``sample_weights``); ``ages`` (a ``gender.ages.AgeEstimator``)
    estimates the training images' ages, when the mode balances by age."""
    report = DataReport()
    face = FaceSettings.from_config(data_cfg)
    check_available(face)
    report.face_mode = face.mode
    class_names = list(data_cfg.classes)
    root = resolve_root(data_cfg)
    samples = discover(data_cfg, root, report)
    test_samples: list[Sample] = []
    if data_cfg.get("test_dir"):
        test_samples = discover(data_cfg, Path(data_cfg.test_dir), report)
    everything = samples + test_samples
    cache = build_cache(
        [s.path for s in everything],
        int(data_cfg.image_size),
        cache_dir,
        max_pixels=data_cfg.get("max_pixels"),
        workers=data_cfg.get("decode_workers"),
        in_memory=data_cfg.get("cache_in_memory", "auto"),
        face=face,
    )
    where = cache.index_of()
    for s in everything:
        if not cache.ok[where[s.path]]:
            report.bad.append((s.path, cache.reasons[where[s.path]]))
    if report.bad and data_cfg.get("bad_files", "skip") == "error":
        path, reason = report.bad[0]
        raise UserError(f"{len(report.bad)} unreadable files (data.bad_files=error), first: {path}: {reason}")
    digests = {p: d for p, d in zip(cache.paths, cache.sha1, strict=True) if d}
    good = [s for s in samples if cache.ok[where[s.path]]]
    good, conflicts = _drop_label_conflicts(good, digests, class_names, report)
    report.conflicts = conflicts
    report.no_face = int(sum(cache.no_face[where[s.path]] for s in everything if cache.ok[where[s.path]]))
    holdout = data_cfg.split.get("holdout_kind")
    ratios = {k: float(data_cfg.split.get(k, 0.0)) for k in SPLITS}
    if test_samples or holdout:
        ratios["test"] = 0.0
    kind_of = dict(zip(cache.paths, image_kinds(cache.kinds), strict=True))
    if holdout:
        held = [s for s in good if kind_of[s.path] == str(holdout)]
        if not held:
            have = sorted({kind_of[s.path] for s in good})
            raise UserError(
                f"data.split.holdout_kind={holdout}: no images of that kind; kinds here: {', '.join(have)}"
            )
        good = [s for s in good if kind_of[s.path] != str(holdout)]
        # a duplicate of a held-out image must not train the model it tests
        held_digests = {digests.get(s.path) for s in held}
        good = [s for s in good if digests.get(s.path) not in held_digests]
    split_seed = data_cfg.split.get("seed")  # its own seed: more models on one split (an ensemble)
    splits = split_samples(good, ratios, seed if split_seed is None else int(split_seed), digests)
    if holdout:
        splits["test"] = sorted(held, key=lambda s: s.path)
    if test_samples:
        splits["test"] = sorted((s for s in test_samples if cache.ok[where[s.path]]), key=lambda s: s.path)
    present = {s.label for s in good}
    if len(present) < 2:
        raise UserError(
            f"only one class has usable images ({class_names[present.pop()]}); need both to train"
        )
    _check_split_honest(good, splits, ratios, class_names, report, test_given=bool(test_samples or holdout))
    for name in ("train", "val"):
        if not splits[name]:
            raise UserError(
                f"data.split.{name} leaves the {name} split empty ({len(good)} usable images, split {ratios})"
            )
    indices = {name: np.array([where[s.path] for s in splits[name]], dtype=np.int64) for name in SPLITS}
    import tensorflow as tf

    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_epoch")
    labels = {name: np.array([s.label for s in splits[name]], dtype=np.float32) for name in SPLITS}
    train_paths = [s.path for s in splits["train"]]
    train_ages = None
    if class_weight == BY_AGE and ages is not None:
        train_ages = ages(train_paths, digests)
    weights = sample_weights(class_weight, labels["train"], [kind_of[p] for p in train_paths], train_ages)
    datasets = {
        name: make_dataset(
            cache.images,
            indices[name],
            labels[name],
            int(data_cfg.batch_size),
            shuffle_seed=seed if name == "train" else None,
            epoch=epoch,
            weights=weights if name == "train" else None,
        )
        for name in SPLITS
    }
    return Datasets(
        **datasets,
        splits=splits,
        class_names=class_names,
        image_size=int(data_cfg.image_size),
        report=report,
        cache=cache,
        indices=indices,
        digests=digests,
        epoch=epoch,
    )


def _check_split_honest(
    good: Sequence[Sample],
    splits: dict[str, list[Sample]],
    ratios: dict[str, float],
    class_names: Sequence[str],
    report: DataReport,
    test_given: bool,
) -> None:
    """Too little data to split honestly is an error, never a quiet "100% on 1 image": each class
    needs an image in every split it is split into, and a validation or test split of one class
    measures nothing about the other. A test split given as such (``data.test_dir``, a held-out
    kind) of one class is the user's choice: a loud warning, recorded with the run."""
    needed = [name for name in SPLITS if ratios.get(name, 0) > 0]
    counts = Counter(s.label for s in good)
    shown = "/".join(f"{ratios.get(n, 0):g}" for n in SPLITS)
    for label, name in enumerate(class_names):
        if counts[label] < len(needed):
            raise UserError(
                f"class {name} has {counts[label]} usable images, too few for data.split "
                f"{shown} (train/val/test), which needs at least {len(needed)} per class (one "
                f"per split) to measure anything: add images or change data.split"
            )
    for name in ("val", "test"):
        labels = {s.label for s in splits[name]}
        if not splits[name] or len(labels) > 1:
            continue
        only = class_names[labels.pop()]
        message = (
            f"the {name} split holds one class only ({len(splits[name])} images of "
            f"{only}): its accuracy says nothing about the other class"
        )
        if name == "test" and test_given:
            report.warnings.append(message)
            log.warning("%s", message)
            print(f"warning: {message}", file=sys.stderr, flush=True)
        else:
            raise UserError(
                f"{message} (exact duplicates stay together in one split); add images or change data.split"
            )


def _drop_label_conflicts(
    samples: list[Sample], digests: dict[str, str], class_names: Sequence[str], report: DataReport
) -> tuple[list[Sample], list[tuple[str, str]]]:
    """Exclude byte-identical files filed under both classes: no label can be right for both."""
    by_digest: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_digest[digests.get(s.path, s.path)].append(s)
    bad: set[str] = set()
    conflicts: list[tuple[str, str]] = []
    for members in by_digest.values():
        if len(members) > 1:
            report.duplicate_groups += 1
            report.duplicate_files += len(members) - 1
        labels = {m.label for m in members}
        if len(labels) > 1:
            names = "+".join(class_names[i] for i in sorted(labels))
            for m in members:
                bad.add(m.path)
                conflicts.append((m.path, names))
    return [s for s in samples if s.path not in bad], conflicts


#: the ``trainer.class_weight`` mode that needs the training images' ages (``gender.ages``)
BY_AGE = "balanced_per_kind_and_age"
#: the lower edges of the age bands ``BY_AGE`` balances the classes within
BAND_EDGES = (0, 20, 40, 60)
UNKNOWN_AGE = -1  # no estimate (see ``gender.ages``): band "unknown"


def age_band(age: int) -> str:
    """ "0-19", "20-39", "40-59", "60+" (``BAND_EDGES``), or "unknown"."""
    if age < 0:
        return "unknown"
    lower = max(e for e in BAND_EDGES if e <= age)
    following = [e for e in BAND_EDGES if e > lower]
    return f"{lower}-{following[0] - 1}" if following else f"{lower}+"


#: the most one image may weigh against the average (mean 1): a cell of a few images in a large
#: group would otherwise dominate its batches
MAX_WEIGHT = 10.0


def sample_weights(
    mode: str | None, labels: np.ndarray, kinds: Sequence[str], ages: np.ndarray | None = None
) -> np.ndarray | None:
    """Per-image loss weights (mean 1) for ``trainer.class_weight``, or None.

    ``balanced``: each class weighs the same in the loss, whatever its share of the training
    images. ``balanced_per_kind``: the same within each kind of image (``image_kinds``), each kind
    keeping its share. A source that is mostly one class (the genderface photos are 78% men) then
    cannot teach "looks like that source" as a cue for the class. ``balanced_per_kind_and_age``:
    the same within each kind and estimated age band (``ages``, see ``gender.ages``), so "looks
    old" cannot teach "man" either. No image weighs more than ``MAX_WEIGHT`` times the mean.
    Keras' ``class_weight`` cannot weigh by group, so all modes are per-image weights the
    pipeline yields."""
    check_choice("trainer.class_weight", mode)
    if mode is None or not len(labels):
        return None
    if mode == "balanced":
        groups = [""] * len(labels)
    elif mode == "balanced_per_kind":
        groups = list(kinds)
    else:
        if ages is None:
            raise UserError(f"trainer.class_weight={mode} needs the estimated ages of the training images")
        groups = [f"{k}, age {age_band(int(a))}" for k, a in zip(kinds, ages, strict=True)]
    pairs = list(zip(groups, labels.tolist(), strict=True))
    cells, per_group = Counter(pairs), Counter(groups)
    classes = Counter(g for g, _ in cells)
    weight = {(g, y): per_group[g] / (classes[g] * n) for (g, y), n in cells.items()}
    weights = np.array([weight[p] for p in pairs], dtype=np.float64)
    for _ in range(20):  # clipping lowers the mean; renormalising may lift others past the cap
        weights = np.minimum(weights / weights.mean(), MAX_WEIGHT)
    weights /= weights.mean()
    first = {p: i for i, p in enumerate(pairs)}
    for (g, y), n in sorted(cells.items()):
        log.info("loss weight of %s class %d (%d images): %.3f", g or "all", int(y), n, weights[first[g, y]])
    return weights.astype(np.float32)


def make_dataset(
    images: np.ndarray,
    indices: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    shuffle_seed: int | None = None,
    epoch=None,
    weights: np.ndarray | None = None,
):
    """Batches of (uint8 images or float32 descriptors, float32 labels[, float32 loss weights])
    gathered from the decoded cache.

    Shuffling indices (not pixels) is free; one numpy gather per batch replaces per-image
    decode + resize, and parallel calls keep it behind the training step. The training order is a
    pure function of (seed, ``epoch``), a variable the trainer sets at each epoch start, so a run
    resumed at epoch k sees exactly the batches an uninterrupted run would.
    """
    import tensorflow as tf

    shape, dtype = tuple(images.shape[1:]), images.dtype

    def gather(idx: np.ndarray, lbl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(idx)  # sorted reads are faster on a memory map
        out = np.empty((len(idx), *shape), dtype=dtype)
        out[order] = images[idx[order]]
        return out, lbl

    columns = (indices, labels) if weights is None else (indices, labels, weights.astype(np.float32))
    if shuffle_seed is None:
        ds = tf.data.Dataset.from_tensor_slices(columns)
    else:
        tensors = [tf.constant(c) for c in columns]

        def epoch_order(_):
            seed = tf.stack([tf.constant(shuffle_seed, tf.int64), tf.cast(epoch.read_value(), tf.int64)])
            perm = tf.random.experimental.stateless_shuffle(tf.range(len(indices), dtype=tf.int64), seed)
            return tf.data.Dataset.from_tensor_slices(tuple(tf.gather(t, perm) for t in tensors))

        ds = tf.data.Dataset.from_tensors(0).flat_map(epoch_order)
        ds = ds.apply(tf.data.experimental.assert_cardinality(len(indices)))
    ds = ds.batch(batch_size)

    def load(idx, lbl, *weight):
        x, y = tf.numpy_function(gather, [idx, lbl], [tf.as_dtype(dtype), tf.float32], stateful=False)
        x.set_shape([None, *shape])
        y.set_shape([None])
        return (x, y, *weight)

    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)


def with_augmentation(ds, augment, parallel: bool = True, mixup=None):
    """Augment training batches in tf.data calls that overlap the training step, then prefetch.

    ``mixup`` (``augmentation.build_mixup``) then blends each batch with a shuffled copy of itself.
    ``parallel=False`` (deterministic runs) keeps the random layers' draws in a fixed order.
    """
    import tensorflow as tf

    calls = tf.data.AUTOTUNE if parallel else None
    if augment is not None:
        ds = ds.map(
            lambda x, *rest: (augment(tf.cast(x, tf.float32), training=True), *rest), num_parallel_calls=calls
        )
    if mixup is not None:
        ds = ds.map(lambda x, y, *w: _mix(mixup, x, y, *w), num_parallel_calls=calls)
    return ds.prefetch(tf.data.AUTOTUNE)


def _mix(mixup, x, y, *weight):
    """Keras' MixUp blends labels, not per-image loss weights: the weights travel as a second
    label column, so a blended image weighs what its two sources weigh, blended alike."""
    import tensorflow as tf

    out = mixup({"images": x, "labels": tf.stack([y, *weight], axis=-1)}, training=True)
    mixed = out["labels"]
    return (out["images"], mixed[:, 0], *([mixed[:, 1]] if weight else []))


def write_data_report(report: DataReport, run_dir: str | os.PathLike) -> None:
    """Bad and conflicting files, one per line, so nothing is dropped without a record."""
    rows: Iterable[tuple[str, str]] = [
        *report.bad,
        *((p, f"conflicting label: {c}") for p, c in report.conflicts),
    ]
    write_csv(rows, ["path", "reason"], Path(run_dir) / "skipped_files.csv")
