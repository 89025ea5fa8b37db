"""Image lists for extraction and search: folders expanded, Market-style labels parsed."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from abdnet.data.images import IMAGE_EXTENSIONS
from abdnet.data.names import parse_name

__all__ = ["collect_images", "parse_labels"]


def collect_images(inputs: Iterable[str | Path]) -> list[str]:
    """Sorted, de-duplicated image paths, spelled as given.

    A folder contributes every file below it (recursively) whose suffix is in
    ``IMAGE_EXTENSIONS``; a folder with none is a ``ValueError`` naming it (asking for
    nothing is a mistake, not an empty answer). A file is taken as named, whatever its
    suffix (reading it reports it if it is not an image). A missing path is a
    ``FileNotFoundError`` naming it.
    """
    found: set[str] = set()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            images = [
                str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
            ]
            if not images:
                raise ValueError(
                    f"{item}: no image files in this folder (looked for "
                    f"{', '.join(IMAGE_EXTENSIONS)})"
                )
            found.update(images)
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
