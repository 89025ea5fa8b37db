"""Image transforms: PIL image -> normalized ``(3, H, W)`` float tensor.

Training (section 4.2 of the paper): resize to ``height x width``, optional random 2D
translation (the official code: resize x1.125 then a random crop, with probability
``translate_p``), random horizontal flip, optional colour jitter, normalization, random
erasing (Zhong et al., ref. [52]). Test: resize + normalization only. Optional (off by
default): one of torchvision's augmentation policies after the flip (``auto_augment``).

Two more colour augmentations, off by default, for cameras whose colour rendering differs
(white balance, saturation): per-channel gains (``channel_gain``) and random grey images
(``grayscale_p``, which makes the network use shape and texture as well as colour). Both act
on the ``[0, 1]`` float image, after the colour jitter and before normalization.
"""

from __future__ import annotations

import math

import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.transforms import v2

from abdnet.config import DataConfig

__all__ = [
    "RandomChannelGain",
    "RandomErasing",
    "RandomTranslate",
    "auto_augment_policy",
    "build_train_transform",
    "build_test_transform",
]


class RandomErasing(nn.Module):
    """Random erasing (Zhong et al. 2017, ref. [52], Algorithm 1) on a normalized tensor.

    With probability ``p`` a rectangle of area ``S_e`` ~ U(``area``) x image area and aspect
    ``r_e`` ~ U(``aspect``) is placed at a uniformly random position where it fits (up to
    100 tries) and filled with ``fill``: "mean" writes 0, i.e. the normalization mean (the
    ImageNet mean pixel once normalized), "random" writes N(0, 1) noise.
    """

    def __init__(
        self,
        p: float = 0.5,
        area: tuple[float, float] = (0.02, 0.4),
        aspect: tuple[float, float] = (0.3, 1 / 0.3),
        fill: str = "mean",
    ) -> None:
        super().__init__()
        if fill not in ("mean", "random"):
            raise ValueError(f"RandomErasing fill: expected 'mean' or 'random', got {fill!r}")
        self.p, self.area, self.aspect, self.fill = p, area, aspect, fill

    def forward(self, img: Tensor) -> Tensor:  # (C, H, W)
        if self.p <= 0 or torch.rand(()).item() >= self.p:
            return img
        _, h, w = img.shape
        for _ in range(100):
            target = (self.area[0] + (self.area[1] - self.area[0]) * torch.rand(()).item()) * h * w
            ratio = self.aspect[0] + (self.aspect[1] - self.aspect[0]) * torch.rand(()).item()
            eh, ew = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
            if 0 < eh < h and 0 < ew < w:
                y = int(torch.randint(0, h - eh + 1, ()).item())
                x = int(torch.randint(0, w - ew + 1, ()).item())
                img = img.clone()
                if self.fill == "mean":
                    img[:, y : y + eh, x : x + ew] = 0.0
                else:
                    img[:, y : y + eh, x : x + ew] = torch.randn(
                        img.shape[0], eh, ew, dtype=img.dtype
                    )
                return img
        return img


class RandomTranslate(nn.Module):
    """With probability ``p``: resize to ``1.125 x (height, width)`` and crop a random
    ``height x width`` window (the official code's Random2DTranslation); else plain resize."""

    def __init__(self, height: int, width: int, p: float = 0.5, factor: float = 1.125) -> None:
        super().__init__()
        self.height, self.width, self.p = height, width, p
        self.big = (int(round(height * factor)), int(round(width * factor)))

    def forward(self, img: Image.Image) -> Image.Image:
        if self.p <= 0 or torch.rand(()).item() >= self.p:
            return img.resize((self.width, self.height), Image.BILINEAR)
        big = img.resize((self.big[1], self.big[0]), Image.BILINEAR)
        y = int(torch.randint(0, self.big[0] - self.height + 1, ()).item())
        x = int(torch.randint(0, self.big[1] - self.width + 1, ()).item())
        return big.crop((x, y, x + self.width, y + self.height))


