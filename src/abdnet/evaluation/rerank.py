"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), with bounded memory.

Same algorithm as the authors' ``re_ranking`` (also torchreid's / fast-reid's copy):
over all N = Q + G images, the distances are squared and each row divided by its maximum
(``d``); R(i, k1) are the k1-reciprocal neighbours of i, expanded by the half-size sets
R(c, k1/2) of its members c that share more than 2/3 of their elements with R(i, k1)
(eq. 6 of the paper); V_i = exp(-d_i) on the expanded set, normalized (eq. 7); local query
expansion averages V over the k2 nearest neighbours (eq. 10); the Jaccard distance is
``1 - sum(min(V_q, V_g)) / sum(max(V_q, V_g))`` computed as ``1 - m / (2 - m)`` with
``m = sum(min)`` (eq. 11, the V rows sum to 1); the result is
``(1 - lambda) d_J + lambda d`` (eq. 12).

Memory: the reference code holds several N x N matrices (distances, their argsort, V and
its expansion: about 16 N^2 bytes, 6 GB for Market-1501). Here nothing N x N is stored:
distances are computed ``chunk_size`` rows at a time (``O(chunk * N)`` floats), only the
k1 + 1 nearest neighbours of every image are kept (``O(N * k1)``), V is a sparse matrix
(at most about ``k1 * k1/2`` non-zeros per row before and ``k2`` times that after query
expansion), and the Jaccard sums are accumulated per chunk of queries from the non-zeros.
The peak is the ``(Q, G)`` float32 result plus ``O(N * k1 * k2 * k1/2)`` sparse entries
plus one chunk.
"""

from __future__ import annotations

import numpy as np
import torch

from abdnet.evaluation.distance import ArrayLike, as_features, distance_block, prepare

__all__ = ["k_reciprocal_rerank"]

_BLOCK_ELEMENTS = 1 << 24


def _neighbours(x: torch.Tensor, x_sq: torch.Tensor, metric: str, k: int, step: int):
    """Top-``k`` nearest neighbours (ascending) of every row and the rows' maximum of d^2."""
    n = x.shape[0]
    nn_idx = torch.empty(n, k, dtype=torch.int64)
    row_max = torch.empty(n, dtype=torch.float64)
    for s in range(0, n, step):
        d2 = distance_block(x[s : s + step], x, x_sq, metric).float().pow_(2)  # (R, N)
        nn_idx[s : s + step] = d2.topk(k, dim=1, largest=False, sorted=True).indices.cpu()
        row_max[s : s + step] = d2.amax(1).double().cpu()
    return nn_idx.numpy(), row_max.numpy()


