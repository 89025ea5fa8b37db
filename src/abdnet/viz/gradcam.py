"""Grad-CAM (Selvaraju et al., ICCV 2017, the paper's ref. [73]) and the ranking activation
map (RAM, Yang et al., CVPR 2019, ref. [74]) used for Fig. 1 and Fig. 5.

Grad-CAM: for a score ``y`` and feature maps ``A in R^{C x H x W}``, the channel weights are
the spatially averaged gradients ``alpha_k = 1/N sum_ij dy/dA_k(i, j)`` and the map is
``ReLU(sum_k alpha_k A_k)``. With a class logit as ``y`` this explains a classifier; test
identities have no classifier output, so RAM uses the same weighting with a retrieval score:
here the negative squared Euclidean distance between the query's embedding and its top-1
gallery match (a larger score means "more similar").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "grad_cam",
    "GradientCapture",
    "capture_gradients",
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


@dataclass
class GradientCapture:
    """What one forward/backward pass recorded at the hooked layers."""

    activations: dict[str, Tensor]  # layer name -> (B, C, H, W), detached
    gradients: dict[str, Tensor]  # layer name -> d(sum of scores)/d activations
    scores: Tensor  # (B,) the score of each image that was back-propagated

    def cams(self, *, normalize: bool = True) -> dict[str, Tensor]:
        return {
            k: grad_cam(a, self.gradients[k], normalize=normalize)
            for k, a in self.activations.items()
        }


def backward_scores(
    model: nn.Module, images: Tensor, score_fn: Callable[[object], Tensor]
) -> tuple[object, Tensor]:
    """``model(images)``, one score per image from ``score_fn``, and their summed backward.

    The input is made to require grad so that a network whose weights are all frozen still
    records a graph. Returns the model output and the (B,) scores.
    """
    with torch.enable_grad():
        x = images.detach().clone().requires_grad_(True)
        output = model(x)
        scores = score_fn(output)
        if scores.dim() != 1 or scores.shape[0] != images.shape[0]:
            raise ValueError(
                f"score_fn must return one score per image (B,), got {tuple(scores.shape)}"
            )
        model.zero_grad(set_to_none=True)
        scores.sum().backward()
    return output, scores


def capture_gradients(
    model: nn.Module,
    images: Tensor,
    layers: dict[str, nn.Module],
    score_fn: Callable[[object], Tensor],
) -> GradientCapture:
    """Run ``model(images)``, compute ``score_fn(output) -> (B,)`` and back-propagate it.

    Forward hooks on ``layers`` keep their outputs (4-D tensors) and their gradients. The
    images of a batch must not interact (no batch statistics), so the caller puts BN and
    dropout in eval mode; then the gradient of the summed scores at image ``b``'s
    activations is the gradient of image ``b``'s own score.
    """
    acts: dict[str, Tensor] = {}
    handles = []

    def make_hook(name: str):
        def hook(_module: nn.Module, _inp, out):
            if isinstance(out, (tuple, list)):
                out = out[0]
            if not isinstance(out, Tensor) or out.dim() != 4:
                raise ValueError(
                    f"layer {name!r} must output a (B, C, H, W) tensor, got {type(out).__name__}"
                )
            out.retain_grad()
            acts[name] = out

        return hook

    for name, module in layers.items():
        handles.append(module.register_forward_hook(make_hook(name)))
    try:
        _, scores = backward_scores(model, images, score_fn)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in layers if n not in acts]
    if missing:
        raise ValueError(f"layers {missing} were not run by the model's forward pass")
    grads = {}
    for n, a in acts.items():
        grads[n] = a.grad.detach() if a.grad is not None else torch.zeros_like(a)
    return GradientCapture(
        activations={n: a.detach() for n, a in acts.items()},
        gradients=grads,
        scores=scores.detach(),
    )


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