class RandomChannelGain(nn.Module):
    """Multiply each colour channel by its own gain ~ U(1 - ``gain``, 1 + ``gain``), clip to
    [0, 1]: a camera with another white balance. Brightness or saturation jitter scales all
    channels alike and cannot produce such a colour cast."""

    def __init__(self, gain: float) -> None:
        super().__init__()
        if not 0.0 <= gain < 1.0:
            raise ValueError(f"data.channel_gain: expected 0 <= gain < 1, got {gain}")
        self.gain = gain

    def forward(self, img: Tensor) -> Tensor:  # (C, H, W), values in [0, 1]
        if self.gain <= 0:
            return img
        gains = 1.0 + self.gain * (2.0 * torch.rand(img.shape[0], 1, 1) - 1.0)  # (C, 1, 1)
        return (img * gains.to(img.dtype)).clamp_(0.0, 1.0)


def _check(cfg: DataConfig) -> None:
    if cfg.height < 1 or cfg.width < 1:
        raise ValueError(f"data.height/data.width: must be positive, got {cfg.height}x{cfg.width}")
    if len(cfg.mean) != 3 or len(cfg.std) != 3:
        raise ValueError(f"data.mean/data.std: expected 3 values each, got {cfg.mean} / {cfg.std}")
    for key in ("flip_p", "erasing_p", "translate_p", "grayscale_p"):
        value = getattr(cfg, key)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"data.{key}: must be a probability in [0, 1], got {value}")
    strength = cfg.color_jitter_strength
    if len(strength) != 4 or min(strength) < 0 or strength[3] > 0.5:
        raise ValueError(
            "data.color_jitter_strength: expected 4 values >= 0 (brightness, contrast, "
            f"saturation, hue <= 0.5), got {list(strength)}"
        )


def _to_tensor() -> list[nn.Module]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]  # (3, H, W) in [0, 1]


def _normalize(cfg: DataConfig) -> nn.Module:
    return v2.Normalize(list(cfg.mean), list(cfg.std))


def auto_augment_policy(name: str) -> nn.Module:
    """torchvision's policy ``data.auto_augment`` names (on the uint8 PIL image): AutoAugment
    with its ImageNet policy (Cubuk et al., CVPR 2019), RandAugment (Cubuk et al., CVPRW
    2020), TrivialAugmentWide (Mueller and Hutter, ICCV 2021) or AugMix (Hendrycks et al.,
    ICLR 2020), each with torchvision's defaults."""
    policies = {
        "autoaugment": lambda: v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET),
        "randaugment": v2.RandAugment,
        "trivialaugment": v2.TrivialAugmentWide,
        "augmix": v2.AugMix,
    }
    if name not in policies:
        raise ValueError(f"data.auto_augment: unknown policy {name!r}; expected {sorted(policies)}")
    return policies[name]()


def build_train_transform(cfg: DataConfig) -> v2.Compose:
    """Training augmentation of ``cfg`` (see the module docstring); PIL -> ``(3, H, W)``."""
    _check(cfg)
    steps: list[nn.Module] = []
    if cfg.translate_p > 0:
        steps.append(RandomTranslate(cfg.height, cfg.width, cfg.translate_p))
    else:
        steps.append(v2.Resize((cfg.height, cfg.width), antialias=True))
    if cfg.flip_p > 0:
        steps.append(v2.RandomHorizontalFlip(cfg.flip_p))
    if cfg.auto_augment != "none":
        steps.append(auto_augment_policy(cfg.auto_augment))
    if cfg.color_jitter:
        brightness, contrast, saturation, hue = cfg.color_jitter_strength
        steps.append(v2.ColorJitter(brightness, contrast, saturation, hue))
    steps += _to_tensor()
    if cfg.channel_gain > 0:
        steps.append(RandomChannelGain(cfg.channel_gain))
    if cfg.grayscale_p > 0:
        steps.append(v2.RandomGrayscale(cfg.grayscale_p))
    steps.append(_normalize(cfg))
    if cfg.erasing_p > 0:
        steps.append(RandomErasing(cfg.erasing_p))
    return v2.Compose(steps)


def build_test_transform(cfg: DataConfig) -> v2.Compose:
    """Resize to ``cfg.height x cfg.width`` and normalize; PIL -> ``(3, H, W)``."""
    _check(cfg)
    return v2.Compose(
        [v2.Resize((cfg.height, cfg.width), antialias=True), *_to_tensor(), _normalize(cfg)]
    )
