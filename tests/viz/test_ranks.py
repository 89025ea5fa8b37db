"""Ranked lists: junk skipped from ranks as the protocol does, compared with a brute-force loop."""

import numpy as np

from abdnet.viz.ranks import rank_query


def test_rank_query_statuses_against_brute_force():
    rng = np.random.default_rng(0)
    g_pids = rng.integers(0, 4, size=30)
    g_cams = rng.integers(0, 3, size=30)
    d = rng.random(30)
    q_pid, q_cam = 2, 1
    rq = rank_query(d, q_pid, q_cam, g_pids, g_cams, k=6, distractor_pids=frozenset({0}))
    # brute force: sort, drop same id + same camera, take 6
    order = sorted(range(30), key=lambda i: d[i])
    kept = [i for i in order if not (g_pids[i] == q_pid and g_cams[i] == q_cam)][:6]
    ranked = [e for e in rq.entries if e.rank is not None]
    assert [e.index for e in ranked] == kept
    assert [e.rank for e in ranked] == [1, 2, 3, 4, 5, 6]
    for e in ranked:
        want = (
            "match"
            if g_pids[e.index] == q_pid
            else ("distractor" if g_pids[e.index] == 0 else "wrong")
        )
        assert e.status == want
    junk = [e for e in rq.entries if e.rank is None]
    last = d[kept[-1]]
    expected_junk = [i for i in order if g_pids[i] == q_pid and g_cams[i] == q_cam and d[i] < last]
    assert [e.index for e in junk] == expected_junk
    assert all(e.status == "junk" for e in junk)
