"""Flip-averaged embeddings: combine an image's feature with its horizontal mirror's."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["flip_average", "FLIP_MODES"]

FLIP_MODES = ("raw", "normalized")


def flip_average(
    f: torch.Tensor | np.ndarray, f_flip: torch.Tensor | np.ndarray, mode: str = "raw"
):
    """``(f + f_flip) / 2`` of ``(N, D)`` features; same type as ``f``.

    ``mode="raw"`` averages the raw embeddings, as the official ABD-Net code does;
    ``mode="normalized"`` L2-normalizes each embedding first (the mean is not re-normalized),
    so the mirror's feature weighs as much as the original whatever their norms.
    """
    if mode not in FLIP_MODES:
        raise ValueError(f"flip mode: expected one of {FLIP_MODES}, got {mode!r}")
    is_np = isinstance(f, np.ndarray)
    a = torch.from_numpy(f) if isinstance(f, np.ndarray) else f
    b = torch.from_numpy(np.asarray(f_flip)) if isinstance(f_flip, np.ndarray) else f_flip
    if a.shape != b.shape:
        raise ValueError(
            f"flip_average: f {tuple(a.shape)} and f_flip {tuple(b.shape)} differ in shape"
        )
    if mode == "normalized":
        a = torch.nn.functional.normalize(a, dim=-1)
        b = torch.nn.functional.normalize(b, dim=-1)
    out = (a + b.to(a.dtype)) / 2
    return out.numpy() if is_np else out
