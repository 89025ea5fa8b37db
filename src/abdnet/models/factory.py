"""From configs to networks.

``ModelConfig`` is the one constructor surface: both architectures take it whole and read
their options from it (they do not import each other). This module picks the architecture
and checks what only the combination can tell (fields the ``official`` network lacks, the
O.F. positions against the maps the network has).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from abdnet.config import ConfigError, ModelConfig, model_config
from abdnet.models.abdnet import ABDNet
from abdnet.models.backbones import pretrained_spec
from abdnet.models.official import OfficialABDNet

__all__ = ["build_model", "build_model_from_config", "official_model_config"]


# ModelConfig fields only the ``abd`` architecture reads, with the value that means "off"
_ABD_ONLY = {
    "svd_layer": False,
    "pooling": "avg",
    "bnneck": False,
    "id_head": "linear",
}


def build_model_from_config(cfg: ModelConfig, num_classes: int) -> ABDNet | OfficialABDNet:
    """``arch="abd"`` -> :class:`ABDNet`, ``arch="official"`` -> :class:`OfficialABDNet`;
    both read their options from ``cfg`` itself (the one constructor surface)."""
    if cfg.arch == "abd":
        model: ABDNet | OfficialABDNet = ABDNet(num_classes, cfg)
    else:
        for key, off in _ABD_ONLY.items():
            if getattr(cfg, key) != off:
                raise ConfigError(
                    f"model.{key}: not available for arch 'official' (use arch 'abd')",
                    f"model.{key}",
                )
        if cfg.attentive_dim != cfg.reduction_dim:
            raise ConfigError(
                f"model.attentive_dim ({cfg.attentive_dim}) must equal model.reduction_dim "
                f"({cfg.reduction_dim}) for arch 'official': its stripe vectors are pooled "
                "reduction maps",
                "model.attentive_dim",
            )
        model = OfficialABDNet(num_classes, cfg)
    available = model.of_positions_available
    for pos in cfg.of_positions:
        if pos not in available:
            raise ConfigError(
                f"model.of_positions: {pos!r} is not a map of this network (arch {cfg.arch!r}, "
                f"cam={cfg.cam}, pam={cfg.pam}); available: {list(available)}",
                "model.of_positions",
            )
    return model


def build_model(
    preset: str,
    num_classes: int,
    *,
    backbone: str = "resnet50",
    pretrained: bool | str | Path = False,
    **overrides: Any,
) -> nn.Module:
    """Build a preset ("paper", "official", "baseline") with ``ModelConfig`` overrides.

    ``pretrained``: False/"none", True/"imagenet" (torchvision weights API) or a path to a
    torchvision state dict. Unknown override names raise ``ConfigError``.
    """
    cfg = model_config(
        preset, backbone=backbone, pretrained=pretrained_spec(pretrained), **overrides
    )
    return build_model_from_config(cfg, num_classes)


def official_model_config(model: OfficialABDNet) -> ModelConfig:
    """The ``official`` preset as ``model`` was built (its attention modules switched on or
    off as a loaded checkpoint had them; O.F. only at positions the network has)."""
    base = model_config("official")
    return model_config(
        "official",
        shallow_cam=model.has_shallow_cam,
        cam=model.has_cam,
        pam=model.has_pam,
        of_positions=[p for p in base.of_positions if p in model.of_positions_available],
    )
