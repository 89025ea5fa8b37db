"""CMC/mAP/mINP against torchreid's answers and a slow per-query reference written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from abdnet.evaluation import RankResult, evaluate_features, evaluate_rank, pairwise_distance
from abdnet.evaluation import rank as rank_mod

CASES = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "eval-cases").glob("*.npz"))


def slow_reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, kind=None):
    """torchreid's per-query Market-1501 loop, plus fast-reid's INP, written out plainly.

    Ranking is ``np.argsort`` of the float32 row: numpy's default kind, as torchreid, or
    ``kind="stable"`` (equal distances in gallery-index order).
    """
    distmat = np.asarray(distmat, dtype=np.float32)
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    all_cmc, all_ap, all_inp = [], [], []
    for i in range(num_q):
        order = np.argsort(distmat[i], kind=kind)
        raw = []
        for j in order:
            if g_pids[j] == q_pids[i] and g_camids[j] == q_camids[i]:
                continue  # junk: same identity seen by the same camera
            raw.append(1 if g_pids[j] == q_pids[i] else 0)
        if sum(raw) == 0:
            continue
        hits, precisions, cmc = 0, [], []
        for pos, m in enumerate(raw):
            if m:
                hits += 1
                precisions.append(hits / (pos + 1))
                last = pos
            cmc.append(1.0 if hits else 0.0)
        cmc += [1.0] * max(0, max_rank - len(cmc))
        all_cmc.append(cmc[:max_rank])
        all_ap.append(sum(precisions) / hits)
        all_inp.append(hits / (last + 1))
    return np.mean(all_cmc, axis=0), float(np.mean(all_ap)), float(np.mean(all_inp)), len(all_ap)


def random_problem(seed, num_q=40, num_g=300, num_ids=25, num_cams=4, levels=None):
    """Random ids/cams with junk, distractors (pid 0 and -1), queries without matches.

    ``levels``: distances drawn from that many integer values (many exact ties).
    """
    rng = np.random.default_rng(seed)
    g_pids = rng.integers(1, num_ids + 1, num_g)
    g_pids[rng.random(num_g) < 0.15] = 0  # distractors
    g_pids[rng.random(num_g) < 0.05] = -1
    q_pids = rng.integers(1, num_ids + 6, num_q)  # ids above num_ids have no gallery image
    g_camids = rng.integers(0, num_cams, num_g)
    q_camids = rng.integers(0, num_cams, num_q)
    if levels is None:
        distmat = rng.random((num_q, num_g)).astype(np.float32)
    else:
        distmat = rng.integers(0, levels, (num_q, num_g)).astype(np.float32)
    # make matches a bit closer so the metrics are not all near zero
    shift = 0.3 if levels is None else levels // 3  # integer shift keeps the ties
    distmat -= shift * (q_pids[:, None] == g_pids[None, :])
    return distmat, q_pids, g_pids, q_camids, g_camids


def assert_same(result: RankResult, ref, tol=1e-6):
    cmc, mAP, mINP, num_valid = ref
    assert result.num_query_used == num_valid
    np.testing.assert_allclose(result.cmc, cmc, atol=tol, rtol=0)
    assert abs(result.mAP - mAP) < tol
    assert abs(result.mINP - mINP) < tol


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_reference_cases_equal_torchreid(path):
    d = np.load(path)
    r = evaluate_rank(
        d["distmat"], d["q_pids"], d["g_pids"], d["q_camids"], d["g_camids"], max_rank=50
    )
    np.testing.assert_allclose(r.cmc, d["cmc"], atol=1e-6, rtol=0)
    assert abs(r.mAP - float(d["mAP"])) < 1e-6
    assert abs(r.mINP - float(d["mINP"])) < 1e-6
    assert r.num_query_used + r.num_query_skipped == len(d["q_pids"])


def test_reference_cases_found():
    assert len(CASES) == 4


@pytest.mark.parametrize("levels", [None, 7, 40])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_slow_reference(seed, levels):
    p = random_problem(seed, levels=levels)
    ref = slow_reference(*p)
    ref_stable = slow_reference(*p, kind="stable")
    for chunk in (None, 1, 7):
        r = evaluate_rank(*p, chunk_size=chunk)
        assert_same(r, ref)
        assert r.num_query_skipped == len(p[1]) - ref[3]
        assert_same(evaluate_rank(*p, chunk_size=chunk, ties="stable"), ref_stable)
    assert r.num_query_skipped > 0  # the problem really has queries without a valid match


def test_ties_are_exercised():
    # with 7 distance levels nearly every query has a match tied with a non-match, so the
    # torchreid-order path runs; check that the fast path alone would flag them
    distmat, q_pids, g_pids, q_camids, g_camids = random_problem(3, levels=7)
    same = rank_mod._SamePid(q_pids, g_pids, q_camids, g_camids)
    sidx, valid, pos = same.block(slice(0, len(q_pids)))
    args = (distmat, sidx, valid, pos, g_pids, q_pids)
    _, fallback = rank_mod._block_positions_cpu(*args, "torchreid")
    assert fallback.sum() > len(q_pids) // 2
    _, fallback = rank_mod._block_positions_cpu(*args, "stable")
    assert not fallback.any()  # stable ties are resolved without sorting


def test_torch_inputs_and_float64():
    p = random_problem(4)
    ref = evaluate_rank(*p)
    t = [torch.from_numpy(np.asarray(a)) for a in p]
    assert_same(evaluate_rank(*t), (ref.cmc, ref.mAP, ref.mINP, ref.num_query_used), tol=1e-12)
    r64 = evaluate_rank(p[0].astype(np.float64), *p[1:])
    assert_same(r64, (ref.cmc, ref.mAP, ref.mINP, ref.num_query_used), tol=1e-12)


def test_sorting_path_equals_histogram_path():
    # the CUDA path (row sort + searchsorted) and the CPU path (uint16 histogram) agree
    for levels, ties in ((None, "torchreid"), (5, "torchreid"), (5, "stable"), (300, "stable")):
        distmat, q_pids, g_pids, q_camids, g_camids = random_problem(
            5, num_q=30, num_g=2000, levels=levels
        )
        same = rank_mod._SamePid(q_pids, g_pids, q_camids, g_camids)
        sidx, valid, pos = same.block(slice(0, 30))
        a, fa = rank_mod._block_positions_cpu(distmat, sidx, valid, pos, g_pids, q_pids, ties)
        b, fb = rank_mod._block_positions_torch(torch.from_numpy(distmat), sidx, valid, pos, ties)
        np.testing.assert_array_equal(fa, fb)
        for x, y in zip(a, b):
            assert (x is None) == (y is None)
            if x is not None:
                np.testing.assert_array_equal(x, y)


def test_non_finite_and_degenerate_rows():
    distmat, q_pids, g_pids, q_camids, g_camids = random_problem(6, levels=None)
    distmat[0, :10] = np.inf
    distmat[1, :] = 0.5  # every distance equal
    distmat[2, 5] = np.nan
    distmat[3] *= 1e-30  # tiny range
    assert_same(
        evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids),
        slow_reference(distmat, q_pids, g_pids, q_camids, g_camids),
    )


def test_single_match_queries_and_small_gallery():
    # one match per query; gallery smaller than max_rank gives a truncated CMC like torchreid
    rng = np.random.default_rng(7)
    g_pids = np.arange(12)
    q_pids = np.arange(12)
    distmat = rng.random((12, 12)).astype(np.float32)
    cams_q, cams_g = np.zeros(12, int), np.ones(12, int)
    r = evaluate_rank(distmat, q_pids, g_pids, cams_q, cams_g, max_rank=50)
    assert len(r.cmc) == 12 and r.cmc[-1] == 1.0
    assert_same(r, slow_reference(distmat, q_pids, g_pids, cams_q, cams_g))
    # hand-computed: identity distances 0 on the diagonal -> everything at rank 1
    r = evaluate_rank(1 - np.eye(12, dtype=np.float32), q_pids, g_pids, cams_q, cams_g, max_rank=5)
    assert r.rank(1) == 1.0 and r.mAP == 1.0 and r.mINP == 1.0


def test_hand_computed_example():
    # one query (pid 1, cam 0); gallery ranked: [neg, junk, match, neg, match]
    distmat = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]], np.float32)
    g_pids = np.array([2, 1, 1, 3, 1])
    g_cams = np.array([1, 0, 1, 1, 2])
    r = evaluate_rank(distmat, np.array([1]), g_pids, np.array([0]), g_cams, max_rank=4)
    # kept list: neg, match(pos 1), neg, match(pos 3); AP = (1/2 + 2/4) / 2; INP = 2/4
    np.testing.assert_allclose(r.cmc, [0, 1, 1, 1])
    assert r.mAP == pytest.approx(0.5)
    assert r.mINP == pytest.approx(0.5)
    assert r.to_dict()["rank1"] == 0.0 and np.isnan(r.to_dict()["rank5"])
    assert r.to_dict()["num_query_used"] == 1


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_features_chunked_equal_full_matrix(metric):
    rng = np.random.default_rng(8)
    num_q, num_g, dim = 37, 260, 16
    g_pids = rng.integers(0, 30, num_g)
    q_pids = rng.integers(1, 33, num_q)
    g_cams, q_cams = rng.integers(0, 3, num_g), rng.integers(0, 3, num_q)
    centers = rng.normal(size=(33, dim))
    qf = (centers[q_pids] + rng.normal(size=(num_q, dim)) * 2).astype(np.float32)
    gf = (centers[g_pids] + rng.normal(size=(num_g, dim)) * 2).astype(np.float32)
    if metric == "euclidean":
        # small integer features: the distances are exact whatever the chunking (so equal
        # distances are real ties, handled identically); cosine keeps continuous features,
        # whose distances are tie-free (the matrix product's rounding may differ by chunk)
        qf, gf = np.round(qf), np.round(gf)
    full = pairwise_distance(torch.from_numpy(qf), torch.from_numpy(gf), metric)
    for ties in ("torchreid", "stable"):
        ref = evaluate_rank(full, q_pids, g_pids, q_cams, g_cams, ties=ties)
        for chunk in (None, 1, 5, 64):
            r = evaluate_features(
                qf, gf, q_pids, g_pids, q_cams, g_cams, metric=metric, chunk_size=chunk, ties=ties
            )
            assert_same(r, (ref.cmc, ref.mAP, ref.mINP, ref.num_query_used), tol=1e-12)
    # and the full matrix is the metric's distance (checked by torch.cdist)
    q64, g64 = torch.from_numpy(qf).double(), torch.from_numpy(gf).double()
    if metric == "euclidean":
        expect = torch.cdist(q64, g64) ** 2
    else:
        expect = (
            1
            - torch.nn.functional.normalize(q64, dim=1)
            @ torch.nn.functional.normalize(g64, dim=1).T
        )
    torch.testing.assert_close(full.double(), expect, atol=1e-3, rtol=1e-5)


def test_features_accepts_torch_tensors():
    rng = np.random.default_rng(9)
    qf, gf = (
        rng.normal(size=(20, 8)).astype(np.float32),
        rng.normal(size=(90, 8)).astype(np.float32),
    )
    q_pids, g_pids = rng.integers(0, 10, 20), rng.integers(0, 10, 90)
    q_cams, g_cams = rng.integers(0, 2, 20), rng.integers(0, 2, 90)
    a = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams)
    b = evaluate_features(
        torch.from_numpy(qf),
        torch.from_numpy(gf),
        *(torch.from_numpy(x) for x in (q_pids, g_pids, q_cams, g_cams)),
    )
    assert_same(b, (a.cmc, a.mAP, a.mINP, a.num_query_used), tol=1e-12)


def test_bad_inputs_give_clear_errors():
    d, q_pids, g_pids, q_cams, g_cams = random_problem(10)
    with pytest.raises(ValueError, match="g_pids"):
        evaluate_rank(d, q_pids, g_pids[:-1], q_cams, g_cams)
    with pytest.raises(ValueError, match="q_camids"):
        evaluate_rank(d, q_pids, g_pids, q_cams[:3], g_cams)
    with pytest.raises(ValueError, match="distmat"):
        evaluate_rank(d[0], q_pids, g_pids, q_cams, g_cams)
    with pytest.raises(ValueError, match="max_rank"):
        evaluate_rank(d, q_pids, g_pids, q_cams, g_cams, max_rank=0)
    with pytest.raises(ValueError, match="no query"):
        evaluate_rank(d, q_pids + 1000, g_pids, q_cams, g_cams)
    with pytest.raises(ValueError, match="feature dimensions"):
        evaluate_features(np.zeros((3, 4)), np.zeros((5, 6)), [1, 2, 3], [1] * 5, [0] * 3, [1] * 5)
    with pytest.raises(ValueError, match="metric"):
        evaluate_features(
            np.zeros((3, 4)), np.zeros((5, 4)), [1, 2, 3], [1] * 5, [0] * 3, [1] * 5, metric="l1"
        )
    with pytest.raises(ValueError, match="q_pids"):
        evaluate_features(np.zeros((3, 4)), np.zeros((5, 4)), [1, 2], [1] * 5, [0] * 3, [1] * 5)
    with pytest.raises(ValueError, match="ties"):
        evaluate_rank(d, q_pids, g_pids, q_cams, g_cams, ties="random")
    with pytest.raises(ValueError, match="rank k"):
        evaluate_rank(d, q_pids, g_pids, q_cams, g_cams, max_rank=5).rank(6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu():
    p = random_problem(11, levels=9)
    ref = evaluate_rank(*p)
    r = evaluate_rank(torch.from_numpy(p[0]).cuda(), *p[1:])
    assert_same(r, (ref.cmc, ref.mAP, ref.mINP, ref.num_query_used), tol=1e-12)


def test_pairwise_distance_uses_torchreid_arithmetic():
    # torchreid's compute_distance_matrix, written out: evaluate_features ranks the very
    # numbers torchreid's pipeline would hand to its evaluate_rank
    gen = torch.Generator().manual_seed(0)
    q, g = torch.randn(30, 64, generator=gen), torch.randn(200, 64, generator=gen)
    m, n = len(q), len(g)
    ref = torch.pow(q, 2).sum(dim=1, keepdim=True).expand(m, n)
    ref = ref + torch.pow(g, 2).sum(dim=1, keepdim=True).expand(n, m).t()
    ref.addmm_(q, g.t(), beta=1, alpha=-2)
    torch.testing.assert_close(pairwise_distance(q, g), ref, rtol=0, atol=1e-5)
    qn, gn = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(g, dim=1)
    torch.testing.assert_close(
        pairwise_distance(q, g, "cosine"), 1 - qn @ gn.t(), rtol=0, atol=1e-6
    )
