"""Average query expansion (AQE, Chum et al., ICCV 2007) and its weighted form (alpha-QE,
Radenovic et al., TPAMI 2018).

Each query feature is replaced by the average of itself and its ``k`` nearest gallery
features under ``metric``. With ``alpha > 0`` the neighbours are weighted by
``max(cos, 0) ** alpha`` (the query keeps weight 1), so closer neighbours count more;
``alpha = 0`` is the plain average. Neighbours are found chunk by chunk (``topk`` of a
distance block), so the full distance matrix is never held.
"""

from __future__ import annotations

import torch

from abdnet.evaluation.distance import ArrayLike, as_features, distance_block, prepare, row_blocks

__all__ = ["average_query_expansion"]


def average_query_expansion(
    qf: ArrayLike,
    gf: ArrayLike,
    k: int = 5,
    alpha: float = 0.0,
    metric: str = "euclidean",
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Expanded query features ``(Q, D)`` (same dtype/device as ``qf``, not re-normalized).

    ``new_q = (q + sum_j w_j g_j) / (1 + sum_j w_j)`` over the ``k`` nearest gallery
    features ``g_j``; ``w_j = 1`` (``alpha = 0``) or ``max(cos(q, g_j), 0) ** alpha``.
    """
    q, g = as_features(qf, "qf"), as_features(gf, "gf")
    if not 1 <= k <= g.shape[0]:
        raise ValueError(f"k must be in 1..{g.shape[0]} (gallery size), got {k}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    qm, gm, g_sq = prepare(q, g, metric)
    g = g.to(qm.dtype)
    out = torch.empty(q.shape, dtype=qm.dtype, device=q.device)
    gn = torch.nn.functional.normalize(g, dim=1)
    for rows in row_blocks(q.shape[0], g.shape[0], chunk_size):
        nn = (
            distance_block(qm[rows], gm, g_sq, metric).topk(k, dim=1, largest=False).indices
        )  # (R, k)
        neigh = g[nn]  # (R, k, D)
        if alpha > 0:
            qn = torch.nn.functional.normalize(q[rows].to(qm.dtype), dim=1)
            w = torch.einsum("rd,rkd->rk", qn, gn[nn]).clamp_(min=0).pow_(alpha)  # (R, k)
        else:
            w = torch.ones(nn.shape, dtype=qm.dtype, device=q.device)
        num = q[rows].to(qm.dtype) + torch.einsum("rk,rkd->rd", w, neigh)
        out[rows] = num / (1 + w.sum(1, keepdim=True))
    return out.to(q.dtype)
