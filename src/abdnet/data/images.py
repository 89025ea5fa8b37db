"""Reading person crops: one function for every input abdnet accepts, the cheap check of an
image file a data set runs when it is loaded, and the suffixes that mark images (the
Market/Duke file names: ``abdnet.data.names``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_UPSCALE",
    "ImageCheck",
    "ImageInput",
    "ImageReadError",
    "check_image_file",
    "read_image",
    "upscale_warning",
]

# Suffixes that mark image files when a folder is scanned.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# One image: a file path, a PIL image or an (H, W, 3) uint8 array.
ImageInput = str | Path | Image.Image | np.ndarray


# An image that the transform must enlarge more than this many times in height or width to
# reach the network's input size carries too little of a person to be worth a feature: such
# images get a warning naming them (a Market-1501 crop at the paper's 384x128 is enlarged
# 3x / 2x; a 1x1 image 384x / 128x).
MAX_UPSCALE = 4.0

# Bytes read from the end of a file to find its end marker.
_TAIL = 1024


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


@dataclass(frozen=True)
class ImageCheck:
    """What :func:`check_image_file` found: ``problem`` is None for a readable image."""

    path: str
    problem: str | None
    size: tuple[int, int] | None = None  # (width, height) from the header


def check_image_file(path: str | Path) -> ImageCheck:
    """Cheaply check that ``path`` holds a complete image, without decoding its pixels.

    Reads the header (format and size) and the last kilobyte: a JPEG must end with its EOI
    marker and a PNG with its IEND chunk, which finds missing, zero-byte, garbage and
    truncated files (the defects copies cut short leave) at a small cost per file. A file
    whose end marker is missing is decoded in full before it is reported, so a valid file
    with bytes after its end marker is still accepted. Other formats get the header check.
    ``problem`` is a short phrase ("file not found", "empty file (0 bytes)", "not an
    image", "truncated or corrupt: ...").
    """
    name = str(path)
    try:
        size = os.path.getsize(path)
        if size == 0:
            return ImageCheck(name, "empty file (0 bytes)")
        with open(path, "rb") as f:
            with Image.open(f) as img:
                fmt, dims = img.format, img.size
            if dims[0] < 1 or dims[1] < 1:
                return ImageCheck(name, f"image of {dims[0]}x{dims[1]} pixels")
            marker = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}.get(fmt or "")
            if marker is not None:
                f.seek(max(0, size - _TAIL))
                if marker not in f.read():
                    f.seek(0)
                    with Image.open(f) as img:
                        img.load()  # raises if the data is really cut short
    except FileNotFoundError:
        return ImageCheck(name, "file not found")
    except IsADirectoryError:
        return ImageCheck(name, "a folder, not an image")
    except Image.UnidentifiedImageError:
        return ImageCheck(name, "not an image")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return ImageCheck(name, f"truncated or corrupt: {exc}")
    return ImageCheck(name, None, dims)


def upscale_warning(name: str, size: tuple[int, int], input_size: tuple[int, int]) -> str | None:
    """A warning naming ``name`` when its ``(width, height)`` must be enlarged more than
    :data:`MAX_UPSCALE` times to reach ``input_size`` ``(height, width)``, else None."""
    (w, h), (in_h, in_w) = size, input_size
    if in_h > MAX_UPSCALE * h or in_w > MAX_UPSCALE * w:
        return (
            f"{name}: image of {w}x{h} pixels is enlarged more than {MAX_UPSCALE:g}x to the "
            f"input size {in_w}x{in_h}; its features carry little detail"
        )
    return None
