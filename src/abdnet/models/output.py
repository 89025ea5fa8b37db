"""What a model returns in train mode: everything the losses of eq. (6) need."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["ModelOutput"]


@dataclass
class ModelOutput:
    """Train-mode output of ``abd`` and ``official`` models.

    - ``embedding``: ``(B, D)``, what eval mode returns (here with train-mode BN/dropout).
    - ``logits``: one ``(B, num_classes)`` tensor per classifier (cross-entropy on each).
    - ``triplet_features``: the ``(B, d)`` features the batch-hard triplet loss uses.
    - ``of_maps``: ``(position name, feature map (B, C, H, W), weight)`` for O.F., only the
      positions enabled in ``ModelConfig.of_positions``.
    """

    embedding: torch.Tensor
    logits: list[torch.Tensor] = field(default_factory=list)
    triplet_features: list[torch.Tensor] = field(default_factory=list)
    of_maps: list[tuple[str, torch.Tensor, float]] = field(default_factory=list)
