"""Transforms: shapes, normalization against a hand computation, flip, random erasing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from abdnet.config import DataConfig
from abdnet.data import RandomErasing, build_test_transform, build_train_transform

CFG = DataConfig(height=32, width=16)


def gradient_image(w=10, h=20) -> Image.Image:
    a = np.zeros((h, w, 3), dtype=np.uint8)
    a[..., 0] = np.arange(w)[None, :] * 20
    a[..., 1] = np.arange(h)[:, None] * 10
    a[..., 2] = 77
    return Image.fromarray(a)


def test_test_transform_shape_and_normalization():
    out = build_test_transform(CFG)(Image.new("RGB", (7, 9), (255, 128, 0)))
    assert out.shape == (3, 32, 16) and out.dtype == torch.float32
    mean, std = torch.tensor(CFG.mean), torch.tensor(CFG.std)
    expected = (torch.tensor([255, 128, 0]) / 255.0 - mean) / std
    torch.testing.assert_close(out, expected[:, None, None].expand(3, 32, 16), atol=1e-5, rtol=0)


def test_train_transform_without_randomness_equals_test_transform():
    cfg = DataConfig(height=32, width=16, flip_p=0.0, erasing_p=0.0, translate_p=0.0)
    img = gradient_image()
    torch.testing.assert_close(build_train_transform(cfg)(img), build_test_transform(cfg)(img))


def test_flip_with_p1_mirrors():
    cfg = DataConfig(height=32, width=16, flip_p=1.0, erasing_p=0.0)
    img = gradient_image()
    torch.testing.assert_close(
        build_train_transform(cfg)(img), build_test_transform(cfg)(img).flip(-1)
    )


def test_translate_is_a_crop_of_the_enlarged_image():
    cfg = DataConfig(height=32, width=16, flip_p=0.0, erasing_p=0.0, translate_p=1.0)
    img = gradient_image()
    torch.manual_seed(0)
    out = build_train_transform(cfg)(img)
    big = build_test_transform(DataConfig(height=36, width=18))(img)  # 32*1.125, 16*1.125
    windows = [big[:, y : y + 32, x : x + 16] for y in range(5) for x in range(3)]
    assert out.shape == (3, 32, 16)
    assert min(float((out - w).abs().max()) for w in windows) < 0.05


def test_full_train_transform_shape_and_colour_jitter():
    cfg = DataConfig(height=32, width=16, translate_p=0.5, color_jitter=True)
    t = build_train_transform(cfg)
    for _ in range(5):
        assert t(gradient_image()).shape == (3, 32, 16)


def test_random_erasing_rectangle_area_and_fill():
    erase = RandomErasing(p=1.0)
    img = torch.full((3, 40, 20), 5.0)
    torch.manual_seed(0)
    for _ in range(50):
        out = erase(img)
        zero = (out == 0).all(0)
        ys, xs = torch.nonzero(zero, as_tuple=True)
        assert len(ys) > 0
        h, w = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
        assert zero.sum() == h * w  # one filled rectangle
        assert 0.02 * 800 * 0.5 <= h * w <= 0.4 * 800 * 1.3  # area bounds (rounding slack)
        assert 0.3 / 1.5 <= h / w <= 3.33 * 1.5
        assert (out[:, ~zero] == 5.0).all()  # the rest untouched
    assert torch.equal(RandomErasing(p=0.0)(img), img)
    noisy = RandomErasing(p=1.0, fill="random")(img)
    assert (noisy != 5.0).any()
    with pytest.raises(ValueError, match="fill"):
        RandomErasing(fill="zeros")


def test_bad_probability_named():
    with pytest.raises(ValueError, match=r"data.erasing_p"):
        build_train_transform(DataConfig(erasing_p=1.5))
