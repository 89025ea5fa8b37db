"""Grad-CAM (Selvaraju et al., ICCV 2017, the paper's ref. [73]) and the ranking activation
map (RAM, Yang et al., CVPR 2019, ref. [74]) used for Fig. 1 and Fig. 5.

Grad-CAM: for a score ``y`` and feature maps ``A in R^{C x H x W}``, the channel weights are
the spatially averaged gradients ``alpha_k = 1/N sum_ij dy/dA_k(i, j)`` and the map is
``ReLU(sum_k alpha_k A_k)``. With a class logit as ``y`` this explains a classifier; test
identities have no classifier output, so RAM uses the same weighting with a retrieval score:
here the negative squared Euclidean distance between the query's embedding and its top-1
gallery match (a larger score means "more similar"). The maps and their gradients come from
:func:`abdnet.viz.taps.capture_taps`.
"""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "grad_cam",
    "ranking_score",
    "upsample_maps",
    "overlay_heatmap",
]


def grad_cam(activations: Tensor, gradients: Tensor, *, normalize: bool = True) -> Tensor:
    """Grad-CAM maps ``(B, H, W)`` from activations and gradients ``(B, C, H, W)``.

    ``normalize`` divides each map by its maximum (maps that are 0 everywhere stay 0).
    """
    if activations.shape != gradients.shape or activations.dim() != 4:
        raise ValueError(
            f"grad_cam: activations {tuple(activations.shape)} and gradients "
            f"{tuple(gradients.shape)} must both be (B, C, H, W)"
        )
    alpha = gradients.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1): alpha_k of Grad-CAM
    cam = F.relu((alpha * activations).sum(dim=1))  # (B, H, W)
    if normalize:
        peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12)  # (B,)
        cam = cam / peak[:, None, None]
    return cam


def ranking_score(query_embedding: Tensor, target_embedding: Tensor) -> Tensor:
    """RAM's score: ``-||f(q) - f(g)||^2`` per row, ``(B, D), (B, D) -> (B,)``; the target
    (the top-1 gallery match) is a constant."""
    return -((query_embedding - target_embedding.detach()) ** 2).sum(dim=1)


def upsample_maps(maps: Tensor, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(B, h, w)`` maps to ``size = (H, W)``; returns numpy ``(B, H, W)``."""
    up = F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)
    return up[:, 0].cpu().numpy()


def overlay_heatmap(
    image: np.ndarray, heat: np.ndarray, *, alpha: float = 0.5, cmap: str = "jet"
) -> np.ndarray:
    """Blend a ``[0, 1]`` heat map ``(H, W)`` over an RGB image ``(H, W, 3)`` (uint8 or
    float in [0, 1]); returns float RGB in [0, 1]."""
    import matplotlib

    img = image.astype(np.float64)
    if img.max() > 1.0:
        img = img / 255.0
    colour = matplotlib.colormaps[cmap](np.clip(heat, 0.0, 1.0))[..., :3]
    return (1.0 - alpha) * img + alpha * colour
