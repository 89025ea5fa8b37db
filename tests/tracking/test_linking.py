"""Stitching inside a camera and linking across cameras, on plain arrays."""

import numpy as np
import pytest

from abdnet.tracking import (
    attach_by_motion,
    cannot_links_by_proxy,
    impostor_distances,
    impostor_quantile,
    impostor_threshold,
    link_cameras,
    overlaps,
    pairwise_distances,
    stitch,
)


def _people(n, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q[:n]  # orthonormal: distance 2 between people


def _noisy(v, rng, s=0.05):
    x = v + rng.normal(0, s, v.shape)
    return x / np.linalg.norm(x)


def test_distances_are_squared_l2_of_unit_vectors():
    a = np.array([[3.0, 0], [0, 2]])
    d = pairwise_distances(a)
    np.testing.assert_allclose(d, [[0, 2], [2, 0]], atol=1e-12)


def test_stitching_repairs_a_forced_break():
    rng = np.random.default_rng(1)
    p = _people(2)
    # person 0 broken into three pieces (occlusions), person 1 walks alongside the whole time
    emb = np.stack([_noisy(p[0], rng), _noisy(p[0], rng), _noisy(p[0], rng), _noisy(p[1], rng)])
    starts = np.array([0.0, 5.0, 9.0, 0.0])
    ends = np.array([4.0, 8.0, 12.0, 12.0])
    labels = stitch(embeddings=emb, starts=starts, ends=ends, threshold=0.5)
    assert labels[0] == labels[1] == labels[2] != labels[3]


def test_stitching_never_joins_tracklets_that_overlap_in_time():
    rng = np.random.default_rng(2)
    p = _people(1)
    # two look-alikes seen at the same moment: identical appearance, overlapping in time
    emb = np.stack([_noisy(p[0], rng, 0.01), _noisy(p[0], rng, 0.01), _noisy(p[0], rng, 0.01)])
    starts, ends = np.array([0.0, 3.0, 6.0]), np.array([4.0, 7.0, 9.0])
    labels = stitch(embeddings=emb, starts=starts, ends=ends, threshold=1.0)
    ov = overlaps(starts, ends)
    for i in range(3):
        for j in range(3):
            if ov[i, j]:
                assert labels[i] != labels[j]
    assert len(set(labels.tolist())) == 2  # 0 and 2 may join; 1 overlaps both


def test_stitching_leaves_far_tracklets_and_rows_without_embedding_alone():
    p = _people(3)
    emb = np.stack([p[0], p[1], p[0]])
    labels = stitch(
        embeddings=emb,
        starts=np.array([0.0, 2.0, 4.0]),
        ends=np.array([1.0, 3.0, 5.0]),
        threshold=0.5,
        valid=np.array([True, True, False]),
    )
    assert len(set(labels.tolist())) == 3


def _box(cx: float, cy: float, h: float, w: float | None = None) -> list[float]:
    w = h / 3 if w is None else w
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def test_a_tracklet_with_nothing_to_embed_joins_the_track_it_continues():
    # 0: a walker (0.0-2.0 s) leaving at the right edge; 1: the 1-box sliver of it that the
    # tracker lost (2.04 s, the box cut to 2 px by the edge); 2: someone else, far away;
    # 3: a sliver far from every track's end; 4: a sliver after too long a gap
    starts = np.array([0.0, 2.04, 0.0, 2.04, 3.0])
    ends = np.array([2.0, 2.04, 2.5, 2.04, 3.0])
    first = np.array(
        [
            _box(20, 50, 60),
            _box(159, 50, 60, 2),
            _box(40, 50, 60),
            _box(80, 10, 20, 2),
            _box(159, 50, 60, 2),
        ]
    )
    last = first.copy()  # one-box slivers and a standing person end where they start
    last[0] = _box(150, 50, 60)  # the walker ends at the right edge
    valid = np.array([True, False, True, False, False])
    lab = attach_by_motion(
        labels=np.arange(5),
        valid=valid,
        starts=starts,
        ends=ends,
        first_boxes=first,
        last_boxes=last,
    )
    assert lab[1] == lab[0]  # the sliver continues the walker
    assert len({lab[0], lab[2], lab[3], lab[4]}) == 4  # the rest stay apart
    assert sorted(set(lab.tolist())) == list(range(4))  # labels stay 0..G-1
    # a track that starts just after a sliver ends takes it too (the sliver came first)
    lab = attach_by_motion(
        labels=np.arange(2),
        valid=np.array([False, True]),
        starts=np.array([0.0, 0.04]),
        ends=np.array([0.0, 2.0]),
        first_boxes=np.array([_box(1, 50, 60, 2), _box(10, 50, 60)]),
        last_boxes=np.array([_box(1, 50, 60, 2), _box(90, 50, 60)]),
    )
    assert lab[0] == lab[1]


def test_motion_never_puts_a_tracklet_into_a_group_that_overlaps_it():
    # 0 (0-1 s) and 1 (1-3 s) are one stitched person; the sliver 2 at 1.04 s faces 0's
    # end, but 1 is on screen then, so the sliver joins 3, the other track that just ended
    starts = np.array([0.0, 1.0, 1.04, 0.0])
    ends = np.array([1.0, 3.0, 1.04, 1.0])
    first = np.array([_box(10, 50, 60), _box(10, 50, 60), _box(60, 50, 60), _box(10, 50, 60)])
    last = np.array([_box(58, 50, 60), _box(90, 50, 60), _box(60, 50, 60), _box(65, 50, 60)])
    lab = attach_by_motion(
        labels=np.array([0, 0, 1, 2]),
        valid=np.array([True, True, False, True]),
        starts=starts,
        ends=ends,
        first_boxes=first,
        last_boxes=last,
    )
    assert lab[2] == lab[3] != lab[0]
    # with no other candidate it stays alone
    lab = attach_by_motion(
        labels=np.array([0, 0, 1]),
        valid=np.array([True, True, False]),
        starts=starts[:3],
        ends=ends[:3],
        first_boxes=first[:3],
        last_boxes=last[:3],
    )
    assert lab[2] != lab[0]


def test_two_cameras_link_one_to_one_and_one_camera_people_stay_alone():
    rng = np.random.default_rng(3)
    p = _people(6)
    # cam a sees people 0..4, cam b sees 0, 1, 2 and 5
    a = [0, 1, 2, 3, 4]
    b = [2, 0, 5, 1]
    cams = ["a"] * len(a) + ["b"] * len(b)
    emb = np.stack([_noisy(p[i], rng, 0.1) for i in a + b])
    labels = link_cameras(cameras=cams, embeddings=emb, threshold=0.8)
    truth = a + b
    for i in range(len(truth)):
        for j in range(len(truth)):
            assert (labels[i] == labels[j]) == (truth[i] == truth[j]), (i, j)


def test_one_to_one_takes_the_best_assignment_not_the_first_greedy_pair():
    # a0 is closest to b0, but taking that pair leaves a1 without a partner within the
    # threshold; the optimal assignment pairs a0-b1 and a1-b0
    cams = ["a", "a", "b", "b"]
    ang = np.deg2rad([0.0, 40.0, 15.0, -30.0])
    emb = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    d = pairwise_distances(emb)
    threshold = 0.4
    assert d[0, 2] < d[0, 3] <= threshold and d[1, 2] <= threshold < d[1, 3]
    labels = link_cameras(cameras=cams, embeddings=emb, threshold=threshold)
    assert labels[0] == labels[3] and labels[1] == labels[2]


def test_a_short_fragment_does_not_take_the_partner_of_a_long_track():
    # cam a: a0 a long track, a1 a 13-box fragment, a2 another long track; cam b: b0, b1.
    # a1 looks closest to b0, but a0 (100 boxes) matches b0 within the threshold too: with
    # the box counts the assignment gives b0 to a0 and leaves the fragment alone; without
    # them (every group worth the same) the fragment's smaller distance wins.
    d = np.full((5, 5), 9.0)
    for (i, j), v in {(0, 3): 0.322, (1, 3): 0.235, (1, 4): 0.295, (2, 4): 0.145}.items():
        d[i, j] = d[j, i] = v
    np.fill_diagonal(d, 0.0)

    def lookup(x, y):
        return d[np.ix_(x[:, 0].astype(int), y[:, 0].astype(int))]

    args = dict(
        cameras=["a", "a", "a", "b", "b"],
        embeddings=np.arange(5.0)[:, None],
        threshold=0.396,
        distance=lookup,
    )
    weighted = link_cameras(**args, sizes=np.array([100, 13, 100, 75, 100]))
    assert weighted[0] == weighted[3] and weighted[2] == weighted[4]
    assert len({weighted[1], weighted[0], weighted[2]}) == 3  # the fragment stays alone
    plain = link_cameras(**args)
    assert plain[1] == plain[3] and plain[2] == plain[4] and plain[0] not in plain[1:]
    with pytest.raises(ValueError, match="sizes: expected 5 positive"):
        link_cameras(**args, sizes=np.array([1, 1, 0, 1, 1]))

    # still the most pairs first: a strong, well-evidenced pair a0-b0 never costs two links
    d[:] = 9.0
    for (i, j), v in {(0, 3): 0.01, (0, 4): 0.39, (1, 3): 0.39}.items():
        d[i, j] = d[j, i] = v
    np.fill_diagonal(d, 0.0)
    two = link_cameras(**args, sizes=np.array([100, 1, 1, 100, 1]))
    assert two[0] == two[4] and two[1] == two[3]


def test_three_cameras_never_put_two_groups_of_one_camera_in_one_identity():
    rng = np.random.default_rng(4)
    p = _people(3)
    truth = [0, 1, 0, 1, 0, 2]
    cams = ["a", "a", "b", "b", "c", "c"]
    emb = np.stack([_noisy(p[i], rng, 0.1) for i in truth])
    labels = link_cameras(cameras=cams, embeddings=emb, threshold=0.8)
    for i in range(6):
        for j in range(6):
            assert (labels[i] == labels[j]) == (truth[i] == truth[j])
    # look-alikes in one camera are still two people
    same = link_cameras(cameras=["a", "a"], embeddings=np.stack([p[0], p[0]]), threshold=1.0)
    assert same[0] != same[1]


def _unit(*rows):
    v = np.asarray(rows, dtype=np.float64)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_another_camera_seeing_two_look_alikes_at_once_keeps_them_apart_in_this_one():
    # camera A: tracklets a0 (person p) and a1 (person q) at different times, alike (0.20);
    # camera B sees p and q at the same moment, each far closer to its A tracklet
    a = _unit([1, 0.3, 0, 0], [1, -0.15, 0, 0.2])
    b = _unit([1, 0.32, 0, 0], [1, -0.17, 0, 0.21], [0, 0, 1, 0])
    t = 1.0
    d_a = pairwise_distances(a)[0, 1]
    d_ab = pairwise_distances(a, b)
    assert np.diag(d_ab[:, :2]).max() < d_a < t  # the cross-camera matches are the closer
    both = (b, np.ones(3, bool), np.array([0.0, 0.0, 9.0]), np.array([5.0, 5.0, 10.0]))
    proxy = cannot_links_by_proxy(embeddings=a, valid=np.ones(2, bool), others=[both], threshold=t)
    assert proxy.toarray().tolist() == [[False, True], [True, False]]
    starts, ends = np.array([0.0, 10.0]), np.array([5.0, 15.0])
    assert stitch(embeddings=a, starts=starts, ends=ends, threshold=t).tolist() == [0, 0]
    kept = stitch(embeddings=a, starts=starts, ends=ends, threshold=t, cannot_link=proxy)
    assert kept.tolist() == [0, 1]
    # no evidence: B's two seen at different times, or its matches farther than the
    # threshold, or farther than the look-alikes are from each other
    apart = (b, np.ones(3, bool), np.array([0.0, 6.0, 9.0]), np.array([5.0, 8.0, 10.0]))
    for others, thr in (([apart], t), ([both], 1e-4)):
        none = cannot_links_by_proxy(
            embeddings=a, valid=np.ones(2, bool), others=others, threshold=thr
        )
        assert none.nnz == 0
    weak = _unit([1, 0.3, 0, 0], [1, 0.28, 0, 0.01])  # alike (far closer than to B)
    assert not cannot_links_by_proxy(
        embeddings=weak, valid=np.ones(2, bool), others=[both], threshold=t
    ).nnz
    # tracklets without an embedding are never marked; the dense form stitches the same
    none_valid = cannot_links_by_proxy(
        embeddings=a, valid=np.array([True, False]), others=[both], threshold=t
    )
    assert none_valid.nnz == 0
    dense = stitch(embeddings=a, starts=starts, ends=ends, threshold=t, cannot_link=proxy.toarray())
    assert dense.tolist() == [0, 1]


def test_impostor_threshold_is_a_quantile_of_overlapping_pairs():
    rng = np.random.default_rng(5)
    emb = rng.normal(size=(12, 8))
    starts = np.zeros(12)
    ends = np.ones(12)  # all overlap: 66 impostor pairs
    d = pairwise_distances(emb)[np.triu_indices(12, 1)]
    t = impostor_threshold(embeddings=emb, starts=starts, ends=ends, far=0.1)
    assert t == np.sort(d)[int(np.floor(0.1 * (d.size - 1)))]
    apart = impostor_threshold(
        embeddings=emb, starts=np.arange(12.0) * 2, ends=np.arange(12.0) * 2 + 1, far=0.1
    )
    assert apart is None  # no two tracklets at once: no impostor evidence
    pairs = impostor_distances(embeddings=emb, starts=starts, ends=ends)
    np.testing.assert_allclose(np.sort(pairs), np.sort(d), rtol=1e-6)
    assert impostor_quantile(pairs, 0.1) == t
    assert impostor_quantile(pairs[:9], 0.1) is None  # fewer than 10 pairs
    half = np.r_[np.zeros(6), np.full(6, 5.0)], np.r_[np.ones(6), np.full(6, 6.0)]
    assert impostor_distances(embeddings=emb, starts=half[0], ends=half[1]).size == 30


# --- the component split gives the clustering of all rows at once --------------------------


def _naive_average_linkage(d, blocked, threshold):
    """The reference: scan every pair of groups before each merge (O(n^3))."""
    n = d.shape[0]
    members = [[i] for i in range(n)]
    alive = list(range(n))
    dsum = np.where(np.isfinite(d), d, 0.0)
    block = blocked | ~np.isfinite(d)
    np.fill_diagonal(block, True)
    size = np.ones(n)
    while len(alive) > 1:
        a = np.asarray(alive)
        avg = np.where(block[np.ix_(a, a)], np.inf, dsum[np.ix_(a, a)] / np.outer(size[a], size[a]))
        i, j = divmod(int(np.argmin(avg)), len(alive))
        if not avg[i, j] <= threshold:
            break
        gi, gj = int(a[i]), int(a[j])
        members[gi] += members[gj]
        dsum[gi] += dsum[gj]
        dsum[:, gi] += dsum[:, gj]
        block[gi] |= block[gj]
        block[:, gi] |= block[:, gj]
        block[gi, gi] = True
        size[gi] += size[gj]
        alive.remove(gj)
    labels = np.empty(n, dtype=np.int64)
    for g, r in enumerate(sorted(alive, key=lambda r: min(members[r]))):
        labels[members[r]] = g
    return labels


def _dense_stitch(emb, starts, ends, threshold, valid, max_gap=None):
    """The reference: average linkage over the full matrix (every row in one problem)."""
    n = len(starts)
    d = np.full((n, n), np.inf)
    idx = np.flatnonzero(valid)
    d[np.ix_(idx, idx)] = pairwise_distances(emb[idx])
    blocked = overlaps(starts, ends)
    if max_gap is not None:
        gap = np.maximum(starts[:, None] - ends[None, :], starts[None, :] - ends[:, None])
        blocked |= gap > max_gap
    return _naive_average_linkage(d, blocked, threshold)


def _dense_link(cams, emb, threshold, valid):
    from abdnet.tracking.linking import _assign_two

    names = sorted(set(cams))
    cam_idx = np.asarray([names.index(c) for c in cams])
    n = len(cams)
    d = np.full((n, n), np.inf)
    idx = np.flatnonzero(valid)
    d[np.ix_(idx, idx)] = pairwise_distances(emb[idx])
    if len(names) == 2:
        return _assign_two(d, cam_idx, threshold, np.ones(len(cam_idx)))
    same = cam_idx[:, None] == cam_idx[None, :]
    return _naive_average_linkage(d, same, threshold)


def _canonical(labels):
    """Labels renumbered by each group's first row (a partition's one spelling)."""
    _, first = np.unique(labels, return_index=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[np.unique(labels, return_inverse=True)[1]]


def _scene(n, people, seed, dim=8, noise=0.5):
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(people, dim))
    emb = centre[rng.integers(people, size=n)] + rng.normal(scale=noise, size=(n, dim))
    starts = rng.uniform(0, 100, n)
    ends = starts + rng.uniform(1, 15, n)
    valid = rng.random(n) > 0.05
    return emb, starts, ends, valid


def test_stitching_by_components_equals_one_clustering_of_all_rows():
    for seed in range(6):
        emb, starts, ends, valid = _scene(150, 30, seed)
        for threshold in (0.3, 0.8, 1.5, 3.0):  # from many small components to one large
            for gap in (None, 20.0):
                got = stitch(
                    embeddings=emb,
                    starts=starts,
                    ends=ends,
                    threshold=threshold,
                    valid=valid,
                    max_gap=gap,
                )
                ref = _dense_stitch(emb, starts, ends, threshold, valid, gap)
                np.testing.assert_array_equal(got, _canonical(ref))
        assert 1 < len(set(got.tolist())) < len(got)


def test_linking_by_components_equals_one_clustering_of_all_rows():
    for seed in range(6):
        for n_cams in (2, 5):
            emb, _, _, valid = _scene(120, 25, seed)
            cams = [f"c{k}" for k in np.random.default_rng(seed).integers(n_cams, size=120)]
            for threshold in (0.3, 0.8, 1.5, 3.0):
                got = link_cameras(cameras=cams, embeddings=emb, threshold=threshold, valid=valid)
                ref = _dense_link(cams, emb, threshold, valid)
                np.testing.assert_array_equal(got, _canonical(ref))
            assert 1 < len(set(got.tolist())) < len(got)


def test_proxy_cannot_links_in_row_blocks_equal_the_rule_pair_by_pair(monkeypatch):
    import abdnet.tracking.linking as linking

    monkeypatch.setattr(linking, "_CHUNK", 7)  # many blocks, ragged last one
    for seed in range(4):
        emb, _, _, valid = _scene(40, 12, seed, noise=0.8)
        o_emb, o_starts, o_ends, o_valid = _scene(30, 12, seed + 10, noise=0.8)
        o_valid = o_valid & (np.arange(30) % 5 != 0)
        for t in (0.8, 2.0, 4.0):
            got = cannot_links_by_proxy(
                embeddings=emb, valid=valid,
                others=[(o_emb, o_valid, o_starts, o_ends)], threshold=t,
            ).toarray()  # fmt: skip
            ref = np.zeros((40, 40), dtype=bool)
            d_o = pairwise_distances(emb, o_emb)
            d_o[:, ~o_valid] = np.inf
            d = pairwise_distances(emb)
            for i in range(40):
                for j in range(40):
                    if i == j or not (valid[i] and valid[j]):
                        continue
                    x, y = int(np.argmin(d_o[i])), int(np.argmin(d_o[j]))
                    together = o_starts[x] <= o_ends[y] and o_starts[y] <= o_ends[x]
                    ref[i, j] = (
                        x != y and together and max(d_o[i, x], d_o[j, y]) <= t
                        and max(d_o[i, x], d_o[j, y]) < d[i, j]
                    )  # fmt: skip
            np.testing.assert_array_equal(got, ref)
        assert ref.any()
