"""A progress bar for long work that is not training (Keras shows its own): building the decode
cache, scoring a folder.

On a terminal the bar is drawn on stderr and removed when done (the log line that announced the
work stays); when stderr is not a terminal (logs, CI, tests) nothing is drawn. ``GENDER_PROGRESS=1``
or ``0`` forces it on or off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def enabled(stream: Any = None) -> bool:
    forced = os.environ.get("GENDER_PROGRESS", "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress(
    items: Iterable[T],
    *,
    total: int | None = None,
    desc: str | None = None,
    unit: str = "image",
    count: Callable[[T], int] | None = None,
) -> Iterator[T]:
    """Yield ``items`` unchanged while a bar counts them up to ``total``.

    ``count(item)`` says how many units one item stands for: a batch of images from
    ``gender.inference.decode_batches`` is ``count=lambda batch: len(batch[1])``.
    """
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    stream = sys.stderr
    if not enabled(stream):
        yield from items
        return
    from tqdm import tqdm

    with tqdm(
        total=total, desc=desc, unit=unit, file=stream, leave=False, dynamic_ncols=True, mininterval=0.2
    ) as bar:
        for item in items:
            yield item
            bar.update(count(item) if count else 1)
