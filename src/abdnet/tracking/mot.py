"""MOTChallenge text formats: ``seqinfo.ini``, detection / ground-truth rows, tracker results.

A sequence folder holds ``seqinfo.ini`` (``[Sequence]`` with ``name``, ``imDir``,
``frameRate``, ``seqLength``, ``imWidth``, ``imHeight``, ``imExt``), the frames
``img1/000001.jpg`` ... and detections ``det/det.txt``. Rows are comma-separated,
``frame,id,x,y,w,h,conf,...`` with 1-based frames, boxes in pixels (left, top, width,
height); detections carry id -1, results ``frame,id,x,y,w,h,conf,-1,-1,-1``. Every parse
error names the file and the line.
"""

from __future__ import annotations

import configparser
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from abdnet.files import atomic_write

__all__ = [
    "SequenceInfo",
    "MotRows",
    "ClipReport",
    "read_seqinfo",
    "write_seqinfo",
    "read_mot",
    "write_mot",
    "clip_rows",
    "confidences_in_unit_range",
]

log = logging.getLogger(__name__)

SEQINFO = "seqinfo.ini"
_FIELDS = ("frame", "id", "x", "y", "w", "h", "conf")


@dataclass(frozen=True)
class SequenceInfo:
    """The ``[Sequence]`` section of ``seqinfo.ini``."""

    name: str
    frame_rate: float
    length: int  # number of frames
    width: int
    height: int
    image_dir: str = "img1"
    image_ext: str = ".jpg"


def read_seqinfo(path: str | Path) -> SequenceInfo:
    """Parse ``seqinfo.ini`` (the file, or the sequence folder holding it)."""
    p = Path(path)
    if p.is_dir():
        p = p / SEQINFO
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    parser = configparser.ConfigParser()
    try:
        parser.read_string(p.read_text(encoding="utf-8"), source=str(p))
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: not an ini file: {error_text(exc)}") from None
    if "Sequence" not in parser:
        raise ValueError(f"{p}: no [Sequence] section")
    s = parser["Sequence"]

    def number(key: str, kind: type, default: object = None):
        if key not in s:
            if default is not None:
                return default
            raise ValueError(f"{p}: [Sequence] has no {key}")
        try:
            value = kind(float(s[key])) if kind is int else kind(s[key])
        except ValueError:
            raise ValueError(f"{p}: [Sequence] {key} = {s[key]!r} is not a number") from None
        if value <= 0:
            raise ValueError(f"{p}: [Sequence] {key} must be > 0, got {s[key]}")
        return value

    ext = s.get("imExt", ".jpg")
    return SequenceInfo(
        name=s.get("name", p.parent.name),
        frame_rate=number("frameRate", float),
        length=number("seqLength", int),
        width=number("imWidth", int),
        height=number("imHeight", int),
        image_dir=s.get("imDir", "img1"),
        image_ext=ext if ext.startswith(".") else f".{ext}",
    )


