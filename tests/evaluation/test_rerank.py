"""k-reciprocal re-ranking against a plain dense implementation of the paper's algorithm."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from abdnet.evaluation import (
    evaluate_features,
    evaluate_rank,
    k_reciprocal_rerank,
    pairwise_distance,
)
from abdnet.evaluation import rerank as rerank_mod


def dense_rerank(dist_all, num_q, k1=20, k2=6, lam=0.3):
    """Zhong et al. 2017 written out with full N x N matrices and per-image loops."""
    d = dist_all.astype(np.float64) ** 2
    d = d / d.max(axis=1, keepdims=True)  # rows normalized (the matrix is symmetric)
    n = len(d)
    rank = np.argsort(d, axis=1, kind="stable")

    def reciprocal(i, k):
        fwd = rank[i, : k + 1]
        return np.array([j for j in fwd if i in rank[j, : k + 1]])

    half = int(np.around(k1 / 2))
    V = np.zeros((n, n))
    for i in range(n):
        r = reciprocal(i, k1)
        expanded = set(r.tolist())
        for c in r:
            rc = reciprocal(c, half)
            if len(set(rc.tolist()) & set(r.tolist())) > 2 / 3 * len(rc):
                expanded |= set(rc.tolist())
        idx = np.array(sorted(expanded))
        w = np.exp(-d[i, idx])
        V[i, idx] = w / w.sum()
    if k2 != 1:
        V = np.stack([V[rank[i, :k2]].mean(0) for i in range(n)])
    out = np.zeros((num_q, n - num_q))
    for i in range(num_q):
        for j in range(num_q, n):
            m = np.minimum(V[i], V[j]).sum()
            out[i, j - num_q] = (1 - lam) * (1 - m / (2 - m)) + lam * d[i, j]
    return out


def clustered_features(seed, num_q=12, num_g=50, dim=8, ids=6):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(ids, dim)) * 2
    q_pids, g_pids = rng.integers(0, ids, num_q), rng.integers(0, ids, num_g)
    qf = centers[q_pids] + rng.normal(size=(num_q, dim))
    gf = centers[g_pids] + rng.normal(size=(num_g, dim))
    return qf.astype(np.float32), gf.astype(np.float32), q_pids, g_pids


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("k1,k2", [(20, 6), (5, 3), (4, 1)])
def test_equals_dense_reference(metric, k1, k2):
    qf, gf, _, _ = clustered_features(0)
    allf = torch.from_numpy(np.concatenate([qf, gf]))
    dist_all = pairwise_distance(allf, allf, metric).double().numpy()
    dist_all = np.maximum(dist_all, 0)  # exact zeros on the diagonal up to rounding
    ref = dense_rerank(dist_all, len(qf), k1, k2)
    for chunk in (None, 7):
        out = k_reciprocal_rerank(qf, gf, k1=k1, k2=k2, metric=metric, chunk_size=chunk)
        assert out.shape == (len(qf), len(gf)) and out.dtype == torch.float32
        np.testing.assert_allclose(out.numpy(), ref, atol=2e-5)


def test_small_memory_budget_gives_same_result(monkeypatch):
    # a tiny block budget forces many chunks in every pass (rows, expansion, Jaccard pairs)
    qf, gf, _, _ = clustered_features(3)
    full = k_reciprocal_rerank(qf, gf, k1=6, k2=3)
    monkeypatch.setattr(rerank_mod, "_BLOCK_ELEMENTS", 300)
    small = k_reciprocal_rerank(qf, gf, k1=6, k2=3)
    np.testing.assert_allclose(small.numpy(), full.numpy(), atol=1e-6)


def test_rerank_helps_on_clustered_data_and_plugs_into_evaluate_features():
    qf, gf, q_pids, g_pids = clustered_features(1, num_q=30, num_g=120, ids=10)
    rng = np.random.default_rng(1)
    q_cams, g_cams = rng.integers(0, 3, 30), rng.integers(0, 3, 120)
    base = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams)
    rr = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, rerank=True)
    direct = evaluate_rank(k_reciprocal_rerank(qf, gf), q_pids, g_pids, q_cams, g_cams)
    assert rr.mAP == direct.mAP
    assert rr.mAP > base.mAP  # re-ranking's whole point on well-clustered data


def test_bad_arguments():
    qf, gf, _, _ = clustered_features(2)
    with pytest.raises(ValueError, match="k1"):
        k_reciprocal_rerank(qf[:2], gf[:3], k1=20)
    with pytest.raises(ValueError, match="lambda_value"):
        k_reciprocal_rerank(qf, gf, lambda_value=2.0)
    with pytest.raises(ValueError, match="feature dimensions"):
        k_reciprocal_rerank(qf, gf[:, :3])
