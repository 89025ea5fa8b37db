"""Verification ROC, TAR@FAR, EER and thresholds against a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from abdnet.evaluation import evaluate_verification, pairwise_distance


def _pairs(qf, gf, qp, gp, qc, gc, chunk_size=None):
    # The same row blocks as the code under test: a matrix product's rounding depends on
    # its shape, and the reference must see the very same float32 distances.
    d = pairwise_distance(torch.as_tensor(qf), torch.as_tensor(gf), chunk_size=chunk_size).numpy()
    cross = qc[:, None] != gc[None, :]
    same = qp[:, None] == gp[None, :]
    return d[cross & same], d[cross & ~same]


def _brute(gen, imp, far_target):
    """Best TAR over every candidate threshold (every pair distance) with FAR <= target."""
    best_tar, candidates = 0.0, np.unique(np.concatenate([gen, imp, [-np.inf]]))
    for t in candidates:
        far = (imp <= t).mean()
        if far <= far_target + 1e-12:
            best_tar = max(best_tar, (gen <= t).mean())
    eer = min(
        max((imp <= t).mean(), 1 - (gen <= t).mean()) for t in np.concatenate([gen, [-np.inf]])
    )
    return best_tar, eer


def _data(seed, nq=30, ng=80, dim=8, ids=6, cams=3, quantize=False):
    rng = np.random.default_rng(seed)
    qf = rng.standard_normal((nq, dim)).astype(np.float32)
    gf = rng.standard_normal((ng, dim)).astype(np.float32)
    if quantize:  # many exactly equal distances
        qf, gf = np.round(qf), np.round(gf)
    qp, gp = rng.integers(0, ids, nq), rng.integers(0, ids, ng)
    qc, gc = rng.integers(0, cams, nq), rng.integers(0, cams, ng)
    return qf, gf, qp, gp, qc, gc


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("quantize", [False, True])
def test_matches_brute_force(seed, quantize):
    qf, gf, qp, gp, qc, gc = _data(seed, quantize=quantize)
    fars = (0.01, 0.05, 0.3)
    res = evaluate_verification(qf, gf, qp, gp, qc, gc, fars=fars, chunk_size=7)
    gen, imp = _pairs(qf, gf, qp, gp, qc, gc, chunk_size=7)
    assert res.num_genuine == gen.size and res.num_impostor == imp.size
    for f in fars:
        p = res.at_far(f)
        tar, eer = _brute(gen, imp, f)
        assert p.tar == pytest.approx(tar)
        # the threshold realizes the point exactly on the pairs
        assert (imp <= p.threshold).mean() == pytest.approx(p.far)
        assert p.far <= f + 1e-12
        assert (gen <= p.threshold).mean() == pytest.approx(p.tar)
        assert res.eer == pytest.approx(eer)
    # ROC corners: exact rates at each distinct genuine distance
    for t, tar_t, far_t in zip(res.thresholds, res.tar, res.far):
        assert tar_t == pytest.approx((gen <= t).mean())
        assert far_t == pytest.approx((imp <= t).mean())
    assert max((imp <= res.eer_threshold).mean(), 1 - (gen <= res.eer_threshold).mean()) == (
        pytest.approx(res.eer)
    )


def test_block_size_does_not_change_the_result():
    qf, gf, qp, gp, qc, gc = _data(7, nq=41, ng=50)
    a = evaluate_verification(qf, gf, qp, gp, qc, gc, chunk_size=1)
    b = evaluate_verification(qf, gf, qp, gp, qc, gc)
    assert a.to_dict() == b.to_dict()
    np.testing.assert_array_equal(a.far, b.far)


def test_ties_are_accepted_or_rejected_together():
    # One genuine and two impostors at exactly the same distance: the tie cannot be split.
    qf = np.array([[0.0, 0.0]], np.float32)
    gf = np.array([[1, 0], [0, 1], [-1, 0], [3, 0], [0, 3]], np.float32)
    qp, gp = np.array([1]), np.array([1, 2, 3, 4, 1])
    qc, gc = np.array([0]), np.array([1, 1, 1, 1, 1])
    # genuine: d=1, d=9; impostors: d=1, 1, 9
    res = evaluate_verification(qf, gf, qp, gp, qc, gc, fars=(0.5, 0.67, 1.0))
    assert res.at_far(0.5).tar == 0.0 and res.at_far(0.5).far == 0.0
    assert res.at_far(0.5).threshold < 1.0
    assert res.at_far(0.67).tar == 0.5 and res.at_far(0.67).far == pytest.approx(2 / 3)
    assert 1.0 <= res.at_far(0.67).threshold < 9.0
    assert res.at_far(1.0).tar == 1.0
    # EER: at t=1 FAR 2/3, FRR 1/2 -> 2/3; at t=9 FAR 1 -> 1; below everything FRR 1
    assert res.eer == pytest.approx(2 / 3)


def test_same_camera_pairs_are_left_out():
    qf, gf, qp, gp, qc, gc = _data(3)
    res = evaluate_verification(qf, gf, qp, gp, qc, gc)
    cross = (qc[:, None] != gc[None, :]).sum()
    assert res.num_genuine + res.num_impostor == cross


def test_errors_name_the_problem():
    qf, gf, qp, gp, qc, gc = _data(1)
    with pytest.raises(ValueError, match="genuine and impostor"):
        evaluate_verification(qf, gf, qp, gp, np.zeros_like(qc), np.zeros_like(gc))
    with pytest.raises(ValueError, match="q_pids"):
        evaluate_verification(qf, gf, qp[:-1], gp, qc, gc)
    with pytest.raises(ValueError, match="FAR"):
        evaluate_verification(qf, gf, qp, gp, qc, gc, fars=(0.0,))
