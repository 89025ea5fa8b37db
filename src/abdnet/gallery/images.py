"""Crop images as the gallery receives them: bytes, their sha256, a checked decode.

The bytes are kept as they came (the crop store serves exactly what was enrolled); the
sha256 of the bytes identifies the crop. Decoding refuses what a public endpoint must refuse:
formats other than common image types, images with more pixels than a limit (decompression
bombs: the header is read and checked before any pixel is decoded), images narrower or lower
than a minimum side (a 1x1 image is no person), and unreadable data. Every error names the
crop and its size where it is at fault.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from abdnet.retrieval import ImageReadError, read_image

__all__ = [
    "IMAGE_FORMATS",
    "MIME_TYPES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_SIDE",
    "CropImage",
    "ImageTooLarge",
    "ImageTooSmall",
    "UnsupportedImageType",
    "decode_crop",
    "read_crop",
    "sha256_hex",
]

# PIL format -> (file extension in the crop store, MIME type served).
IMAGE_FORMATS: dict[str, tuple[str, str]] = {
    "JPEG": ("jpg", "image/jpeg"),
    "MPO": ("jpg", "image/jpeg"),  # multi-picture JPEG written by cameras and phones
    "PNG": ("png", "image/png"),
    "BMP": ("bmp", "image/bmp"),
    "WEBP": ("webp", "image/webp"),
    "GIF": ("gif", "image/gif"),
    "TIFF": ("tif", "image/tiff"),
}
# MIME type of each stored extension.
MIME_TYPES: dict[str, str] = {ext: mime for ext, mime in IMAGE_FORMATS.values()}

# Person crops are small; 16.7 M pixels (4096 x 4096) leaves room for whole frames.
DEFAULT_MAX_PIXELS = 4096 * 4096
# A crop must be at least this many pixels wide and high (Market-1501 crops are 64 x 128).
DEFAULT_MIN_SIDE = 8


class UnsupportedImageType(ImageReadError):
    """The data is not an image of an accepted format; the message names the crop."""


class ImageTooLarge(ImageReadError):
    """The image has more pixels than allowed (a decompression bomb, or a whole frame)."""


class ImageTooSmall(ImageReadError):
    """The image is narrower or lower than the minimum crop side (no person fits in it)."""


@dataclass(frozen=True)
class CropImage:
    """A decoded crop: the bytes as received, their sha256, the format and the RGB image."""

    data: bytes
    sha256: str  # hex digest of data
    extension: str  # "jpg", "png", ... (IMAGE_FORMATS)
    image: Image.Image  # RGB
    name: str  # where it came from (file path or upload name), for messages and records

    @property
    def mime_type(self) -> str:
        return MIME_TYPES[self.extension]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_crop(
    data: bytes,
    name: str,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
) -> CropImage:
    """Check and decode ``data``; raises ImageReadError (or a subclass) naming ``name``.

    ``max_pixels`` bounds width x height (:class:`ImageTooLarge`); ``min_side`` is the
    least width and height a crop may have (:class:`ImageTooSmall`; 1 accepts any image).
    """
    if not data:
        raise ImageReadError(f"{name}: empty file")
    try:
        with warnings.catch_warnings():
            # The pixel limit below replaces PIL's process-wide MAX_IMAGE_PIXELS warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{name}: image too large: {exc}") from None
    except (OSError, ValueError, SyntaxError):
        # PIL's message names its internal buffer, not the crop
        raise ImageReadError(
            f"{name}: cannot read the image: corrupt, or not in a known image format"
        ) from None
    with img:
        fmt = img.format or ""
        if fmt not in IMAGE_FORMATS:
            raise UnsupportedImageType(
                f"{name}: image type {fmt or 'unknown'} is not accepted; accepted: "
                f"{', '.join(sorted(IMAGE_FORMATS))}"
            )
        width, height = img.size
        if width < 1 or height < 1:
            raise ImageReadError(f"{name}: image has no pixels ({width}x{height})")
        if width < min_side or height < min_side:
            raise ImageTooSmall(
                f"{name}: image too small for a person crop: {width}x{height} pixels, the "
                f"minimum is {min_side} pixels wide and high"
            )
        if width * height > max_pixels:
            raise ImageTooLarge(
                f"{name}: image too large: {width}x{height} = {width * height} pixels, the "
                f"limit is {max_pixels}"
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                rgb = read_image(img)  # decodes every pixel: truncated data fails here
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageReadError(f"{name}: cannot decode {fmt} image: {exc}") from None
    return CropImage(
        data=data,
        sha256=sha256_hex(data),
        extension=IMAGE_FORMATS[fmt][0],
        image=rgb,
        name=name,
    )


def read_crop(
    path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = DEFAULT_MIN_SIDE
) -> CropImage:
    """:func:`decode_crop` of a file's bytes."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(f"image not found: {p}") from None
    except OSError as exc:
        raise ImageReadError(f"{p}: cannot read: {exc}") from None
    return decode_crop(data, str(p), max_pixels=max_pixels, min_side=min_side)
