"""Backbone trunks cut into the three pieces ABD-Net needs (section 4.1 of the paper).

Paper numbering for ResNets: res_conv_1 = ``conv1`` (+ BN, ReLU, max-pool), res_conv_2 =
``layer1``, res_conv_3 = ``layer2``, res_conv_4 = ``layer3``, res_conv_5 = ``layer4``.
ABD-Net puts a CAM after res_conv_2 and splits after res_conv_4 into two branches, each
with its own copy of res_conv_5; so a trunk is returned as

- ``stem``:   res_conv_1..2 (``conv1, bn1, relu, maxpool, layer1`` in this order, so the
  state-dict keys equal the official code's ``common_branch.backbone1.{0..4}``),
- ``middle``: res_conv_3..4 (``layer2, layer3``),
- ``deep``:   res_conv_5 (``layer4``), its stride set by ``last_stride`` (paper: 1, which
  gives 24x8 maps at 384x128 instead of 12x4).

DenseNet-121 (the paper's Table 2 row) is split like the official code's ``t3_d4`` variant:
``stem`` = ``conv0, norm0, relu0, pool0, denseblock1, transition1`` (128 channels, 1/8;
the shallow CAM sits on it, as in the official code), ``middle`` = ``denseblock2,
transition2, denseblock3`` (1024 channels, 1/16), ``deep`` = ``transition3, denseblock4,
norm5, ReLU`` (1024 channels; torchvision applies that ReLU in ``forward``). The 2x2 average
pool of ``transition3`` is the down-sampling that ``last_stride=1`` removes, so, as for the
ResNets, ``middle`` ends at 1/16 and only ``deep`` depends on ``last_stride``.

Weights come from torchvision constructors: ``pretrained`` is ``False``/``"none"`` (random
init), ``True``/``"imagenet"`` (torchvision's weights API; downloads on first use) or the
path of a locally saved torchvision state dict (read with ``weights_only=True``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models as tvm

__all__ = [
    "Trunk",
    "BACKBONES",
    "build_trunk",
    "check_state_dict_fits",
    "load_torchvision_state_dict",
    "pretrained_source",
    "pretrained_spec",
]

logger = logging.getLogger(__name__)

# name -> (torchvision constructor, its weights enum)
BACKBONES: dict[str, tuple[Callable[..., nn.Module], Any]] = {
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights),
    "resnet34": (tvm.resnet34, tvm.ResNet34_Weights),
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights),
    "resnet101": (tvm.resnet101, tvm.ResNet101_Weights),
    "resnet152": (tvm.resnet152, tvm.ResNet152_Weights),
    "densenet121": (tvm.densenet121, tvm.DenseNet121_Weights),
}

# Old torchvision DenseNet checkpoints name layers "norm.1" instead of "norm1"; torchvision
# renames them in its own loader, which the weights API's get_state_dict() bypasses.
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


@dataclass
class Trunk:
    """A backbone cut after res_conv_2 and res_conv_4 (see the module docstring)."""

    stem: nn.Sequential  # res_conv_1..2
    middle: nn.Sequential  # res_conv_3..4
    deep: nn.Sequential  # res_conv_5
    stem_channels: int  # channels out of ``stem`` (where the shallow CAM sits)
    middle_channels: int
    deep_channels: int
    first_conv: nn.Conv2d  # res_conv_1's convolution (O.W. scope "stem")


def pretrained_source(pretrained: bool | str | Path | None) -> str | Path | None:
    """What a pretrained-weights spec asks for: None (random init), "imagenet" or a file.

    The spec: False/None/"none"/"false"/"" (random), True/"imagenet"/"true" (the torchvision
    weights API), or a path to a torchvision state dict; anything else is a ``ValueError``.
    """
    if pretrained is False or pretrained is None:
        return None
    if pretrained is True:
        return "imagenet"
    if isinstance(pretrained, Path):
        return pretrained
    if isinstance(pretrained, str):
        if pretrained.lower() in ("", "none", "false"):
            return None
        if pretrained.lower() in ("imagenet", "true"):
            return "imagenet"
        return Path(pretrained)
    raise ValueError(
        f"model.pretrained: expected False/'none', True/'imagenet' or a file path, got {pretrained!r}"
    )


def pretrained_spec(pretrained: bool | str | Path | None) -> str:
    """The spec as ``ModelConfig.pretrained`` spells it: "none", "imagenet" or the path."""
    source = pretrained_source(pretrained)
    return "none" if source is None else str(source)


def _fix_densenet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        m = _DENSENET_OLD_KEY.match(key)
        out[m.group(1) + m.group(2) if m else key] = value
    return out


def _listed(keys: list[str], limit: int = 10) -> str:
    more = f" ... ({len(keys)} in all)" if len(keys) > limit else ""
    return f"{keys[:limit]}{more}"


def check_state_dict_fits(
    model: nn.Module,
    state: dict[str, Any],
    what: str,
    *,
    optional: Callable[[str], bool] = lambda _key: False,
) -> None:
    """Raise ValueError(``what``: ...) listing the keys of ``state`` that are missing from
    ``model`` (unless ``optional``), unexpected, or of another shape; nothing is skipped
    silently."""
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state and not optional(k))
    unexpected = sorted(k for k in state if k not in own)
    misshaped = sorted(
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    )
    if missing or unexpected or misshaped:
        raise ValueError(
            f"{what}: missing keys {_listed(missing)}, unexpected keys {_listed(unexpected)}, "
            f"mis-shaped {_listed(misshaped)}"
        )


def load_torchvision_state_dict(model: nn.Module, state: dict[str, Any], source: str) -> None:
    """Load a torchvision ImageNet state dict into ``model`` (a torchvision classifier).

    The ImageNet classifier (``fc.*`` / ``classifier.*``) may be absent: ABD-Net drops it.
    Anything else missing, unexpected or mis-shaped is an error naming ``source`` and keys.
    """
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{source}: not a state dict of tensors (entries {bad[:5]!r})")
    state = _fix_densenet_keys(state)
    head = ("fc.", "classifier.")
    # Old torchvision files have no BN ``num_batches_tracked`` (load_state_dict fills it in).
    check_state_dict_fits(
        model,
        state,
        f"{source}: does not fit the torchvision backbone",
        optional=lambda k: k.startswith(head) or k.endswith("num_batches_tracked"),
    )
    model.load_state_dict(state, strict=False)


def _torchvision_model(name: str, pretrained: bool | str | Path) -> nn.Module:
    if name not in BACKBONES:
        raise ValueError(
            f"model.backbone: unknown backbone {name!r}; expected one of {sorted(BACKBONES)}"
        )
    ctor, weights_enum = BACKBONES[name]
    model = ctor(weights=None)
    source = pretrained_source(pretrained)
    if source == "imagenet":
        # The torchvision weights API: downloads (and caches) on first use.
        weights = weights_enum.IMAGENET1K_V1
        logger.info("loading ImageNet weights %s for %s", weights, name)
        load_torchvision_state_dict(
            model, weights.get_state_dict(progress=False), f"torchvision {weights}"
        )
    elif source is not None:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"model.pretrained: weights file not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unpickling errors have many types
            raise ValueError(
                f"{path}: cannot read as a torch state dict with weights_only=True: {exc}"
            ) from exc
        if not isinstance(state, dict):
            raise ValueError(
                f"{path}: expected a state dict (a dict of tensors), got {type(state).__name__}"
            )
        load_torchvision_state_dict(model, state, str(path))
        logger.info("loaded backbone weights for %s from %s", name, path)
    return model


def _set_resnet_last_stride(layer4: nn.Sequential, stride: int) -> None:
    block: Any = layer4[0]  # a torchvision BasicBlock or Bottleneck
    # torchvision puts the stride on the 3x3 conv: conv2 in Bottleneck, conv1 in BasicBlock.
    conv = block.conv2 if isinstance(block, tvm.resnet.Bottleneck) else block.conv1
    conv.stride = (stride, stride)
    if block.downsample is not None:
        block.downsample[0].stride = (stride, stride)


def build_trunk(
    name: str = "resnet50", *, pretrained: bool | str | Path = False, last_stride: int = 1
) -> Trunk:
    """Build the torchvision backbone ``name`` and cut it into stem / middle / deep.

    Args:
        name: resnet18/34/50/101/152 or densenet121.
        pretrained: False/"none", True/"imagenet" (torchvision weights API) or a file path.
        last_stride: stride of res_conv_5 (paper: 1, removing its down-sampling) - 1 or 2.
    """
    if last_stride not in (1, 2):
        raise ValueError(f"model.last_stride: expected 1 or 2, got {last_stride!r}")
    model: Any = _torchvision_model(name, pretrained)  # a ResNet or DenseNet: parts by name
    if name.startswith("resnet"):
        _set_resnet_last_stride(model.layer4, last_stride)
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1)
        middle = nn.Sequential(model.layer2, model.layer3)
        deep = model.layer4
        return Trunk(
            stem=stem,
            middle=middle,
            deep=deep,
            stem_channels=_out_channels(model.layer1),
            middle_channels=_out_channels(model.layer3),
            deep_channels=_out_channels(model.layer4),
            first_conv=model.conv1,
        )
    # densenet121
    f = model.features
    if last_stride == 1:
        f.transition3.pool = nn.Identity()
    stem = nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0, f.denseblock1, f.transition1)
    middle = nn.Sequential(f.denseblock2, f.transition2, f.denseblock3)
    deep = nn.Sequential(f.transition3, f.denseblock4, f.norm5, nn.ReLU(inplace=False))
    return Trunk(
        stem=stem,
        middle=middle,
        deep=deep,
        stem_channels=f.transition1.conv.out_channels,
        middle_channels=f.transition3.conv.in_channels,
        deep_channels=f.norm5.num_features,
        first_conv=f.conv0,
    )


def _out_channels(layer: nn.Sequential) -> int:
    last: Any = layer[-1]  # a torchvision BasicBlock or Bottleneck
    bn = last.bn3 if isinstance(last, tvm.resnet.Bottleneck) else last.bn2
    return bn.num_features
