"""Feature extraction: the one loop that turns transformed batches into raw embeddings.

:class:`abdnet.engine.ModelEmbedder` (the one :class:`~abdnet.engine.Embedder`, behind
training-time validation, ``abdnet eval``, retrieval, the gallery, the figures and the
service) runs its batches through :func:`extract_features`, and the automatic backend
choice times candidate runners with it:

- the model runs in eval mode under ``torch.no_grad`` (its training flag is restored
  afterwards), in the given precision (fp32 unless another one is asked for), optionally in
  channels_last memory format;
- ``flip=True`` averages each embedding with its horizontal mirror's (``flip_mode`` "raw" as
  the official code, or "normalized").

The embeddings are raw: moving them into an embedding space (L2 normalisation) is the
space's rule (:func:`abdnet.engine.space.project`).

A :data:`Runner` is an abdnet network (its ``ModelOutput.embedding`` is used) or any
callable mapping a ``(B, 3, H, W)`` float tensor to ``(B, D)`` embeddings (the ONNX Runtime
backend, for instance).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from abdnet.config import FlipMode, PrecisionName
from abdnet.engine.precision import Precision, choose_precision
from abdnet.evaluation import flip_average

__all__ = ["Runner", "device_of", "embed_batch", "extract_features"]

# An abdnet network, or a callable (B, 3, H, W) -> (B, D) (tensor or array).
Runner = nn.Module | Callable[[torch.Tensor], Any]


def _precision(device: torch.device, precision: Precision | PrecisionName | None) -> Precision:
    if isinstance(precision, Precision):
        return precision
    return choose_precision(device, precision or "fp32")


def device_of(embed: Runner) -> torch.device:
    """The device of a network's parameters (CPU for a parameter-free model or a callable)."""
    if isinstance(embed, nn.Module):
        p = next(embed.parameters(), None)
        if p is not None:
            return p.device
    return torch.device("cpu")


def embed_batch(
    embed: Runner,
    images: torch.Tensor,
    *,
    precision: Precision,
    flip: bool = False,
    flip_mode: FlipMode = "raw",
    channels_last: bool = False,
) -> torch.Tensor:
    """Raw (or flip-averaged) embeddings ``(B, D)`` float32 of a transformed batch."""

    def once(x: torch.Tensor) -> torch.Tensor:
        if not isinstance(embed, nn.Module):
            out = embed(x.cpu())
            return torch.as_tensor(np.asarray(out) if not torch.is_tensor(out) else out).float()
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with precision.autocast():
            return embed(x).embedding.float()

    f = once(images)  # (B, D)
    if flip:
        f = flip_average(f, once(torch.flip(images, dims=[3])), flip_mode)
    return f


def extract_features(
    embed: Runner,
    batches: Iterable[torch.Tensor],
    *,
    device: torch.device | str | None = None,
    precision: Precision | PrecisionName | None = None,
    flip: bool = False,
    flip_mode: FlipMode = "raw",
    channels_last: bool = False,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Embeddings ``(N, D)`` (float32, CPU) of the images in ``batches``, in order.

    ``batches`` yields transformed ``(B, 3, H, W)`` float tensors. ``device`` defaults to
    the model's; ``precision`` to fp32. ``progress(n)`` is called after each batch with its
    size. Returns a ``(0, 0)`` tensor when there are no images.
    """
    dev = torch.device(device) if device is not None else device_of(embed)
    prec = _precision(dev, precision)
    module = embed if isinstance(embed, nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    feats: list[torch.Tensor] = []
    try:
        with torch.no_grad():
            for images in batches:
                images = images.to(dev, non_blocking=True)
                f = embed_batch(
                    embed,
                    images,
                    precision=prec,
                    flip=flip,
                    flip_mode=flip_mode,
                    channels_last=channels_last,
                )
                feats.append(f.cpu())
                if progress is not None:
                    progress(images.shape[0])
    finally:
        if module is not None:
            module.train(was_training)
    if not feats:
        return torch.zeros(0, 0)
    return torch.cat(feats)  # (N, D)
