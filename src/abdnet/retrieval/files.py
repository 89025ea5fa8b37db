"""Image lists for extraction and search: folders expanded, Market-style labels parsed."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "NameLabels", "collect_images", "parse_labels", "parse_name"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# Market-1501 "0002_c1s1_000451_03.jpg" and DukeMTMC-reID "0001_c2_f0046182.jpg" both start
# with "<pid>_c<camera>"; cameras are numbered from 1 in the names, from 0 in abdnet.
_LABELLED_NAME = re.compile(r"^(-?\d+)_c(\d+)")
# The frame number that follows: Market "_c1s1_000451_" (camera, sequence, frame), Duke
# "_c2_f0046182".
_FRAME = re.compile(r"^-?\d+_c\d+(?:s\d+_(\d+)_|_f(\d+))")


@dataclass(frozen=True)
class NameLabels:
    """What a Market/Duke-style file name says about the crop."""

    pid: int
    camid: int  # 0-based: the name's "c1" is camera 0
    frame: int | None  # video frame number, when the name carries one


def parse_name(path: str | Path) -> NameLabels | None:
    """pid, camera and frame of a Market/Duke-style file name; None for any other name."""
    name = Path(path).name
    m = _LABELLED_NAME.match(name)
    if m is None:
        return None
    f = _FRAME.match(name)
    frame = int(f.group(1) or f.group(2)) if f else None
    return NameLabels(pid=int(m.group(1)), camid=int(m.group(2)) - 1, frame=frame)


def collect_images(inputs: Iterable[str | Path]) -> list[str]:
    """Sorted, de-duplicated image paths, spelled as given.

    A folder contributes every file below it (recursively) whose suffix is in
    ``IMAGE_EXTENSIONS``; a file is taken as named, whatever its suffix (reading it reports
    it if it is not an image). A missing path is a ``FileNotFoundError`` naming it.
    """
    found: set[str] = set()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found.update(
                str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
            )
        elif p.is_file():
            found.add(str(item))
        else:
            raise FileNotFoundError(f"image or folder not found: {item}")
    return sorted(found)


def parse_labels(paths: Iterable[str | Path]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(pids, camids)`` int64 arrays when **every** file name is Market/Duke-style, else None.

    camids are 0-based (the name's ``c1`` is camera 0), as everywhere in abdnet.
    """
    pids, camids = [], []
    for p in paths:
        labels = parse_name(p)
        if labels is None:
            return None
        pids.append(labels.pid)
        camids.append(labels.camid)
    return np.asarray(pids, dtype=np.int64), np.asarray(camids, dtype=np.int64)
