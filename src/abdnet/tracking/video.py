"""Frames of one camera, streamed: a MOTChallenge image sequence or a video file (PyAV).

Both give :class:`Frame` objects (1-based frame number, seconds since the first frame, an
``(H, W, 3)`` uint8 RGB array) one at a time; nothing holds the whole video. Unreadable or
truncated input raises a one-line ``ValueError`` naming the file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from abdnet.tracking.mot import SEQINFO, SequenceInfo, error_text, read_seqinfo

__all__ = [
    "Frame",
    "FrameSource",
    "ImageSequence",
    "VideoFile",
    "open_source",
    "VIDEO_SUFFIXES",
]

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")


@dataclass
class Frame:
    index: int  # 1-based frame number (MOTChallenge)
    time: float  # seconds since the first frame
    image: np.ndarray  # (H, W, 3) uint8 RGB


class FrameSource(Protocol):
    """A camera's frames: ``info`` (size, rate, length when known) and iteration."""

    info: SequenceInfo
    path: Path

    def __iter__(self) -> Iterator[Frame]: ...


class ImageSequence:
    """A MOTChallenge sequence folder: ``seqinfo.ini`` and ``img1/NNNNNN.jpg``.

    Frame ``k`` is ``img1/{k:06d}{imExt}``. A missing frame is skipped with a counted
    warning (``missing``); an unreadable one raises.
    """

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder)
        self.info = read_seqinfo(self.path / SEQINFO)
        self.image_dir = self.path / self.info.image_dir
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"{self.path}: no image folder {self.info.image_dir}/")
        self.missing: list[int] = []

    def __iter__(self) -> Iterator[Frame]:
        self.missing = []
        for k in range(1, self.info.length + 1):
            f = self.image_dir / f"{k:06d}{self.info.image_ext}"
            if not f.is_file():
                self.missing.append(k)
                continue
            try:
                with Image.open(f) as im:
                    image = np.asarray(im.convert("RGB"))
            except (OSError, UnidentifiedImageError) as exc:
                raise ValueError(f"{f}: unreadable image: {error_text(exc)}") from None
            if image.shape[:2] != (self.info.height, self.info.width):
                raise ValueError(
                    f"{f}: {image.shape[1]}x{image.shape[0]} px, but {SEQINFO} says "
                    f"{self.info.width}x{self.info.height}"
                )
            yield Frame(k, (k - 1) / self.info.frame_rate, image)
        if self.missing:
            log.warning(
                "%s: %d of %d frames missing (first: %d); their detections are not tracked",
                self.image_dir,
                len(self.missing),
                self.info.length,
                self.missing[0],
            )


class VideoFile:
    """A video file decoded by PyAV (any container and codec FFmpeg reads).

    Frame numbers count decoded frames from 1; times come from the stream's timestamps
    (relative to the first frame). A file PyAV cannot open, or whose stream stops with a
    decoding error, raises ``ValueError`` naming it; one that ends early (fewer frames than
    the container declares) logs a counted warning.
    """

    def __init__(self, path: str | Path) -> None:
        import av

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such file")
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise ValueError(f"{self.path}: no video stream")
                s = container.streams.video[0]
                rate = float(s.average_rate or s.guessed_rate or 0) or 25.0
                self.info = SequenceInfo(
                    name=self.path.stem,
                    frame_rate=rate,
                    length=int(s.frames or 0),
                    width=int(s.codec_context.width),
                    height=int(s.codec_context.height),
                )
        except av.error.FFmpegError as exc:
            raise ValueError(f"{self.path}: not a readable video: {error_text(exc)}") from None
        self.decoded = 0

    def __iter__(self) -> Iterator[Frame]:
        import av

        self.decoded = 0
        first: float | None = None
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for vf in container.decode(stream):
                    t = (
                        float(vf.time)
                        if vf.time is not None
                        else self.decoded / self.info.frame_rate
                    )
                    first = t if first is None else first
                    self.decoded += 1
                    yield Frame(self.decoded, t - first, vf.to_ndarray(format="rgb24"))
        except av.error.FFmpegError as exc:
            raise ValueError(
                f"{self.path}: video damaged or truncated after frame {self.decoded}: "
                f"{error_text(exc)}"
            ) from None
        if self.decoded == 0:
            raise ValueError(f"{self.path}: no frame could be decoded (truncated or empty video)")
        if self.info.length and self.decoded < self.info.length:
            log.warning(
                "%s: the container declares %d frames, only %d decoded (truncated?)",
                self.path,
                self.info.length,
                self.decoded,
            )


def open_source(path: str | Path) -> ImageSequence | VideoFile:
    """A MOTChallenge sequence folder or a video file at ``path``."""
    p = Path(path)
    if p.is_dir():
        if not (p / SEQINFO).is_file():
            raise ValueError(f"{p}: a folder without {SEQINFO} (not a MOTChallenge sequence)")
        return ImageSequence(p)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    return VideoFile(p)
