"""The gallery's records: entries, enrolments, search filters and hits, and their values.

Cameras are numbered from 1, as people count them and as Market-1501 / DukeMTMC-reID file
names write them (``c1`` is camera 1), everywhere the gallery, the CLI, the HTTP API and the
web page take or show one. Times are real capture times: timezone-aware UTC ``datetime``s
here and ISO 8601 strings in JSON (``format_time``); Milvus stores them as ms since
1970-01-01 UTC. A frame number (a position in a video, as a file name may carry it) is a
frame, never turned into a time. Unknown cameras, times and frames are stored as sentinels
(``NO_CAMERA``, ``NO_TIME``, ``NO_FRAME``) and read back as None.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from abdnet.gallery.images import CropImage

__all__ = [
    "ID_LENGTH",
    "LABEL_MAX",
    "FIRST_CAMERA",
    "NO_CAMERA",
    "NO_FRAME",
    "NO_TIME",
    "SOURCE_MAX",
    "Added",
    "Enrolment",
    "GalleryEntry",
    "Hit",
    "Page",
    "SearchFilter",
    "format_time",
    "from_ms",
    "parse_time",
    "quote",
    "to_ms",
]

FIRST_CAMERA = 1  # cameras are numbered 1, 2, ... (c1, c2, ... in Market/Duke names)
NO_CAMERA = -1
NO_FRAME = -1
# "No time": far below any real time, and a literal every Milvus filter parser reads (the
# C++ parser of Milvus 2.x misreads -2**63, whose magnitude overflows before the sign).
NO_TIME = -(2**62)
LABEL_MAX = 256  # bytes
SOURCE_MAX = 512  # bytes
ID_LENGTH = 16  # hex digits of the sha256


# ---------------------------------------------------------------------------------------
# values


def parse_time(text: str, what: str = "time") -> datetime:
    """An ISO 8601 date/time; without a UTC offset it is taken as UTC."""
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        t = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(
            f"{what}: {text!r} is not an ISO 8601 date/time (e.g. 2024-05-01T12:30:00Z)"
        ) from None
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def format_time(t: datetime | None) -> str | None:
    """ISO 8601 in UTC with millisecond precision, ``Z`` suffix; None stays None."""
    if t is None:
        return None
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_ms(t: datetime) -> int:
    return int(round(t.timestamp() * 1000))


def from_ms(ms: int) -> datetime | None:
    if ms == NO_TIME:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def quote(text: str) -> str:
    """A Milvus filter string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------------------------------------
# records


@dataclass(frozen=True)
class GalleryEntry:
    id: str
    camera: int | None  # from 1 (FIRST_CAMERA)
    timestamp: datetime | None  # capture time
    frame: int | None  # frame number in its video
    label: str | None
    sha256: str
    extension: str
    source: str
    enrolled: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "camera": self.camera,
            "timestamp": format_time(self.timestamp),
            "frame": self.frame,
            "label": self.label,
            "sha256": self.sha256,
            "source": self.source,
            "enrolled": format_time(self.enrolled),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> GalleryEntry:
        camera, frame = int(row["camera"]), int(row["frame"])
        return cls(
            id=str(row["id"]),
            camera=None if camera == NO_CAMERA else camera,
            timestamp=from_ms(int(row["timestamp"])),
            frame=None if frame == NO_FRAME else frame,
            label=str(row["label"]) or None,
            sha256=str(row["sha256"]),
            extension=str(row["extension"]),
            source=str(row["source"]),
            enrolled=from_ms(int(row["enrolled"])),
        )


@dataclass(frozen=True)
class Enrolment:
    """A crop to add, with what is known about it."""

    crop: CropImage
    camera: int | None = None  # from 1 (FIRST_CAMERA)
    timestamp: datetime | None = None  # capture time
    frame: int | None = None  # frame number in its video
    label: str | None = None


@dataclass(frozen=True)
class Added:
    id: str
    created: bool  # False: the crop was already enrolled (nothing changed)


@dataclass(frozen=True)
class SearchFilter:
    """Which gallery entries a query may return."""

    exclude_camera: int | None = None  # leave out this camera (the query's own)
    after: datetime | None = None  # captured at or after (entries without a time drop out)
    before: datetime | None = None  # captured at or before
    label: str | None = None  # only entries with this label

    def expression(self) -> str:
        parts = []
        if self.exclude_camera is not None:
            parts.append(f"camera != {int(self.exclude_camera)}")
        if self.after is not None or self.before is not None:
            parts.append(f"timestamp > {NO_TIME}")
        if self.after is not None:
            parts.append(f"timestamp >= {to_ms(self.after)}")
        if self.before is not None:
            parts.append(f"timestamp <= {to_ms(self.before)}")
        if self.label is not None:
            parts.append(f"label == {quote(self.label)}")
        return " and ".join(parts)


@dataclass(frozen=True)
class Hit:
    entry: GalleryEntry
    distance: float  # squared Euclidean of the L2-normalized embeddings, in [0, 4]
    score: float  # cosine similarity, in [-1, 1]


@dataclass(frozen=True)
class Page:
    total: int  # entries matching the filter
    items: list[GalleryEntry]
