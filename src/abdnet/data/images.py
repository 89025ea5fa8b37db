"""Reading person crops: one function for every input abdnet accepts, and the file names
and suffixes that mark images."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["IMAGE_EXTENSIONS", "ImageInput", "ImageReadError", "read_image", "parse_reid_name"]

# Suffixes that mark image files when a folder is scanned.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# One image: a file path, a PIL image or an (H, W, 3) uint8 array.
ImageInput = str | Path | Image.Image | np.ndarray

# Market-1501 "0002_c1s1_000451_03.jpg" and DukeMTMC-reID "0001_c2_f0046182.jpg" both start
# with "<pid>_c<camera>"; cameras are numbered from 1 in the names, from 0 in abdnet.
_REID_NAME = re.compile(r"^(-?\d+)_c(\d+)")


class ImageReadError(ValueError):
    """An input image cannot be read or is not an RGB image; the message names it."""


def read_image(item: ImageInput) -> Image.Image:
    """An RGB PIL image from a path, a PIL image or an (H, W, 3) uint8 array.

    The pixels are decoded here, so a truncated or corrupt file fails now, with
    :class:`ImageReadError` (a ``ValueError``) naming the path or input at fault.
    """
    if isinstance(item, (str, Path)):
        path = Path(item)
        if not path.is_file():
            raise ImageReadError(f"image not found: {path}")
        try:
            with Image.open(path) as img:
                return img.convert("RGB")  # convert() decodes: errors surface here
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageReadError(f"{path}: cannot read image: {exc}") from None
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, np.ndarray):
        if item.ndim != 3 or item.shape[2] != 3 or item.dtype != np.uint8:
            raise ImageReadError(
                f"numpy image: expected an (H, W, 3) uint8 array, got shape {item.shape} "
                f"dtype {item.dtype}"
            )
        return Image.fromarray(item, mode="RGB")
    raise ImageReadError(
        f"unsupported image input of type {type(item).__name__}: expected a path, a PIL "
        f"image or an (H, W, 3) uint8 numpy array"
    )


def parse_reid_name(name: str | Path) -> tuple[int, int] | None:
    """``(pid, camid)`` (camid 0-based) from a Market-1501 / DukeMTMC-reID file name, else None."""
    m = _REID_NAME.match(Path(name).name)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)) - 1
