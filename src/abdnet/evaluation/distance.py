"""Distances between feature sets, as torchreid computes them, block by block.

``euclidean`` is the *squared* Euclidean distance (torchreid's ``compute_distance_matrix``,
the official ABD-Net test metric) with torchreid's order of operations
``||q||^2 + ||g||^2 - 2 q.g``; ``cosine`` is ``1 - cos``. The blocked helpers let the
ranking metrics, re-ranking, query expansion and the figures work on distance rows without
holding a full query x gallery matrix. Imports nothing else of abdnet.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

__all__ = [
    "ArrayLike",
    "METRICS",
    "as_features",
    "prepare",
    "sq_norms",
    "distance_block",
    "row_blocks",
    "pairwise_distance",
]

ArrayLike = np.ndarray | torch.Tensor
IdsLike = np.ndarray | torch.Tensor | Sequence[int]  # identity / camera labels, one per item

METRICS = ("euclidean", "cosine")
# Elements of a distance block processed at once (rows x gallery): 32 Mi float32 = 128 MiB
# (with the ranking's uint16 keys and a scratch copy, about 320 MiB of working memory).
BLOCK_ELEMENTS = 1 << 25


def as_features(x: ArrayLike, name: str) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.ndim != 2:
        raise ValueError(
            f"{name}: expected a 2-D (num_items, dim) feature matrix, got shape {tuple(t.shape)}"
        )
    if not t.is_floating_point():
        t = t.float()
    elif t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()  # half-precision products lose ranking resolution
    return t


def prepare(
    qf: torch.Tensor, gf: torch.Tensor, metric: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
    if qf.shape[1] != gf.shape[1]:
        raise ValueError(
            f"qf {tuple(qf.shape)} and gf {tuple(gf.shape)}: feature dimensions differ"
        )
    if qf.device != gf.device:
        raise ValueError(f"qf is on {qf.device} but gf is on {gf.device}")
    dtype = torch.promote_types(qf.dtype, gf.dtype)
    qf, gf = qf.to(dtype), gf.to(dtype)
    if metric == "cosine":
        qf = torch.nn.functional.normalize(qf, dim=1)
        gf = torch.nn.functional.normalize(gf, dim=1)
        return qf, gf, torch.empty(0, dtype=dtype, device=gf.device)
    return qf, gf, sq_norms(gf)  # (G,)


def sq_norms(x: torch.Tensor) -> torch.Tensor:
    """Row-wise ``||x||^2`` as torchreid computes it (``pow(2).sum(1)``), in row chunks."""
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for s in range(0, x.shape[0], 4096):  # no (N, D) temporary
        out[s : s + 4096] = x[s : s + 4096].pow(2).sum(1)
    return out


def distance_block(
    q: torch.Tensor, gf: torch.Tensor, g_sq: torch.Tensor, metric: str
) -> torch.Tensor:
    """``(R, G)`` distances with the arithmetic of torchreid's ``compute_distance_matrix``:
    squared Euclidean ``(||q||^2 + ||g||^2).addmm_(q, g.T, alpha=-2)``, or ``1 - q.g`` on
    L2-normalized features."""
    if metric == "euclidean":
        # ||q||^2 + ||g||^2 - 2 q.g, the order of operations torchreid uses
        d = sq_norms(q)[:, None] + g_sq[None, :]  # (R, G)
        return d.addmm_(q, gf.T, beta=1, alpha=-2)
    return torch.mm(q, gf.T).neg_().add_(1)


def row_blocks(
    num_q: int, num_g: int, chunk_size: int | None, block_elements: int = BLOCK_ELEMENTS
) -> Iterator[slice]:
    """Slices of query rows, ``chunk_size`` at a time or about ``block_elements`` distances
    per block."""
    step = chunk_size if chunk_size is not None else max(1, block_elements // max(num_g, 1))
    if step < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    for start in range(0, num_q, step):
        yield slice(start, min(start + step, num_q))


def pairwise_distance(
    qf: ArrayLike, gf: ArrayLike, metric: str = "euclidean", *, chunk_size: int | None = None
) -> torch.Tensor:
    """Full ``(Q, G)`` distance matrix, computed in the same chunks as ``evaluate_features``.

    ``euclidean`` is the *squared* Euclidean distance (torchreid, official ABD-Net code);
    ``cosine`` is ``1 - cos``.
    """
    q, g = as_features(qf, "qf"), as_features(gf, "gf")
    q, g, g_sq = prepare(q, g, metric)
    out = torch.empty(q.shape[0], g.shape[0], dtype=q.dtype, device=q.device)
    for rows in row_blocks(q.shape[0], g.shape[0], chunk_size):
        out[rows] = distance_block(q[rows], g, g_sq, metric)
    return out
