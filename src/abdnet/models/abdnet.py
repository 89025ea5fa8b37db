"""ABD-Net as the paper describes it (sections 3 and 4.1): the ``abd`` architecture.

Also the model factory: ``build_model`` / ``build_model_from_config`` turn a preset or a
``ModelConfig`` into an ``abd`` or ``official`` network.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from abdnet.config import ModelConfig, model_config
from abdnet.models.attention import CAM, PAM
from abdnet.models.backbones import build_trunk
from abdnet.models.layers import TrunkParameterGroups, init_new_layers_, reduction_layer
from abdnet.models.output import ModelOutput
from abdnet.models.svd_layer import EigenLayer

__all__ = ["ABDNet", "OW_SCOPES", "build_model", "build_model_from_config", "check_common_config"]

OW_SCOPES = ("all", "stem", "none")
ABD_OF_POSITIONS = ("shallow", "reduction", "cam", "pam")


def check_common_config(cfg: ModelConfig, num_classes: int) -> None:
    """Checks shared by both architectures; errors name the config key."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes: expected a positive integer, got {num_classes!r}")
    if cfg.ow_scope not in OW_SCOPES:
        raise ValueError(f"model.ow_scope: expected one of {OW_SCOPES}, got {cfg.ow_scope!r}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"model.dropout: expected a probability in [0, 1), got {cfg.dropout!r}")
    for key in ("global_dim", "attentive_dim", "reduction_dim"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"model.{key}: expected a positive integer, got {getattr(cfg, key)!r}")


def check_of_positions(cfg: ModelConfig, known: tuple[str, ...], available: set[str]) -> None:
    """Every O.F. position must exist in this architecture and be switched on."""
    for pos in cfg.of_positions:
        if pos not in known:
            raise ValueError(
                f"model.of_positions: unknown position {pos!r} for arch {cfg.arch!r}; known: {list(known)}"
            )
        if pos not in available:
            raise ValueError(
                f"model.of_positions: position {pos!r} is disabled in this model "
                f"(model.{pos}=false); available: {sorted(available)}"
            )


class ABDNet(TrunkParameterGroups, nn.Module):
    """ABD-Net, sections 3 and 4.1 of the paper (``arch="abd"``; presets paper, baseline).

    trunk res_conv_1..2 -> shallow CAM (O.F. "shallow") -> res_conv_3..4 -> two branches,
    each with its own copy of res_conv_5 (stride ``last_stride``, paper 1):

    - global: GAP -> reduction layer (Linear C5->kg, BN, ReLU, dropout) -> kg-d vector.
    - attentive: Ta = conv1x1(C5->reduction_dim) + BN + ReLU (O.F. "reduction");
      CAM(Ta) (O.F. "cam") and PAM(Ta) (O.F. "pam"); concat [Ta, CAM(Ta), PAM(Ta)] on
      channels -> GAP -> reduction layer (Linear 3·reduction_dim->ka, BN, ReLU, dropout).
      The paper does not say how this concatenation becomes a ka-d vector. We pool first
      and then use a reduction layer: a Linear after GAP equals a 1x1 conv before GAP (both
      are linear, GAP commutes with them), it keeps all three components instead of summing
      them, and it mirrors the global branch (the footnote's "reduction layer").
      Disabled modules drop out of the concatenation.

    Embedding = concat(global, attentive), kg + ka = 2048-d for the paper. Each branch
    vector has its own classifier. The triplet loss uses the embedding (one feature).
    ``svd_layer=True`` (Table 1 g): a bias-free ``EigenLayer`` maps the embedding to the
    returned embedding, followed by one classifier (SVDNet's layout); see ``svd_layer.py``.

    CAM/PAM use the paper's variant (softmax over the energy, eq. 1; PAM projections with
    conv+BN+ReLU). New layers use the official initialisation (``init_new_layers_``).
    """

    def __init__(self, config: ModelConfig, num_classes: int) -> None:
        super().__init__()
        if config.arch != "abd":
            raise ValueError(f"model.arch: ABDNet builds arch 'abd', got {config.arch!r}")
        check_common_config(config, num_classes)
        available = (
            {"shallow", "reduction"}
            | ({"cam"} if config.cam else set())
            | ({"pam"} if config.pam else set())
        )
        check_of_positions(config, ABD_OF_POSITIONS, available)
        self.config = config
        self.num_classes = num_classes

        trunk = build_trunk(
            config.backbone, pretrained=config.pretrained, last_stride=config.last_stride
        )
        self.stem = trunk.stem  # res_conv_1..2
        self.shallow_cam: nn.Module = CAM("paper") if config.shallow_cam else nn.Identity()
        self.middle = trunk.middle  # res_conv_3..4
        self.global_deep = trunk.deep  # res_conv_5, global branch
        self.attentive_deep = copy.deepcopy(trunk.deep)  # res_conv_5, attentive branch

        c5, r = trunk.deep_channels, config.reduction_dim
        self.global_reduction = reduction_layer(c5, config.global_dim, config.dropout)
        self.reduction = nn.Sequential(
            nn.Conv2d(c5, r, kernel_size=1, bias=False), nn.BatchNorm2d(r), nn.ReLU(inplace=True)
        )
        self.cam = CAM("paper") if config.cam else None
        self.pam = PAM(r, variant="paper") if config.pam else None
        n_parts = 1 + int(config.cam) + int(config.pam)
        self.attentive_reduction = reduction_layer(
            n_parts * r, config.attentive_dim, config.dropout
        )

        self.feature_dim = config.global_dim + config.attentive_dim
        if config.svd_layer:
            self.eigenlayer = EigenLayer(self.feature_dim)
            self.classifier = nn.Linear(self.feature_dim, num_classes)
        else:
            self.global_classifier = nn.Linear(config.global_dim, num_classes)
            self.attentive_classifier = nn.Linear(config.attentive_dim, num_classes)

        for m in self._new_modules():
            init_new_layers_(m)
        if config.svd_layer:
            nn.init.orthogonal_(self.eigenlayer.weight)  # starts as a rotation: distances kept

    # -- parameter groups -------------------------------------------------------------
    def backbone_modules(self) -> list[nn.Module]:
        """The torchvision trunk pieces (res_conv_1..4 and both res_conv_5)."""
        return [self.stem, self.middle, self.global_deep, self.attentive_deep]

    def _new_modules(self) -> list[nn.Module]:
        backbone = {id(m) for m in self.backbone_modules()}
        return [m for m in self.children() if id(m) not in backbone]

    def stem_conv(self) -> nn.Conv2d:
        return self.stem[0]  # res_conv_1's conv (conv1 / conv0)

    # -- forward ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor | ModelOutput:
        maps: dict[str, torch.Tensor] = {}
        s = self.shallow_cam(self.stem(x))  # (B, C2, H/4, W/4)
        maps["shallow"] = s
        m = self.middle(s)  # (B, C4, H/16, W/16)

        g = _gap(self.global_deep(m))  # (B, C5)
        g = self.global_reduction(g)  # (B, kg)

        ta = self.reduction(self.attentive_deep(m))  # (B, R, h, w)
        maps["reduction"] = ta
        parts = [ta]
        if self.cam is not None:
            maps["cam"] = self.cam(ta)  # (B, R, h, w)
            parts.append(maps["cam"])
        if self.pam is not None:
            maps["pam"] = self.pam(ta)  # (B, R, h, w)
            parts.append(maps["pam"])
        a = self.attentive_reduction(_gap(torch.cat(parts, dim=1)))  # (B, n_parts*R) -> (B, ka)

        emb = torch.cat([g, a], dim=1)  # (B, kg + ka)
        if self.config.svd_layer:
            emb = self.eigenlayer(emb)  # (B, D)
        if not self.training:
            return emb
        if self.config.svd_layer:
            logits = [self.classifier(emb)]
        else:
            logits = [self.global_classifier(g), self.attentive_classifier(a)]
        of_maps = [(name, maps[name], 1.0) for name in self.config.of_positions]
        return ModelOutput(embedding=emb, logits=logits, triplet_features=[emb], of_maps=of_maps)


def _gap(x: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, C, H, W) -> (B, C)


# -- factory ------------------------------------------------------------------------------


def _pretrained_str(pretrained: bool | str | Path) -> str:
    if pretrained is True:
        return "imagenet"
    if pretrained is False or pretrained is None:
        return "none"
    if isinstance(pretrained, (str, Path)):
        return str(pretrained)
    raise ValueError(
        f"pretrained: expected a bool, 'none', 'imagenet' or a path, got {pretrained!r}"
    )


def build_model_from_config(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """``abd`` -> :class:`ABDNet`, ``official`` -> :class:`~abdnet.models.official.OfficialABDNet`."""
    if cfg.arch == "abd":
        return ABDNet(cfg, num_classes)
    if cfg.arch == "official":
        from abdnet.models.official import OfficialABDNet

        return OfficialABDNet(cfg, num_classes)
    raise ValueError(f"model.arch: expected 'abd' or 'official', got {cfg.arch!r}")


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
