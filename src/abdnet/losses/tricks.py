"""Two re-ID loss tricks, off by default: ArcFace's angular margin and the center loss.

- :func:`arcface_logits` (Deng, Guo, Xue, Zafeiriou, "ArcFace: Additive Angular Margin Loss
  for Deep Face Recognition", CVPR 2019): on cosine logits ``s cos(theta_j)`` the target
  class's logit becomes ``s cos(theta_y + m)``. Where ``theta_y + m`` would pass pi (the
  cosine would rise again) it is ``s (cos(theta_y) - m sin(m))`` instead, as their
  implementation does, so the target logit keeps falling as theta grows.
- :class:`CenterLoss` (Wen, Zhang, Li, Qiao, "A Discriminative Feature Learning Approach for
  Deep Face Recognition", ECCV 2016): ``1/2 mean_i ||x_i - c_{y_i}||^2``; the centers are
  buffers moved by the paper's update rule (Algorithm 1): ``c_j <- c_j - alpha * delta_j``
  with ``delta_j = sum_{i: y_i = j} (c_j - x_i) / (1 + n_j)``, once per training forward.
  The gradient reaches only the features.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["arcface_logits", "CenterLoss"]


def arcface_logits(logits: Tensor, targets: Tensor, *, scale: float, margin: float) -> Tensor:
    """``logits`` (B, K) = ``scale * cos(theta)`` with the angular ``margin`` added to each
    row's target class."""
    if margin <= 0:
        return logits
    cos = (logits.float() / scale).clamp(-1.0, 1.0)
    target_cos = cos.gather(1, targets.long().unsqueeze(1))  # (B, 1)
    sin = (1.0 - target_cos * target_cos).clamp_min(0.0).sqrt()
    phi = target_cos * math.cos(margin) - sin * math.sin(margin)  # cos(theta + m)
    phi = torch.where(
        target_cos > math.cos(math.pi - margin), phi, target_cos - margin * math.sin(margin)
    )
    return (scale * cos).scatter(1, targets.long().unsqueeze(1), scale * phi)


class CenterLoss(nn.Module):
    """Center loss with the update rule of Wen et al. (module docstring); ``centers`` is a
    (num_classes, dim) buffer, saved with the run's training state."""

    def __init__(self, num_classes: int, dim: int, alpha: float = 0.5) -> None:
        super().__init__()
        if num_classes < 1 or dim < 1:
            raise ValueError(
                f"CenterLoss: num_classes and dim must be >= 1, got {num_classes}, {dim}"
            )
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"CenterLoss: alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.register_buffer("centers", torch.zeros(num_classes, dim))

    def forward(self, features: Tensor, targets: Tensor) -> Tensor:
        x = features.float()
        if x.dim() != 2 or x.shape[1] != self.centers.shape[1]:
            raise ValueError(
                f"center loss features: expected (B, {self.centers.shape[1]}), got {tuple(x.shape)}"
            )
        c = self.centers[targets.long()]  # (B, d)
        loss = 0.5 * ((x - c) ** 2).sum(dim=1).mean()
        if self.training:
            with torch.no_grad():
                labels = targets.long()
                diff = torch.zeros_like(self.centers).index_add_(0, labels, c - x.detach())
                counts = torch.zeros(len(self.centers), device=x.device).index_add_(
                    0, labels, torch.ones_like(labels, dtype=torch.float32)
                )
                self.centers -= self.alpha * diff / (1.0 + counts).unsqueeze(1)
        return loss
