"""Transforms: shapes, normalization against a hand computation, flip, random erasing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from abdnet.config import ConfigError, DataConfig, config_from_dict
from abdnet.data import (
    RandomChannelGain,
    RandomErasing,
    build_test_transform,
    build_train_transform,
)

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


def _unnormalize(x: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    mean, std = torch.tensor(cfg.mean)[:, None, None], torch.tensor(cfg.std)[:, None, None]
    return x * std + mean  # back to [0, 1]


def test_grayscale_with_p1_gives_the_luma_of_the_plain_image():
    cfg = DataConfig(height=32, width=16, flip_p=0.0, erasing_p=0.0, grayscale_p=1.0)
    img = gradient_image()
    grey = _unnormalize(build_train_transform(cfg)(img), cfg)
    rgb = _unnormalize(build_test_transform(cfg)(img), cfg)
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]  # ITU-R BT.601
    for c in range(3):
        torch.testing.assert_close(grey[c], luma, atol=2e-3, rtol=0)


def test_channel_gain_scales_each_channel_by_one_factor_in_range():
    gain = RandomChannelGain(0.3)
    img = torch.rand(3, 20, 10) * 0.7 + 0.01  # room above: nothing clips at gain <= 1.3
    factors = []
    for seed in range(40):
        torch.manual_seed(seed)
        ratio = gain(img.clone()) / img  # (3, 20, 10)
        per_channel = ratio.flatten(1)
        torch.testing.assert_close(per_channel.min(1).values, per_channel.max(1).values)
        factors.append(per_channel[:, 0])
    factors = torch.stack(factors)  # (40, 3)
    assert factors.min() >= 0.7 - 1e-6 and factors.max() <= 1.3 + 1e-6
    assert factors.std(0).min() > 0.05  # the channels really vary, independently
    assert not torch.allclose(factors[:, 0], factors[:, 1])
    bright = gain(torch.ones(3, 4, 4))
    assert bright.max() <= 1.0  # clipped to the valid range
    assert torch.equal(RandomChannelGain(0.0)(img), img)
    with pytest.raises(ValueError, match="data.channel_gain"):
        RandomChannelGain(1.0)


def test_jitter_strength_and_new_probabilities_are_checked_by_name():
    with pytest.raises(ValueError, match=r"data.grayscale_p"):
        build_train_transform(DataConfig(grayscale_p=2.0))
    with pytest.raises(ValueError, match=r"data.color_jitter_strength"):
        build_train_transform(DataConfig(color_jitter_strength=(0.2, 0.1, 0.1)))
    with pytest.raises(ValueError, match=r"data.color_jitter_strength"):
        build_train_transform(DataConfig(color_jitter_strength=(0.2, 0.1, 0.1, 0.7)))
    for bad in ([0.2, 0.1, 0.1], [0.2, 0.1, 0.1, 0.7], [-0.1, 0.1, 0.1, 0.1]):
        with pytest.raises(ConfigError, match=r"data.color_jitter_strength"):
            config_from_dict({"data": {"color_jitter_strength": bad}})
    with pytest.raises(ConfigError, match=r"data.channel_gain"):
        config_from_dict({"data": {"channel_gain": 1.0}})
    cfg = DataConfig(
        height=32, width=16, color_jitter=True, color_jitter_strength=(0.4, 0.4, 0.4, 0.1),
        channel_gain=0.2, grayscale_p=0.5,
    )  # fmt: skip
    t = build_train_transform(cfg)
    outs = [t(gradient_image()) for _ in range(8)]
    assert all(o.shape == (3, 32, 16) for o in outs)
    assert len({round(float(o.sum()), 3) for o in outs}) > 1  # random
