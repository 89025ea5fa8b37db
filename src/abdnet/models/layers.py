"""Small building blocks shared by the ``abd`` and ``official`` architectures."""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from abdnet.config import DecayScope

__all__ = [
    "reduction_layer",
    "init_new_layers_",
    "global_avg_pool",
    "TrunkParameterGroups",
    "weight_decay_groups",
]


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C)."""
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


def reduction_layer(in_dim: int, out_dim: int, dropout: float) -> nn.Sequential:
    """The paper's "reduction layer" (footnote of section 4.1): Linear, BN, ReLU, dropout.

    Indices 0..3 match the official code's ``fc`` (its checkpoints load into it).
    """
    return nn.Sequential(
        nn.Linear(in_dim, out_dim),
        nn.BatchNorm1d(out_dim),
        nn.ReLU(inplace=True),
        nn.Dropout(p=dropout),
    )


def init_new_layers_(module: nn.Module) -> None:
    """Initialise layers that do not come from the backbone, as the official code does.

    Conv: Kaiming-normal (fan_out, ReLU), bias 0; BatchNorm: weight ~ N(1, 0.02), bias 0;
    Linear: weight ~ N(0, 0.01), bias 0. Attention gammas are untouched (they start at 0).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class TrunkParameterGroups:
    """Parameter groups shared by both architectures, derived from ``backbone_modules()``
    (the torchvision trunk pieces) and ``stem_conv()`` (res_conv_1's conv).

    ``backbone_parameters`` are frozen in step 1 of the two-step schedule, ``new_parameters``
    (reductions, attention incl. gammas, classifiers) always train, ``ow_weights`` are the
    conv weights O.W. regularizes per ``ow_scope``: every trunk conv ("all", the paper), the
    stem conv only ("stem", what the official code reaches) or none.
    """

    ow_scope: str

    def backbone_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def stem_conv(self) -> nn.Conv2d:
        raise NotImplementedError

    def backbone_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.backbone_modules() for p in m.parameters()]

    def new_parameters(self) -> list[nn.Parameter]:
        backbone = {id(p) for p in self.backbone_parameters()}
        module = cast(nn.Module, self)  # mixed into an nn.Module
        return [p for p in module.parameters() if id(p) not in backbone]

    def ow_weights(self) -> list[torch.Tensor]:
        if self.ow_scope == "none":
            return []
        if self.ow_scope == "stem":
            return [self.stem_conv().weight]
        return [
            m.weight
            for part in self.backbone_modules()
            for m in part.modules()
            if isinstance(m, nn.Conv2d)
        ]


def weight_decay_groups(
    module: nn.Module, weight_decay: float, scope: DecayScope = "weights"
) -> list[dict]:
    """Optimizer parameter groups for weight decay.

    ``scope="weights"``: only the weights of convolutions and linear layers decay; norms,
    biases and attention gammas (which start at 0 and would be pulled back to it) do not, as
    timm and nanoGPT do. ``scope="all"``: every parameter decays. Parameters keep
    ``module.parameters()`` order.
    """
    params = list(module.parameters())
    if scope == "all":
        return [{"params": params, "weight_decay": weight_decay}]
    decayed = {id(m.weight) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    groups = [
        {"params": [p for p in params if id(p) in decayed], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