def _pair_d2(
    x: torch.Tensor, x_sq: torch.Tensor, metric: str, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """Squared distances of the pairs ``(rows[r], cols[r, e])``; ``cols`` is ``(R, E)``."""
    xi = x[torch.from_numpy(rows).to(x.device)]  # (R, D)
    xj = x[torch.from_numpy(cols).to(x.device)]  # (R, E, D)
    dot = torch.bmm(xj, xi[:, :, None])[:, :, 0]  # (R, E)
    if metric == "euclidean":
        ri = torch.from_numpy(rows).to(x.device)
        d = x_sq[ri][:, None] + x_sq[torch.from_numpy(cols).to(x.device)] - 2 * dot
    else:
        d = 1 - dot
    return d.double().pow(2).cpu().numpy()


def _reciprocal(nn: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``mask[r, a]``: ``rows[r]`` is among the neighbours of its ``a``-th neighbour."""
    back = nn[nn[rows]]  # (R, k, k)
    return (back == rows[:, None, None]).any(-1)


def k_reciprocal_rerank(
    qf: ArrayLike,
    gf: ArrayLike,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    metric: str = "euclidean",
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Re-ranked ``(Q, G)`` float32 distances (CPU) of query features to gallery features.

    ``metric`` gives the base distance (squared Euclidean or ``1 - cos``, as
    ``pairwise_distance``); the re-ranking squares it like the reference code does.
    Paper defaults ``k1=20, k2=6, lambda=0.3``.
    """
    import scipy.sparse as sp

    q, g = as_features(qf, "qf"), as_features(gf, "gf")
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be >= 1, got k1={k1}, k2={k2}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")
    q, g, _ = prepare(q, g, metric)
    num_q, num_g = q.shape[0], g.shape[0]
    x = torch.cat([q, g]).float()  # (N, D) queries first, as the reference
    n = x.shape[0]
    x_sq = x.pow(2).sum(1) if metric == "euclidean" else torch.empty(0)
    if k1 + 1 > n:
        raise ValueError(f"k1={k1} needs more than {k1} images; query+gallery has {n}")
    step = chunk_size or max(1, _BLOCK_ELEMENTS // n)
    kh = int(np.around(k1 / 2.0))

    nn, row_max = _neighbours(x, x_sq, metric, k1 + 1, step)  # (N, k1+1), (N,)
    nn_half = nn[:, : kh + 1]  # (N, kh+1): a prefix of the sorted neighbours
    half_recip = _reciprocal(nn_half, np.arange(n))  # (N, kh+1)
    half_size = half_recip.sum(1)  # |R(c, k1/2)|

    # V (eq. 7) as sparse rows, built chunk by chunk
    v_rows, v_cols, v_vals = [], [], []
    # rows per step: bounded by the (R, a, b, a') membership test and the (R, E, D) gather
    width = (k1 + 1) * (kh + 2)  # E: R(i, k1) plus every member's R(c, k1/2)
    step_v = max(
        1,
        min(
            _BLOCK_ELEMENTS // ((k1 + 1) * (kh + 1) * (k1 + 1)),
            _BLOCK_ELEMENTS // (width * x.shape[1]),
        ),
    )
    for s in range(0, n, step_v):
        rows = np.arange(s, min(s + step_v, n))
        cand = nn[rows]  # (R, k1+1)
        recip = _reciprocal(nn, rows)  # (R, k1+1): membership of R(i, k1)
        c_half = nn_half[cand]  # (R, k1+1, kh+1) R(c, k1/2) candidates of each member c
        c_mask = half_recip[cand]  # (R, k1+1, kh+1)
        in_ki = (c_half[..., None] == cand[:, None, None, :]) & recip[
            :, None, None, :
        ]  # (R, a, b, a')
        overlap = (in_ki.any(-1) & c_mask).sum(-1)  # (R, k1+1)
        take = recip & (overlap > 2.0 / 3.0 * half_size[cand])  # members whose half set is added
        ext = np.where((take[..., None] & c_mask), c_half, -1).reshape(len(rows), -1)
        idx = np.concatenate([np.where(recip, cand, -1), ext], axis=1)  # (R, E), -1 = unused
        idx.sort(axis=1)
        dup = np.zeros_like(idx, dtype=bool)
        dup[:, 1:] = idx[:, 1:] == idx[:, :-1]
        use = (idx >= 0) & ~dup  # the unique expanded set per row
        d2 = _pair_d2(x, x_sq, metric, rows, np.maximum(idx, 0)) / row_max[rows, None]
        w = np.where(use, np.exp(-d2), 0.0)
        w /= w.sum(1, keepdims=True)
        r_, e_ = np.nonzero(use)
        v_rows.append(rows[r_])
        v_cols.append(idx[r_, e_])
        v_vals.append(w[r_, e_])
    v = sp.csr_matrix(
        (
            np.concatenate(v_vals).astype(np.float32),
            (np.concatenate(v_rows), np.concatenate(v_cols)),
        ),
        shape=(n, n),
    )
    if k2 != 1:  # local query expansion (eq. 10): mean of V over the k2 nearest neighbours
        avg = sp.csr_matrix(
            (
                np.full(n * k2, 1.0 / k2, np.float32),
                (np.repeat(np.arange(n), k2), nn[:, :k2].ravel()),
            ),
            shape=(n, n),
        )
        v = (avg @ v).tocsr()
    v_q = v[:num_q]  # (Q, N)
    v_g_t = v[num_q:].T.tocsr()  # (N, G): for feature k, the gallery items using it

    out = torch.empty(num_q, num_g, dtype=torch.float32)
    # query chunks bounded both in rows (dense (R, G) output) and in expanded pairs
    col_count = np.diff(v_g_t.indptr)  # (N,) gallery items using each feature k
    row_of_nnz = np.repeat(np.arange(num_q), np.diff(v_q.indptr))
    pairs = np.bincount(row_of_nnz, weights=col_count[v_q.indices], minlength=num_q)  # (Q,)
    bounds, s = [], 0
    max_rows = max(1, _BLOCK_ELEMENTS // max(num_g, 1))
    while s < num_q:
        csum = np.cumsum(pairs[s : s + max_rows])
        e = s + max(1, int(np.searchsorted(csum, _BLOCK_ELEMENTS // 2, side="right")))
        bounds.append((s, e))
        s = e
    for s, e in bounds:
        # sum_k min(V_q[i, k], V_g[j, k]) over the shared non-zeros
        blk = v_q[s:e].tocoo()
        counts = np.diff(v_g_t.indptr)[blk.col]
        starts = np.repeat(v_g_t.indptr[blk.col], counts)
        offs = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        pos = starts + offs
        mins = np.minimum(np.repeat(blk.data, counts), v_g_t.data[pos]).astype(np.float64)
        flat = np.repeat(blk.row, counts).astype(np.int64) * num_g + v_g_t.indices[pos]
        m = np.bincount(flat, weights=mins, minlength=(e - s) * num_g).reshape(e - s, num_g)
        jaccard = 1.0 - m / (2.0 - m)
        d = distance_block(
            x[s:e], x[num_q:], x_sq[num_q:] if metric == "euclidean" else x_sq, metric
        )
        d = d.double().pow_(2).cpu().numpy() / row_max[s:e, None]
        out[s:e] = torch.from_numpy(
            (jaccard * (1 - lambda_value) + d * lambda_value).astype(np.float32)
        )
    return out
