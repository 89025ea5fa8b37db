"""Re-ID head tricks for the ``abd`` architecture: GeM pooling, BNNeck and a cosine ID head.

Each is an option of :class:`abdnet.config.ModelConfig` (off in every preset):

- :class:`GeM`, generalized mean pooling (Radenović, Tolias and Chum, "Fine-tuning CNN
  Image Retrieval with No Human Annotation", TPAMI 2018): ``(mean_hw x^p)^(1/p)`` per
  channel with a learned ``p``; ``p = 1`` is average pooling, ``p -> inf`` max pooling.
- :class:`BNNeck` (Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person
  Re-identification", CVPRW 2019): a BatchNorm whose shift is frozen at 0 between the
  feature the metric losses use and the one the ID classifier and retrieval use.
- :class:`CosineClassifier`: ``s * cos(x, w_c)``, normalized features and class weights
  (Wang et al., "NormFace", ACM MM 2017); ArcFace's angular margin (Deng et al., CVPR 2019)
  is applied to its target logit by the loss (``losses.metric.arcface_logits``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from abdnet.config import ModelConfig

__all__ = ["GeM", "AvgPool", "BNNeck", "CosineClassifier", "make_pool", "make_classifier"]


class AvgPool(nn.Module):
    """Global average pooling ``(B, C, H, W) -> (B, C)`` (the paper's GAP)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


class GeM(nn.Module):
    """Generalized mean pooling with a learned exponent ``p`` (initial value ``p``);
    inputs are clamped at ``eps`` so the power is defined."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        if p < 1:
            raise ValueError(f"GeM: p must be >= 1, got {p}")
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.clamp(min=1.0)
        wide = x.to(torch.promote_types(x.dtype, torch.float32))  # fp32 at least (bf16 AMP)
        pooled = wide.clamp(min=self.eps).pow(p.to(wide.dtype)).mean(dim=(2, 3))
        return pooled.pow(1.0 / p.to(wide.dtype)).to(x.dtype)


class BNNeck(nn.Module):
    """BatchNorm1d with a learned scale and no shift (the shift is frozen at 0)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, affine=False)
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * self.weight


class CosineClassifier(nn.Module):
    """``logits = scale * normalize(x) @ normalize(W)^T`` (cosines times ``scale``)."""

    def __init__(self, in_dim: int, num_classes: int, scale: float = 30.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_dim))
        nn.init.normal_(self.weight, 0.0, 0.01)
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))


def make_pool(cfg: ModelConfig) -> nn.Module:
    """The branch pooling ``cfg.pooling`` asks for."""
    return GeM(cfg.gem_p) if cfg.pooling == "gem" else AvgPool()


def make_classifier(cfg: ModelConfig, in_dim: int, num_classes: int) -> nn.Module:
    """The ID classifier ``cfg.id_head`` asks for (linear without bias after a BNNeck, as
    Luo et al. do)."""
    if cfg.id_head == "cosine":
        return CosineClassifier(in_dim, num_classes, cfg.head_scale)
    return nn.Linear(in_dim, num_classes, bias=not cfg.bnneck)
