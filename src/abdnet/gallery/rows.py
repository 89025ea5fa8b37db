"""Between abdnet's gallery records and Milvus rows: an enrolment to the row written, a
search result to a :class:`Hit`, the checks on what comes in (ids, enrolments, embeddings)
and the filter expression of a listing.

The row's fields are those of :mod:`abdnet.gallery.collection`; unknown values are stored
as the sentinels of :mod:`abdnet.gallery.records` (``NO_CAMERA``, ``NO_TIME``, ``NO_FRAME``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from abdnet.engine import EmbeddingSpace
from abdnet.gallery.records import (
    FIRST_CAMERA,
    ID_LENGTH,
    LABEL_MAX,
    NO_CAMERA,
    NO_FRAME,
    NO_TIME,
    SOURCE_MAX,
    Enrolment,
    GalleryEntry,
    Hit,
    quote,
    to_ms,
)

__all__ = [
    "check_enrolment",
    "check_features",
    "enrolment_row",
    "hit_from_search",
    "id_filter",
    "label_filter",
    "list_filter",
    "valid_id",
]


def valid_id(i: str) -> bool:
    """Whether ``i`` has the form of a gallery id (16 lower-case hex digits)."""
    return len(i) == ID_LENGTH and all(c in "0123456789abcdef" for c in i)


def id_filter(ids: list[str]) -> str:
    """The Milvus expression selecting the rows of ``ids``."""
    return f"id in [{', '.join(quote(i) for i in ids)}]"


def label_filter(labels: list[str], also: str = "") -> str:
    """The Milvus expression selecting the rows of ``labels`` (and ``also``, when given)."""
    expr = f"label in [{', '.join(quote(x) for x in labels)}]"
    return f"{expr} and {also}" if also else expr


def list_filter(camera: int | None, label: str | None) -> str:
    """The Milvus expression of a count or listing by camera and label ("" for all)."""
    parts = []
    if camera is not None:
        parts.append(f"camera == {int(camera)}")
    if label is not None:
        parts.append(f"label == {quote(label)}")
    return " and ".join(parts)


def check_enrolment(e: Enrolment) -> None:
    """ValueError naming the crop when its label, camera or frame cannot be stored."""
    if e.label is not None and len(e.label.encode()) > LABEL_MAX:
        raise ValueError(f"{e.crop.name}: label longer than {LABEL_MAX} bytes")
    if e.camera is not None and e.camera < FIRST_CAMERA:
        raise ValueError(
            f"{e.crop.name}: camera must be >= {FIRST_CAMERA} (cameras are numbered from "
            f"{FIRST_CAMERA}, as c1 in Market-1501 names), got {e.camera}"
        )
    if e.frame is not None and e.frame < 0:
        raise ValueError(f"{e.crop.name}: frame must be >= 0, got {e.frame}")


def check_features(features: Any, dim: int, uri: str) -> np.ndarray:
    """``features`` (an array or a tensor) as finite float32 ``(N, dim)``; ValueError else."""
    if hasattr(features, "detach"):
        features = features.detach().cpu().numpy()
    q = np.asarray(features, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"gallery {uri} holds {dim}-d embeddings, got shape {q.shape}")
    if not np.isfinite(q).all():
        raise ValueError("embeddings contain NaN or infinity")
    return q


def enrolment_row(i: str, e: Enrolment, f: np.ndarray, now: int) -> dict[str, Any]:
    """The row of enrolment ``e`` with id ``i``, embedding ``f``, enrolled at ``now`` (ms)."""
    source = e.crop.name
    if len(source.encode()) > SOURCE_MAX:  # keep the end: the file name
        source = source.encode()[-SOURCE_MAX:].decode(errors="ignore")
    return {
        "id": i,
        "embedding": f.tolist(),
        "camera": NO_CAMERA if e.camera is None else int(e.camera),
        "timestamp": NO_TIME if e.timestamp is None else to_ms(e.timestamp),
        "frame": NO_FRAME if e.frame is None else int(e.frame),
        "label": e.label or "",
        "sha256": e.crop.sha256,
        "extension": e.crop.extension,
        "source": source,
        "enrolled": now,
    }


def hit_from_search(h: Any, space: EmbeddingSpace) -> Hit:
    """One Milvus search result as a :class:`Hit` in the space's distance and score."""
    entity = dict(h["entity"])
    entity["id"] = h["id"]
    value = float(h["distance"])  # what Milvus computed in the space's metric
    return Hit(
        entry=GalleryEntry.from_row(entity),
        distance=float(space.distance_from_search(value, space.milvus_metric)),
        score=float(space.score_from_search(value, space.milvus_metric)),
    )
