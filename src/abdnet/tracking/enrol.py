"""Tracked identities into the persistent gallery (``abdnet track --gallery``).

Each crop the pipeline embedded is enrolled with the embedding it already has (no second
embedding pass) through the gallery's enrol path (:func:`abdnet.gallery.enrol_embedded`,
which refuses a gallery of another model), with:

- ``camera``: the gallery numbers cameras from 1. When every camera name ends in a number
  and these numbers differ (``cam1``, ``cam2``, ``c7``), that number; otherwise the camera's
  position in the ``--camera`` list (1, 2, ...). :func:`camera_numbers` gives the mapping,
  ``identities.json`` records it.
- ``timestamp``: the camera's start time plus the crop's time on its clock, when the camera
  has a start time; otherwise none (the frame alone says when).
- ``frame``: the crop's frame number (MOTChallenge, from 1).
- ``label``: ``PREFIX/ID``, the identity of its tracklet under a prefix unique to the run
  (:func:`default_label_prefix`), so that identity 3 of one run and of another stay apart.

The crop is stored as PNG: its bytes decode to the very pixels that were embedded, so a
search with a stored crop finds itself at distance 0. A crop already in the gallery (the
same bytes) keeps its entry and label. Crops smaller than ``min_side`` pixels are not
enrolled and are listed in the report.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from abdnet.gallery import (
    DEFAULT_MIN_SIDE,
    LABEL_MAX,
    Enrolment,
    EnrolReport,
    Gallery,
    ImageTooSmall,
    ModelInfo,
    decode_crop,
    enrol_embedded,
)
from abdnet.tracking.pipeline import CameraTracks, Identities

__all__ = [
    "camera_numbers",
    "default_label_prefix",
    "identity_enrolments",
    "enrol_identities",
]

_TRAILING_NUMBER = re.compile(r"(\d+)$")


def camera_numbers(names: Sequence[str]) -> dict[str, int]:
    """Gallery camera number (from 1) of each camera name: the number a name ends in when
    all names end in distinct numbers >= 1, else the position in ``names`` (from 1)."""
    found = [_TRAILING_NUMBER.search(n) for n in names]
    numbers = [int(m.group(1)) if m else 0 for m in found]
    if all(m is not None for m in found) and min(numbers, default=1) >= 1:
        if len(set(numbers)) == len(numbers):
            return dict(zip(names, numbers))
    return {n: i + 1 for i, n in enumerate(names)}


def default_label_prefix(out: str | Path, now: datetime | None = None) -> str:
    """``OUTNAME@YYYYmmddTHHMMSSZ``: the output folder's name and the run's start (UTC)."""
    now = now or datetime.now(timezone.utc)
    return f"{Path(out).name}@{now.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}"


def check_label_prefix(prefix: str, identities: int, option: str = "--label-prefix") -> None:
    """ValueError naming ``option`` when ``PREFIX/ID`` labels would not fit the gallery."""
    longest = len(f"{prefix}/{max(identities, 1)}".encode())
    if not prefix or longest > LABEL_MAX:
        raise ValueError(
            f"{option} {prefix!r}: labels PREFIX/ID must be 1..{LABEL_MAX} bytes, "
            f"these would be up to {longest}"
        )


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def identity_enrolments(
    cameras: Sequence[CameraTracks],
    identities: Identities,
    *,
    label_prefix: str,
    numbers: dict[str, int] | None = None,
    min_side: int = DEFAULT_MIN_SIDE,
) -> tuple[list[tuple[Enrolment, np.ndarray]], list[tuple[str, str]]]:
    """``(enrolment, embedding)`` of every embedded crop of every identified tracklet, and
    ``(crop name, reason)`` of those too small to enrol."""
    numbers = numbers or camera_numbers([c.camera.name for c in cameras])
    items: list[tuple[Enrolment, np.ndarray]] = []
    refused: list[tuple[str, str]] = []
    for cam in cameras:
        start = cam.camera.start
        if start is not None and start.tzinfo is None:
            start = start.replace(tzinfo=timezone.utc)
        for t in cam.tracklets:
            pid = identities.labels.get(t.key)
            if pid is None:
                continue
            for c in t.crops:
                if c.embedding is None or c.image is None or not c.image.size:
                    continue
                name = f"{label_prefix}/{cam.camera.name}/{c.frame:06d}-{t.track}.png"
                try:
                    crop = decode_crop(_png(c.image), name, min_side=min_side)
                except ImageTooSmall as exc:
                    refused.append((name, str(exc)))
                    continue
                when = None
                if start is not None:
                    seconds = float(t.times[int(np.searchsorted(t.frames, c.frame))])
                    when = start + timedelta(seconds=seconds)
                enrolment = Enrolment(
                    crop=crop,
                    camera=numbers[cam.camera.name],
                    timestamp=when,
                    frame=int(c.frame),
                    label=f"{label_prefix}/{pid}",
                )
                items.append((enrolment, c.embedding))
    return items, refused


def enrol_identities(
    gallery: Gallery,
    cameras: Sequence[CameraTracks],
    identities: Identities,
    *,
    model: ModelInfo,
    label_prefix: str,
    numbers: dict[str, int] | None = None,
    min_side: int = DEFAULT_MIN_SIDE,
    progress: Callable[[int], None] | None = None,
) -> EnrolReport:
    """Enrol the embedded crops of every identity into ``gallery`` (see the module
    docstring); ``model`` made the embeddings. Crops refused as too small are in the
    report's ``failed``."""
    check_label_prefix(label_prefix, max(identities.labels.values(), default=1))
    items, refused = identity_enrolments(
        cameras, identities, label_prefix=label_prefix, numbers=numbers, min_side=min_side
    )
    report = enrol_embedded(gallery, items, model=model, progress=progress)
    report.failed.extend(refused)
    if progress is not None and refused:
        progress(len(refused))  # the bar counts every embedded crop
    return report