def error_text(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def write_seqinfo(path: str | Path, info: SequenceInfo) -> Path:
    """Write ``seqinfo.ini`` (``path`` the file or its folder) atomically."""
    p = Path(path)
    if p.is_dir():
        p = p / SEQINFO
    rate = f"{info.frame_rate:g}"
    text = (
        "[Sequence]\n"
        f"name={info.name}\nimDir={info.image_dir}\nframeRate={rate}\n"
        f"seqLength={info.length}\nimWidth={info.width}\nimHeight={info.height}\n"
        f"imExt={info.image_ext}\n"
    )
    return atomic_write(p, text)


@dataclass
class MotRows:
    """The rows of one MOTChallenge file, as arrays (row order kept).

    ``boxes`` are ``(N, 4)`` float64 ``x, y, w, h``; ``ids`` -1 for detections; ``scores``
    the confidence column (1.0 when absent); ``lines`` the 1-based line of each row.
    """

    frames: np.ndarray  # (N,) int64, 1-based
    ids: np.ndarray  # (N,) int64
    boxes: np.ndarray  # (N, 4) float64
    scores: np.ndarray  # (N,) float64
    lines: np.ndarray  # (N,) int64
    path: str = ""

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @classmethod
    def empty(cls, path: str = "") -> MotRows:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z.copy(), np.zeros((0, 4)), np.zeros(0), z.copy(), path)

    @classmethod
    def from_arrays(
        cls,
        *,
        frames: np.ndarray,
        ids: np.ndarray,
        boxes: np.ndarray,
        scores: np.ndarray | None = None,
        path: str = "",
    ) -> MotRows:
        frames = np.asarray(frames, dtype=np.int64).reshape(-1)
        n = frames.shape[0]
        return cls(
            frames,
            np.asarray(ids, dtype=np.int64).reshape(n),
            np.asarray(boxes, dtype=np.float64).reshape(n, 4),
            np.ones(n) if scores is None else np.asarray(scores, dtype=np.float64).reshape(n),
            np.arange(1, n + 1, dtype=np.int64),
            path,
        )

    def select(self, mask: np.ndarray) -> MotRows:
        return MotRows(
            self.frames[mask],
            self.ids[mask],
            self.boxes[mask],
            self.scores[mask],
            self.lines[mask],
            self.path,
        )

    def by_frame(self) -> dict[int, np.ndarray]:
        """Frame number -> indices of its rows (in row order)."""
        order = np.argsort(self.frames, kind="stable")
        frames = self.frames[order]
        starts = np.flatnonzero(np.r_[True, frames[1:] != frames[:-1]]) if len(frames) else []
        out: dict[int, np.ndarray] = {}
        for i, s in enumerate(starts):
            e = starts[i + 1] if i + 1 < len(starts) else len(frames)
            out[int(frames[s])] = order[s:e]
        return out


