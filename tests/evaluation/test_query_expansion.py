"""Average query expansion against a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from abdnet.evaluation import average_query_expansion


def brute_aqe(qf, gf, k, alpha, metric):
    out = []
    for q in qf:
        if metric == "euclidean":
            d = ((gf - q) ** 2).sum(1)
        else:
            d = 1 - (gf / np.linalg.norm(gf, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
        nn = np.argsort(d)[:k]
        if alpha > 0:
            cos = (gf[nn] / np.linalg.norm(gf[nn], axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
            w = np.maximum(cos, 0) ** alpha
        else:
            w = np.ones(k)
        out.append((q + (w[:, None] * gf[nn]).sum(0)) / (1 + w.sum()))
    return np.stack(out)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("k,alpha", [(1, 0.0), (4, 0.0), (4, 3.0)])
def test_aqe_equals_brute_force(metric, k, alpha):
    rng = np.random.default_rng(0)
    qf, gf = rng.normal(size=(9, 6)), rng.normal(size=(40, 6))
    ref = brute_aqe(qf, gf, k, alpha, metric)
    for chunk in (None, 2):
        out = average_query_expansion(
            torch.from_numpy(qf), torch.from_numpy(gf), k, alpha, metric, chunk_size=chunk
        )
        assert out.dtype == torch.float64
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10, atol=1e-10)


def test_aqe_k1_hand_computed():
    qf = np.array([[0.0, 0.0]], np.float32)
    gf = np.array([[1.0, 0.0], [5.0, 5.0]], np.float32)
    out = average_query_expansion(qf, gf, k=1)
    np.testing.assert_allclose(out.numpy(), [[0.5, 0.0]])


def test_aqe_bad_k():
    with pytest.raises(ValueError, match="k must be"):
        average_query_expansion(np.zeros((2, 3)), np.ones((4, 3)), k=5)


def test_evaluate_features_with_aqe_uses_expanded_queries():
    from abdnet.evaluation import evaluate_features, evaluate_rank, pairwise_distance

    rng = np.random.default_rng(5)
    centers = rng.normal(size=(8, 6)) * 2
    q_pids, g_pids = rng.integers(0, 8, 15), rng.integers(0, 8, 70)
    qf = (centers[q_pids] + rng.normal(size=(15, 6))).astype(np.float32)
    gf = (centers[g_pids] + rng.normal(size=(70, 6))).astype(np.float32)
    q_cams, g_cams = np.zeros(15, int), np.ones(70, int)
    r = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, aqe=True)
    expanded = average_query_expansion(qf, gf)
    ref = evaluate_rank(
        pairwise_distance(expanded, gf), q_pids, g_pids, q_cams, g_cams, ties="stable"
    )
    assert r.mAP == ref.mAP and np.array_equal(r.cmc, ref.cmc)
