"""Tracklet re-ID: stitching inside a camera and linking across cameras, on plain arrays.

Distances are those of the embedder's space (``distance``: its
:meth:`abdnet.engine.EmbeddingSpace.distances`), the scale its calibrated
:class:`abdnet.gallery.Threshold` is in; without one, squared Euclidean distances of
L2-normalized embeddings (``2 - 2 cos``, the default space). Two rules hold everywhere:

- two tracklets of one camera that overlap in time are two people (a cannot-link);
- the world is open: a tracklet or group whose nearest candidate is farther than the
  threshold stays alone.

:func:`stitch` groups one camera's tracklets (average linkage, cannot-links respected);
:func:`attach_by_motion` gives a tracklet with nothing to embed (every box too small or cut
by the frame edge) the group of the tracklet it continues in time and place;
:func:`link_cameras` joins the groups of different cameras one-to-one (a person is one group
per camera): an optimal assignment for two cameras, average-linkage merging for more.
:func:`impostor_distances` reads a camera's own impostor distances (tracklets seen at the
same moment) and :func:`impostor_quantile` turns them into a cap on the stitching threshold,
since same-camera pairs look closer than the cross-camera pairs a calibration measures.

Both clusterings first split the tracklets into the connected components of the graph that
joins two tracklets when they may merge (not a cannot-link) and lie within the threshold;
distances for it are computed in row blocks, never as one ``(N, N)`` matrix. Average
linkage only merges groups with at least one such pair between them, and the one-to-one
assignment's objective adds up over components, so clustering each component on its own
gives exactly the result of clustering all rows at once, at the cost of the components'
sizes rather than of N (10,000 tracklets over 10 cameras take seconds).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components

from abdnet.engine import EmbeddingSpace

__all__ = [
    "pairwise_distances",
    "overlaps",
    "stitch",
    "attach_by_motion",
    "cannot_links_by_proxy",
    "link_cameras",
    "impostor_distances",
    "impostor_quantile",
    "impostor_threshold",
    "group_embeddings",
]


Distance = Callable[[np.ndarray, np.ndarray], object]
# (row indices (R,), column indices (C,)) -> (R, C) bool: the pairs that may never merge
Blocked = Callable[[np.ndarray, np.ndarray], np.ndarray]
_CHUNK = 1024  # rows per block of distances


def _distances(distance: Distance | None, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if distance is None:
        return pairwise_distances(a, b)
    d = distance(a, b)
    d = d.numpy() if hasattr(d, "numpy") else np.asarray(d)
    return np.asarray(d, dtype=np.float64)


def _matrix(distance: Distance | None, x: np.ndarray) -> np.ndarray:
    return _distances(distance, x, x)


def _components(
    x: np.ndarray,
    valid: np.ndarray,
    blocked: Blocked,
    threshold: float,
    distance: Distance | None,
) -> np.ndarray:
    """Component label per row of the graph joining valid, unblocked pairs within
    ``threshold``; distances computed ``_CHUNK`` rows at a time."""
    n = valid.shape[0]
    idx = np.flatnonzero(valid)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for s in range(0, idx.size, _CHUNK):
        r = idx[s : s + _CHUNK]
        d = _distances(distance, x[r], x[idx])  # (R, V)
        ok = np.isfinite(d) & (d <= threshold) & ~blocked(r, idx)
        ok &= r[:, None] != idx[None, :]
        i, j = np.nonzero(ok)
        rows.append(r[i])
        cols.append(idx[j])
    i = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    j = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(i.size, dtype=np.int8), (i, j)), shape=(n, n))
    return connected_components(graph.tocsr(), directed=False)[1]


def _by_component(comp: np.ndarray, solve: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Labels 0..G-1 numbered by each group's smallest row: singleton components are groups;
    ``solve(idx)`` returns the labels of the rows ``idx`` of a larger one."""
    n = comp.shape[0]
    first = np.arange(n)  # each row's group, named by its smallest member
    order = np.argsort(comp, kind="stable")
    bounds = np.flatnonzero(np.r_[True, comp[order][1:] != comp[order][:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        idx = order[a:b]  # ascending
        if idx.size < 2:
            continue
        sub = solve(idx)
        smallest = np.full(int(sub.max()) + 1, n)
        np.minimum.at(smallest, sub, idx)
        first[idx] = smallest[sub]
    _, labels = np.unique(first, return_inverse=True)
    return labels.astype(np.int64)


def pairwise_distances(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Distances of the rows of ``a`` and ``b`` in the default embedding space (squared
    Euclidean of L2-normalized vectors, in [0, 4]), by :class:`abdnet.engine.EmbeddingSpace`."""
    a = np.asarray(a, dtype=np.float64)
    b = a if b is None else np.asarray(b, dtype=np.float64)
    space = EmbeddingSpace(dim=a.shape[1])
    d = space.distances(space.project(a), space.project(b))
    return np.clip(np.asarray(d, dtype=np.float64), 0.0, 4.0)


def overlaps(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """``(N, N)`` bool: intervals ``[start, end]`` that share a moment (diagonal False)."""
    s, e = np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64)
    out = (s[:, None] <= e[None, :]) & (s[None, :] <= e[:, None])
    np.fill_diagonal(out, False)
    return out


#: Longest gap (seconds) between a tracklet with no embedding and the tracklet it continues
#: (:func:`attach_by_motion`): a tracker loses a box that shrinks at the frame edge within a
#: frame or two.
MOTION_GAP_SECONDS = 0.5
#: Largest distance between the two boxes' centres, in heights of the taller one.
MOTION_REACH = 0.75


def attach_by_motion(
    *,
    labels: np.ndarray,
    valid: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    first_boxes: np.ndarray,
    last_boxes: np.ndarray,
    max_gap: float = MOTION_GAP_SECONDS,
    reach: float = MOTION_REACH,
) -> np.ndarray:
    """Labels (0..G-1) after each tracklet where ``valid`` is False (no embedding: nothing
    for appearance to go on) joins the group of the valid tracklet of the same camera it
    continues: one that ends at most ``max_gap`` seconds before it starts, or starts at most
    ``max_gap`` seconds after it ends, with the facing boxes' centres at most ``reach``
    heights (of the taller box) apart; the nearest in time, then in place, among those whose
    group does not overlap it in time. With no such tracklet it stays alone.

    ``labels`` are :func:`stitch`'s; boxes are ``(N, 4)`` xyxy, the first and last box of
    each tracklet."""
    lab = np.asarray(labels, dtype=np.int64).copy()
    ok = np.asarray(valid, dtype=bool)
    s, e = np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64)
    first = np.asarray(first_boxes, dtype=np.float64).reshape(-1, 4)
    last = np.asarray(last_boxes, dtype=np.float64).reshape(-1, 4)

    def centre(b: np.ndarray) -> np.ndarray:
        return np.stack([(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2], axis=-1)

    def height(b: np.ndarray) -> np.ndarray:
        return np.maximum(b[..., 3] - b[..., 1], 1e-9)

    cand = np.flatnonzero(ok)
    if cand.size == 0:
        return lab
    for i in np.flatnonzero(~ok):
        # j before i (j's last box faces i's first) and j after i (i's last faces j's first)
        before_gap = s[i] - e[cand]
        after_gap = s[cand] - e[i]
        d_before = np.linalg.norm(centre(last[cand]) - centre(first[i]), axis=1) / np.maximum(
            height(last[cand]), height(first[i])
        )
        d_after = np.linalg.norm(centre(first[cand]) - centre(last[i]), axis=1) / np.maximum(
            height(first[cand]), height(last[i])
        )
        gap = np.where(before_gap > 0, before_gap, after_gap)
        dist = np.where(before_gap > 0, d_before, d_after)
        near = (gap > 0) & (gap <= max_gap) & (dist <= reach)
        best = None
        for k in sorted(np.flatnonzero(near), key=lambda k: (gap[k], dist[k])):
            members = np.flatnonzero(lab == lab[cand[k]])
            if not ((s[members] <= e[i]) & (s[i] <= e[members])).any():
                best = cand[k]
                break
        if best is not None:
            lab[i] = lab[best]
    return np.unique(lab, return_inverse=True)[1].astype(np.int64)


def cannot_links_by_proxy(
    *,
    embeddings: np.ndarray,
    valid: np.ndarray,
    others: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    threshold: float,
    distance: Distance | None = None,
) -> csr_matrix:
    """Pairs of one camera's ``N`` tracklets that another camera shows to be two people, as
    an ``(N, N)`` sparse bool matrix. ``others`` holds each other camera's ``(embeddings,
    valid, starts, ends)``.

    Tracklets ``i`` and ``j`` are marked when, in one other camera, their nearest tracklets
    ``x`` and ``y`` (each within ``threshold``) are seen at the same moment there (two
    people), and both cross-camera matches are closer than ``i`` and ``j`` are to each
    other: the other camera's evidence is then stronger than the look-alike pair's own.
    Distances are computed ``_CHUNK`` rows at a time, never as one ``(N, N)`` matrix.
    """
    emb = np.asarray(embeddings)
    ok = np.asarray(valid, dtype=bool)
    n = ok.shape[0]
    idx = np.flatnonzero(ok)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for o_emb, o_valid, o_starts, o_ends in others if idx.size >= 2 else ():
        o_idx = np.flatnonzero(np.asarray(o_valid, dtype=bool))
        if o_idx.size < 2:
            continue
        o_s = np.asarray(o_starts, dtype=np.float64)[o_idx]
        o_e = np.asarray(o_ends, dtype=np.float64)[o_idx]
        near = np.zeros(idx.size, dtype=np.int64)
        near_d = np.zeros(idx.size)
        for k in range(0, idx.size, _CHUNK):
            d = _distances(distance, emb[idx[k : k + _CHUNK]], np.asarray(o_emb)[o_idx])
            d = np.where(np.isfinite(d), d, np.inf)
            near[k : k + _CHUNK] = np.argmin(d, axis=1)
            near_d[k : k + _CHUNK] = d[np.arange(d.shape[0]), near[k : k + _CHUNK]]
        has = np.flatnonzero(near_d <= threshold)  # positions in idx with a match
        if has.size < 2:
            continue
        x, xd = near[has], near_d[has]
        for k in range(0, has.size, _CHUNK):
            r = slice(k, k + _CHUNK)
            own = _distances(distance, emb[idx[has[r]]], emb[idx[has]])
            at_once = (o_s[x[r]][:, None] <= o_e[x][None, :]) & (
                o_s[x][None, :] <= o_e[x[r]][:, None]
            )
            at_once &= x[r][:, None] != x[None, :]
            at_once &= np.maximum(xd[r][:, None], xd[None, :]) < own
            i, j = np.nonzero(at_once)
            rows.append(idx[has[r]][i])
            cols.append(idx[has][j])
    i = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    j = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    return coo_matrix((np.ones(i.size, dtype=bool), (i, j)), shape=(n, n)).tocsr()


def stitch(
    *,
    embeddings: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    threshold: float,
    max_gap: float | None = None,
    valid: np.ndarray | None = None,
    distance: Distance | None = None,
    cannot_link: csr_matrix | np.ndarray | None = None,
) -> np.ndarray:
    """Group the tracklets of one camera into people; returns a label per tracklet (0..G-1).

    Groups merge closest first by average-linkage distance while it is ``<= threshold``;
    two groups never merge when any of their tracklets overlap in time, when a pair of them
    is marked in ``cannot_link`` (``(N, N)`` bool, dense or sparse, e.g.
    :func:`cannot_links_by_proxy`), or
    (``max_gap`` seconds) when the nearest pair of their tracklets is farther apart in time.
    Rows where ``valid`` is False (no embedding) stay alone.
    """
    n = int(np.asarray(starts).shape[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    valid = np.ones(n, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    emb = np.asarray(embeddings)
    s = np.asarray(starts, dtype=np.float64)
    e = np.asarray(ends, dtype=np.float64)

    def blocked(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        out = (s[r][:, None] <= e[c][None, :]) & (s[c][None, :] <= e[r][:, None])
        if max_gap is not None:
            gap = np.maximum(s[r][:, None] - e[c][None, :], s[c][None, :] - e[r][:, None])
            out |= gap > max_gap
        if cannot_link is not None:
            extra = cannot_link[r][:, c]
            out |= extra.toarray() if hasattr(extra, "toarray") else extra
        return out & (r[:, None] != c[None, :])

    def solve(idx: np.ndarray) -> np.ndarray:
        b = blocked(idx, idx)
        return _average_linkage(_matrix(distance, emb[idx]), b, threshold, all_blocked=b)

    return _by_component(_components(emb, valid, blocked, threshold, distance), solve)


def _average_linkage(
    d: np.ndarray, blocked: np.ndarray, threshold: float, *, all_blocked: np.ndarray
) -> np.ndarray:
    """Agglomerative clustering on ``d`` with cannot-links: a merge is refused when any
    member pair is ``all_blocked``; labels numbered by each group's smallest row.

    Merges go closest pair first (average linkage: the mean of the member distances) while
    it is ``<= threshold``. Each group keeps its nearest mergeable group; a merge updates
    one row of the sums and recomputes only the rows whose nearest group was one of the
    two merged, so a merge costs O(n) instead of a scan of all pairs.
    """
    del blocked  # the cannot-links are all_blocked (kept for the callers' spelling)
    n = d.shape[0]
    finite = np.isfinite(d)
    dsum = np.where(finite, d, 0.0)  # (n, n) sums of member distances between groups
    block = all_blocked | ~finite  # (n, n) group pairs that may never merge
    np.fill_diagonal(block, True)
    size = np.ones(n)
    alive = np.ones(n, dtype=bool)
    root = np.arange(n)  # the group of each row

    def row(k: int) -> np.ndarray:
        r = dsum[k] / (size[k] * size)
        r[block[k] | ~alive] = np.inf
        return r

    avg = np.where(block, np.inf, dsum)  # sizes are 1
    nn = np.argmin(avg, axis=1)  # each group's nearest mergeable group
    nnd = avg[np.arange(n), nn]
    del avg
    while n > 1:
        i = int(np.argmin(nnd))
        if not np.isfinite(nnd[i]) or nnd[i] > threshold:
            break
        a, b = sorted((i, int(nn[i])))  # b merges into a, the smaller index
        dsum[a] += dsum[b]
        dsum[:, a] = dsum[a]
        block[a] |= block[b]
        block[:, a] = block[a]
        size[a] += size[b]
        alive[b] = False
        nnd[b] = np.inf
        root[root == b] = a
        r = row(a)
        nn[a] = int(np.argmin(r))
        nnd[a] = r[nn[a]]
        # a merged distance is a mean of two that were >= every other group's nearest, so
        # only groups whose nearest was a or b can have a new nearest
        stale = np.flatnonzero(alive & ((nn == a) | (nn == b)))
        for k in stale[stale != a].tolist():
            rk = row(k)
            nn[k] = int(np.argmin(rk))
            nnd[k] = rk[nn[k]]
    _, labels = np.unique(root, return_inverse=True)  # roots are each group's smallest row
    return labels.astype(np.int64)


def group_embeddings(
    embeddings: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    normalized: bool = True,
) -> np.ndarray:
    """``(G, D)``: per label, the weighted mean of its rows (of unit vectors, L2-normalized
    again, when ``normalized``)."""
    e = np.asarray(embeddings, dtype=np.float64)
    if normalized:
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    w = np.ones(e.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    g = int(labels.max()) + 1 if labels.size else 0
    out = np.zeros((g, e.shape[1]))
    np.add.at(out, labels, w[:, None] * e)
    if normalized:
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    total = np.zeros(g)
    np.add.at(total, labels, w)
    return out / np.maximum(total, 1e-12)[:, None]


def link_cameras(
    *,
    cameras: Sequence[str],
    embeddings: np.ndarray,
    threshold: float,
    valid: np.ndarray | None = None,
    distance: Distance | None = None,
    sizes: np.ndarray | None = None,
) -> np.ndarray:
    """Global identity labels (0..P-1) for per-camera groups (one row per group).

    A person has at most one group per camera. With two cameras the groups are matched by
    an optimal one-to-one assignment over the pairs within ``threshold``: the most pairs,
    and among those the largest sum over linked pairs of ``(threshold - distance) *
    sqrt(size_a * size_b)``, so a link's worth grows with its margin and with the evidence
    on both sides (``sizes``: e.g. each group's box count; all 1 when None). A short, noisy
    fragment then cannot take the partner of a long track that matches it almost as well.
    With more cameras, identities merge closest first (average linkage) while no camera
    repeats. Groups left unmatched are identities of their own.
    """
    cams = list(cameras)
    n = len(cams)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    valid = np.ones(n, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    size = np.ones(n) if sizes is None else np.asarray(sizes, dtype=np.float64)
    if size.shape != (n,) or not np.all(size > 0):
        raise ValueError(f"sizes: expected {n} positive numbers, got {size.tolist()}")
    names = sorted(set(cams))
    cam_idx = np.asarray([names.index(c) for c in cams])
    emb = np.asarray(embeddings)

    def blocked(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return cam_idx[r][:, None] == cam_idx[c][None, :]

    def solve(idx: np.ndarray) -> np.ndarray:
        d = _matrix(distance, emb[idx])
        if len(names) == 2:
            return _assign_two(d, cam_idx[idx], threshold, size[idx])
        same = blocked(idx, idx)
        return _average_linkage(d, same, threshold, all_blocked=same)

    return _by_component(_components(emb, valid, blocked, threshold, distance), solve)


def _assign_two(
    d: np.ndarray, cam_idx: np.ndarray, threshold: float, size: np.ndarray
) -> np.ndarray:
    a, b = np.flatnonzero(cam_idx == 0), np.flatnonzero(cam_idx == 1)
    n = d.shape[0]
    labels = -np.ones(n, dtype=np.int64)
    pairs: list[tuple[int, int]] = []
    if a.size and b.size:
        cost = d[np.ix_(a, b)]
        allowed = np.isfinite(cost) & (cost <= threshold)
        weight = np.sqrt(size[a][:, None] * size[b][None, :])
        # lexicographic: the most pairs first (each allowed pair is worth 1), then the
        # largest sum of margin x evidence, scaled so that all of it together stays below 1
        margin = np.where(allowed, (threshold - np.where(allowed, cost, threshold)) * weight, 0.0)
        worth = np.where(allowed, 1.0 + margin / (2.0 * margin.sum() + 1e-300), 0.0)
        rows, cols = linear_sum_assignment(-worth)
        pairs = [(int(a[r]), int(b[c])) for r, c in zip(rows, cols) if allowed[r, c]]
    next_label = 0
    partner = {i: j for i, j in pairs}
    for i in range(n):
        if labels[i] >= 0:
            continue
        labels[i] = next_label
        if i in partner:
            labels[partner[i]] = next_label
        next_label += 1
    return labels


def impostor_distances(
    *,
    embeddings: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    valid: np.ndarray | None = None,
    distance: Distance | None = None,
) -> np.ndarray:
    """The distances of this camera's impostor pairs: the pairs of (valid) tracklets that
    overlap in time, two people seen at once."""
    n = int(np.asarray(starts).shape[0])
    valid = np.ones(n, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    idx = np.flatnonzero(valid)
    if idx.size < 2:
        return np.zeros(0)
    ov = overlaps(np.asarray(starts)[idx], np.asarray(ends)[idx])
    iu = np.triu_indices(idx.size, k=1)
    mask = ov[iu]
    if not mask.any():
        return np.zeros(0)
    return np.asarray(_matrix(distance, np.asarray(embeddings)[idx])[iu][mask], dtype=np.float64)


def impostor_quantile(distances: np.ndarray, far: float, *, min_pairs: int = 10) -> float | None:
    """The distance below which a share ``far`` of the impostor ``distances`` fall; None
    with fewer than ``min_pairs`` of them. With few pairs the quantile is the smallest."""
    d = np.asarray(distances, dtype=np.float64).reshape(-1)
    if d.size < min_pairs:
        return None
    return float(np.quantile(d, far, method="lower"))


def impostor_threshold(
    *,
    embeddings: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    far: float,
    valid: np.ndarray | None = None,
    min_pairs: int = 10,
    distance: Distance | None = None,
) -> float | None:
    """The distance below which a share ``far`` of this camera's impostor pairs
    (:func:`impostor_distances`) fall; None when fewer than ``min_pairs`` such pairs exist."""
    d = impostor_distances(
        embeddings=embeddings, starts=starts, ends=ends, valid=valid, distance=distance
    )
    return impostor_quantile(d, far, min_pairs=min_pairs)
