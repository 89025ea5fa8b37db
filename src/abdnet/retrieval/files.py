"""Image lists for extraction and search: folders expanded, Market-style labels parsed."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "collect_images", "parse_labels"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# Market-1501 "0002_c1s1_000451_03.jpg" and DukeMTMC-reID "0001_c2_f0046182.jpg" both start
# with "<pid>_c<camera>"; cameras are numbered from 1 in the names, from 0 in abdnet.
_LABELLED_NAME = re.compile(r"^(-?\d+)_c(\d+)")


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
        m = _LABELLED_NAME.match(Path(p).name)
        if m is None:
            return None
        pids.append(int(m.group(1)))
        camids.append(int(m.group(2)) - 1)
    return np.asarray(pids, dtype=np.int64), np.asarray(camids, dtype=np.int64)
