"""Image files are checked when a data set is loaded: every unreadable file named in one
error (or left out with skip_bad), tiny images named in a warning."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from abdnet.config import DataConfig, SyntheticConfig
from abdnet.data import (
    DatasetError,
    build_dataset,
    check_image_file,
    parse_market1501,
    read_image,
    upscale_warning,
    write_synthetic,
)


def _photo(path: Path) -> Path:
    arr = np.random.default_rng(0).integers(0, 255, (128, 64, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)  # format from the suffix
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    good_jpg = _photo(tmp_path / "good.jpg")
    good_png = _photo(tmp_path / "good.png")
    data = good_jpg.read_bytes()
    out = {"good_jpg": good_jpg, "good_png": good_png}
    out["empty"] = tmp_path / "empty.jpg"
    out["empty"].write_bytes(b"")
    out["garbage"] = tmp_path / "garbage.jpg"
    out["garbage"].write_bytes(b"this is not an image at all" * 10)
    out["cut_jpg"] = tmp_path / "cut.jpg"
    out["cut_jpg"].write_bytes(data[: len(data) // 2])
    out["cut_png"] = tmp_path / "cut.png"
    out["cut_png"].write_bytes(good_png.read_bytes()[:-300])
    out["trailing"] = tmp_path / "trailing.jpg"  # valid JPEG + bytes after its end marker
    out["trailing"].write_bytes(data + b"\0" * 4000)
    return out


def test_check_image_file_finds_what_decoding_would(files: dict[str, Path]) -> None:
    expected = {
        "good_jpg": None,
        "good_png": None,
        "trailing": None,
        "empty": "empty file (0 bytes)",
        "garbage": "not an image",
        "cut_jpg": "truncated or corrupt",
        "cut_png": "truncated or corrupt",
    }
    for key, problem in expected.items():
        got = check_image_file(files[key])
        # the independent reference: a full decode fails exactly on the reported files
        try:
            read_image(files[key])
            decodes = True
        except ValueError:
            decodes = False
        assert decodes == (got.problem is None), key
        if problem is None:
            assert got.problem is None and got.size == (64, 128), key
        else:
            assert got.problem.startswith(problem), (key, got.problem)
    assert check_image_file(files["good_jpg"].parent / "none.jpg").problem == "file not found"


def test_upscale_warning_threshold() -> None:
    assert upscale_warning("a.jpg", (64, 128), (384, 128)) is None  # Market crop: 3x / 2x
    msg = upscale_warning("tiny.jpg", (1, 1), (384, 128))
    assert msg is not None and msg.startswith("tiny.jpg: image of 1x1 pixels")
    assert upscale_warning("flat.jpg", (64, 20), (384, 128)) is not None  # 19x in height


def _market(root: Path) -> Path:
    write_synthetic(root, SyntheticConfig(ids=8, cams=2, per_id=4, height=64, width=32))
    return root


def test_every_bad_file_named_in_one_error_or_skipped(tmp_path: Path) -> None:
    root = _market(tmp_path / "m")
    train = sorted((root / "bounding_box_train").iterdir())
    query = sorted((root / "query").iterdir())
    train[0].write_bytes(b"")
    train[1].write_bytes(train[1].read_bytes()[:100])
    query[0].write_bytes(b"GIF89a garbage")
    with pytest.raises(DatasetError) as err:
        parse_market1501(root)
    message = str(err.value)
    assert "3 of " in message and "data.skip_bad: true" in message
    for bad in (train[0], train[1], query[0]):
        assert str(bad) in message
    assert f"empty file (0 bytes): {train[0]}" in message

    ds = parse_market1501(root, skip_bad=True)
    assert sorted(p for p, _ in ds.skipped) == sorted(
        str(p) for p in (train[0], train[1], query[0])
    )
    kept = {r.path for r in ds.train + ds.query + ds.gallery}
    assert not kept & {str(train[0]), str(train[1]), str(query[0])}
    assert len(ds.train) == len(train) - 2
    assert "3 unreadable images left out" in ds.summary()
    # through the config, as training loads it
    cfg = DataConfig(name="auto", root=str(root), height=64, width=32, skip_bad=True)
    assert len(build_dataset(cfg).skipped) == 3
    with pytest.raises(DatasetError, match="skip_bad"):
        build_dataset(DataConfig(name="auto", root=str(root), height=64, width=32))


def test_tiny_gallery_image_gets_a_warning_naming_it(tmp_path: Path, caplog) -> None:
    root = _market(tmp_path / "m")
    tiny = sorted((root / "bounding_box_test").iterdir())[0]
    Image.new("RGB", (1, 1), (9, 9, 9)).save(tiny)
    with caplog.at_level(logging.WARNING):
        build_dataset(DataConfig(name="auto", root=str(root), height=64, width=32))
    warned = [r.getMessage() for r in caplog.records if "smaller than" in r.getMessage()]
    assert len(warned) == 1 and str(tiny) in warned[0] and "1x1" in warned[0]
    assert "1 images" in warned[0]  # the 64x32 synthetic crops at a 64x32 input are fine
