"""Crop decoding: accepted types, pixel limits, corrupt data; errors name the crop."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from abdnet.gallery import ImageTooLarge, UnsupportedImageType, decode_crop, read_crop
from abdnet.retrieval import ImageReadError


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize(
    "fmt, ext", [("JPEG", "jpg"), ("PNG", "png"), ("BMP", "bmp"), ("WEBP", "webp"), ("GIF", "gif")]
)
def test_accepted_formats_decode_to_rgb(fmt, ext):
    img = Image.new("RGB", (8, 16), (200, 10, 30))
    data = _encode(img if fmt != "GIF" else img.convert("P"), fmt)
    crop = decode_crop(data, "a." + ext)
    assert crop.extension == ext and crop.image.mode == "RGB" and crop.image.size == (8, 16)
    assert crop.sha256 == hashlib.sha256(data).hexdigest() and crop.data == data


def test_grey_and_alpha_images_become_rgb():
    for mode in ("L", "RGBA", "LA"):
        crop = decode_crop(_encode(Image.new(mode, (8, 8)), "PNG"), "x.png")
        assert crop.image.mode == "RGB"


def test_other_image_types_are_refused_by_type():
    data = _encode(Image.new("RGB", (16, 16)), "ICO")
    with pytest.raises(UnsupportedImageType, match=r"x\.ico: image type ICO is not accepted"):
        decode_crop(data, "x.ico")


def test_decompression_bomb_refused_before_decoding():
    # 10000 x 10000 1-bit PNG: a few KB of data, 100 M pixels (over the 16.7 M default)
    data = _encode(Image.new("1", (10000, 10000)), "PNG")
    assert len(data) < 100_000
    with pytest.raises(ImageTooLarge, match=r"bomb\.png: image too large: 10000x10000"):
        decode_crop(data, "bomb.png")
    with pytest.raises(ImageTooLarge, match="limit is 100"):
        decode_crop(_encode(Image.new("RGB", (20, 20)), "PNG"), "a.png", max_pixels=100)


def test_corrupt_and_empty_data_are_unreadable_not_a_type_error():
    good = _encode(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    for data, name in [(good[: len(good) // 2], "cut.jpg"), (b"hello", "t.jpg"), (b"", "e.jpg")]:
        with pytest.raises(ImageReadError, match=name) as info:
            decode_crop(data, name)
        assert not isinstance(info.value, (UnsupportedImageType, ImageTooLarge))


def test_read_crop_names_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        read_crop(tmp_path / "nope.jpg")


def test_images_below_the_minimum_side_are_refused_naming_file_and_size():
    from abdnet.gallery import DEFAULT_MIN_SIDE, ImageTooSmall

    with pytest.raises(ImageTooSmall, match=r"dot\.png: image too small .*: 1x1 pixels"):
        decode_crop(_encode(Image.new("RGB", (1, 1)), "PNG"), "dot.png")
    side = DEFAULT_MIN_SIDE
    decode_crop(_encode(Image.new("RGB", (side, side)), "PNG"), "ok.png")  # at the minimum
    with pytest.raises(ImageTooSmall, match=rf"{side}x{side - 1} pixels, the minimum is {side}"):
        decode_crop(_encode(Image.new("RGB", (side, side - 1)), "PNG"), "low.png")
    tiny = decode_crop(_encode(Image.new("RGB", (1, 1)), "PNG"), "dot.png", min_side=1)
    assert tiny.image.size == (1, 1)
