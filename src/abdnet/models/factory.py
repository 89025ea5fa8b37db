"""From configs to networks: the one place that reads ``ModelConfig``.

The architectures take typed arguments and do not import each other; this module maps a
preset or a ``ModelConfig`` onto them and checks what only the combination can tell (the
O.F. positions against the maps the network has).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from abdnet.config import ConfigError, ModelConfig, model_config
from abdnet.models.abdnet import ABDNet
from abdnet.models.official import OfficialABDNet

__all__ = ["build_model", "build_model_from_config", "official_model_config"]


def build_model_from_config(cfg: ModelConfig, num_classes: int) -> ABDNet | OfficialABDNet:
    """``arch="abd"`` -> :class:`ABDNet`, ``arch="official"`` -> :class:`OfficialABDNet`."""
    common: dict[str, Any] = dict(
        backbone=cfg.backbone,
        pretrained=cfg.pretrained,
        last_stride=cfg.last_stride,
        shallow_cam=cfg.shallow_cam,
        cam=cfg.cam,
        pam=cfg.pam,
        pam_reduction=cfg.pam_reduction,
        dropout=cfg.dropout,
        global_dim=cfg.global_dim,
        reduction_dim=cfg.reduction_dim,
        ow_scope=cfg.ow_scope,
    )
    if cfg.arch == "abd":
        model: ABDNet | OfficialABDNet = ABDNet(
            num_classes, svd_layer=cfg.svd_layer, attentive_dim=cfg.attentive_dim, **common
        )
    else:
        if cfg.svd_layer:
            raise ConfigError(
                "model.svd_layer: not available for arch 'official' (use arch 'abd')",
                "model.svd_layer",
            )
        if cfg.attentive_dim != cfg.reduction_dim:
            raise ConfigError(
                f"model.attentive_dim ({cfg.attentive_dim}) must equal model.reduction_dim "
                f"({cfg.reduction_dim}) for arch 'official': its stripe vectors are pooled "
                "reduction maps",
                "model.attentive_dim",
            )
        model = OfficialABDNet(num_classes, **common)
    available = model.of_positions_available
    for pos in cfg.of_positions:
        if pos not in available:
            raise ConfigError(
                f"model.of_positions: {pos!r} is not a map of this network (arch {cfg.arch!r}, "
                f"cam={cfg.cam}, pam={cfg.pam}); available: {list(available)}",
                "model.of_positions",
            )
    return model


def _pretrained_str(pretrained: bool | str | Path | None) -> str:
    if pretrained is True:
        return "imagenet"
    if pretrained is False or pretrained is None:
        return "none"
    if isinstance(pretrained, (str, Path)):
        return str(pretrained)
    raise ValueError(
        f"pretrained: expected a bool, 'none', 'imagenet' or a path, got {pretrained!r}"
    )


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
        preset, backbone=backbone, pretrained=_pretrained_str(pretrained), **overrides
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
