"""RankEvaluator: batches processed as they come give what evaluate_features gives on the
whole query/gallery; junk (pid -1) gallery items are left out and counted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from abdnet.evaluation import RankEvaluator, RankResult, evaluate_features


def _problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    q_pids = rng.integers(0, 6, 12)
    g_pids = np.concatenate([rng.integers(0, 6, 30), [-1, -1, -1]])
    q_cams, g_cams = rng.integers(0, 3, 12), rng.integers(0, 3, 33)
    centres = rng.normal(size=(6, 8))
    qf = centres[q_pids] + 0.8 * rng.normal(size=(12, 8))
    gf = centres[np.maximum(g_pids, 0)] + 0.8 * rng.normal(size=(33, 8))
    return qf.astype(np.float32), gf.astype(np.float32), q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("normalize", [False, True])
def test_batches_equal_the_whole_evaluation(normalize):
    qf, gf, q_pids, g_pids, q_cams, g_cams = _problem()
    ev = RankEvaluator(len(qf), normalize=normalize, max_rank=10)
    feats = np.concatenate([qf, gf])
    pids, cams = np.concatenate([q_pids, g_pids]), np.concatenate([q_cams, g_cams])
    for s in range(0, len(feats), 7):  # batches that straddle the query/gallery boundary
        ev.process(torch.from_numpy(feats[s : s + 7]), pids[s : s + 7], cams[s : s + 7])
    got = ev.evaluate()
    keep = g_pids >= 0
    q, g = torch.from_numpy(qf), torch.from_numpy(gf[keep])
    if normalize:
        q, g = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(g, dim=1)
    want = evaluate_features(q, g, q_pids, g_pids[keep], q_cams, g_cams[keep], max_rank=10)
    assert isinstance(got, RankResult)
    np.testing.assert_allclose(got.cmc, want.cmc)
    assert got.mAP == pytest.approx(want.mAP) and got.mINP == pytest.approx(want.mINP)
    assert (got.num_gallery, got.num_gallery_skipped) == (30, 3)
    d = got.to_dict()
    assert d["num_query"] == 12 and d["rank1"] == got.rank1 == got.cmc[0]
    assert set(d) >= {"mAP", "mINP", "rank1", "rank5", "rank10"}


def test_reset_and_errors():
    qf, gf, q_pids, g_pids, q_cams, g_cams = _problem(1)
    ev = RankEvaluator(len(qf))
    with pytest.raises(ValueError, match="nothing was processed"):
        ev.evaluate()
    ev.process(qf, q_pids, q_cams)
    with pytest.raises(ValueError, match="no gallery"):
        ev.evaluate()
    with pytest.raises(ValueError, match="2 features but 3 pids"):
        ev.process(qf[:2], q_pids[:3], q_cams[:2])
    ev.process(gf, g_pids, g_cams)
    first = ev.evaluate()
    ev.reset()
    ev.process(
        np.concatenate([qf, gf]), np.concatenate([q_pids, g_pids]), np.concatenate([q_cams, g_cams])
    )
    assert ev.evaluate().mAP == first.mAP