def read_mot(path: str | Path) -> MotRows:
    """Rows of a MOTChallenge ``det.txt`` / ``gt.txt`` / result file.

    Each non-blank line needs at least ``frame,id,x,y,w,h``; a 7th column is the
    confidence. A malformed row raises ``ValueError("FILE:LINE: ...")``. An empty file is
    valid (no rows).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    frames: list[int] = []
    ids: list[int] = []
    boxes: list[tuple[float, float, float, float]] = []
    scores: list[float] = []
    lines: list[int] = []
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{p}: not a text file") from None
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [f.strip() for f in line.replace(";", ",").split(",")]
        if len(parts) == 1:
            parts = line.split()
        if len(parts) < 6:
            raise ValueError(
                f"{p}:{n}: expected at least 6 comma-separated values "
                f"(frame,id,x,y,w,h[,conf,...]), got {len(parts)}: {line[:80]!r}"
            )
        values: list[float] = []
        for i, name in enumerate(_FIELDS[: min(len(parts), 7)]):
            try:
                v = float(parts[i])
            except ValueError:
                raise ValueError(f"{p}:{n}: {name} {parts[i]!r} is not a number") from None
            if not np.isfinite(v):
                raise ValueError(f"{p}:{n}: {name} {parts[i]!r} is not finite")
            values.append(v)
        frame = values[0]
        if frame != int(frame) or frame < 1:
            raise ValueError(f"{p}:{n}: frame {parts[0]!r} must be an integer >= 1")
        if values[1] != int(values[1]):
            raise ValueError(f"{p}:{n}: id {parts[1]!r} must be an integer")
        if values[4] <= 0 or values[5] <= 0:
            raise ValueError(f"{p}:{n}: box width and height must be > 0, got {values[4:6]}")
        frames.append(int(frame))
        ids.append(int(values[1]))
        boxes.append((values[2], values[3], values[4], values[5]))
        scores.append(values[6] if len(values) > 6 else 1.0)
        lines.append(n)
    if not frames:
        return MotRows.empty(str(p))
    return MotRows(
        np.asarray(frames, dtype=np.int64),
        np.asarray(ids, dtype=np.int64),
        np.asarray(boxes, dtype=np.float64),
        np.asarray(scores, dtype=np.float64),
        np.asarray(lines, dtype=np.int64),
        str(p),
    )


def write_mot(path: str | Path, rows: MotRows) -> Path:
    """Write ``rows`` as MOTChallenge results (``frame,id,x,y,w,h,conf,-1,-1,-1``), sorted
    by frame then id, atomically."""
    order = np.lexsort((rows.ids, rows.frames))
    out = []
    for i in order:
        x, y, w, h = rows.boxes[i]
        out.append(
            f"{rows.frames[i]},{rows.ids[i]},{x:.2f},{y:.2f},{w:.2f},{h:.2f},"
            f"{rows.scores[i]:.4g},-1,-1,-1\n"
        )
    return atomic_write(path, "".join(out))


@dataclass(frozen=True)
class ClipReport:
    """What :func:`clip_rows` changed: rows clipped to the frame and rows dropped (wholly
    outside it or under ``min_size`` pixels after clipping), with the first such line."""

    clipped: int = 0
    dropped: int = 0
    first_line: int = 0

    def message(self, path: str) -> str:
        return (
            f"{path}: {self.clipped} box(es) clipped to the frame, {self.dropped} dropped "
            f"(outside the frame or smaller than 2 px), first at line {self.first_line}"
        )


def clip_rows(
    rows: MotRows, *, width: int, height: int, min_size: float = 2.0
) -> tuple[MotRows, ClipReport]:
    """Boxes clipped to the ``width x height`` frame; boxes left smaller than ``min_size``
    pixels on a side are dropped. Both are counted in the report (callers warn with it)."""
    if not len(rows):
        return rows, ClipReport()
    x0, y0 = rows.boxes[:, 0], rows.boxes[:, 1]
    x1, y1 = x0 + rows.boxes[:, 2], y0 + rows.boxes[:, 3]
    cx0, cy0 = np.clip(x0, 0, width), np.clip(y0, 0, height)
    cx1, cy1 = np.clip(x1, 0, width), np.clip(y1, 0, height)
    changed = (cx0 != x0) | (cy0 != y0) | (cx1 != x1) | (cy1 != y1)
    keep = ((cx1 - cx0) >= min_size) & ((cy1 - cy0) >= min_size)
    boxes = np.stack([cx0, cy0, cx1 - cx0, cy1 - cy0], axis=1)
    out = MotRows(rows.frames, rows.ids, boxes, rows.scores, rows.lines, rows.path).select(keep)
    bad = changed | ~keep
    report = ClipReport(
        clipped=int((changed & keep).sum()),
        dropped=int((~keep).sum()),
        first_line=int(rows.lines[bad][0]) if bad.any() else 0,
    )
    return out, report


def confidences_in_unit_range(rows: MotRows) -> tuple[MotRows, str]:
    """Detection confidences on the [0, 1] scale the trackers and the crop choice read, and
    what was changed (empty when nothing was). A file whose rows all carry one value outside
    (0, 1] (``-1`` or ``0``: no score given) is taken as all 1; scores on another scale
    (some detectors' raw margins, negative or above 1) are mapped linearly onto [0, 1],
    keeping their order. Scores already in [0, 1] are kept as they are."""
    if not len(rows):
        return rows, ""
    s = rows.scores
    lo, hi = float(s.min()), float(s.max())
    if lo == hi:
        if 0.0 < lo <= 1.0:
            return rows, ""
        scores = np.ones_like(s)
        note = f"every detection has confidence {lo:g}: taken as 1"
    elif lo >= 0.0 and hi <= 1.0:
        return rows, ""
    else:
        scores = (s - lo) / (hi - lo)
        note = f"confidences span [{lo:g}, {hi:g}], outside [0, 1]: mapped linearly onto [0, 1]"
    return MotRows(rows.frames, rows.ids, rows.boxes, scores, rows.lines, rows.path), note
