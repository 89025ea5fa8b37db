"""Tracklet re-ID: stitching inside a camera and linking across cameras, on plain arrays.

Distances are those of the embedder's space (``distance``: its
:meth:`abdnet.engine.EmbeddingSpace.distances`), the scale its calibrated
:class:`abdnet.gallery.Threshold` is in; without one, squared Euclidean distances of
L2-normalized embeddings (``2 - 2 cos``, the default space). Two rules hold everywhere:

- two tracklets of one camera that overlap in time are two people (a cannot-link);
- the world is open: a tracklet or group whose nearest candidate is farther than the
  threshold stays alone.

:func:`stitch` groups one camera's tracklets (average linkage, cannot-links respected);
:func:`link_cameras` joins the groups of different cameras one-to-one (a person is one group
per camera): an optimal assignment for two cameras, average-linkage merging for more.
:func:`impostor_threshold` reads a camera's own impostor distances (tracklets seen at the
same moment) to cap the stitching threshold, since same-camera pairs look closer than the
cross-camera pairs a calibration measures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from abdnet.engine import EmbeddingSpace

__all__ = [
    "pairwise_distances",
    "overlaps",
    "stitch",
    "link_cameras",
    "impostor_threshold",
    "group_embeddings",
]


Distance = Callable[[np.ndarray, np.ndarray], object]


def _matrix(distance: Distance | None, x: np.ndarray) -> np.ndarray:
    if distance is None:
        return pairwise_distances(x)
    d = distance(x, x)
    d = d.numpy() if hasattr(d, "numpy") else np.asarray(d)
    return np.asarray(d, dtype=np.float64)


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


def _gaps(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    s, e = np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64)
    return np.maximum(np.maximum(s[:, None] - e[None, :], s[None, :] - e[:, None]), 0.0)


def stitch(
    *,
    embeddings: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    threshold: float,
    max_gap: float | None = None,
    valid: np.ndarray | None = None,
    distance: Distance | None = None,
) -> np.ndarray:
    """Group the tracklets of one camera into people; returns a label per tracklet (0..G-1).

    Groups merge closest first by average-linkage distance while it is ``<= threshold``;
    two groups never merge when any of their tracklets overlap in time, or (``max_gap``
    seconds) when the nearest pair of their tracklets is farther apart in time. Rows where
    ``valid`` is False (no embedding) stay alone.
    """
    n = int(np.asarray(starts).shape[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    valid = np.ones(n, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    d = np.full((n, n), np.inf)
    if valid.any():
        idx = np.flatnonzero(valid)
        d[np.ix_(idx, idx)] = _matrix(distance, np.asarray(embeddings)[idx])
    blocked = overlaps(starts, ends)
    gap = _gaps(starts, ends)
    if max_gap is not None:
        blocked |= gap > max_gap
    return _average_linkage(d, blocked, threshold, all_blocked=blocked)


def _average_linkage(
    d: np.ndarray, blocked: np.ndarray, threshold: float, *, all_blocked: np.ndarray
) -> np.ndarray:
    """Agglomerative clustering on ``d`` with cannot-links: a merge is refused when any
    member pair is ``all_blocked``."""
    n = d.shape[0]
    members: list[list[int]] = [[i] for i in range(n)]
    alive = list(range(n))
    # group-level sums of distances and cannot-link flags
    dsum = np.where(np.isfinite(d), d, 0.0).copy()
    inf_pair = ~np.isfinite(d)
    block = all_blocked.copy() | inf_pair
    np.fill_diagonal(block, True)
    size = np.ones(n)
    while len(alive) > 1:
        a_idx = np.asarray(alive)
        sub_block = block[np.ix_(a_idx, a_idx)]
        avg = dsum[np.ix_(a_idx, a_idx)] / np.outer(size[a_idx], size[a_idx])
        avg = np.where(sub_block, np.inf, avg)
        k = int(np.argmin(avg))
        i, j = divmod(k, len(alive))
        if not np.isfinite(avg[i, j]) or avg[i, j] > threshold:
            break
        gi, gj = int(a_idx[i]), int(a_idx[j])
        members[gi].extend(members[gj])
        members[gj] = []
        dsum[gi, :] += dsum[gj, :]
        dsum[:, gi] += dsum[:, gj]
        block[gi, :] |= block[gj, :]
        block[:, gi] |= block[:, gj]
        block[gi, gi] = True
        size[gi] += size[gj]
        alive.remove(gj)
    labels = np.empty(n, dtype=np.int64)
    for g, root in enumerate(sorted(alive, key=lambda r: min(members[r]))):
        labels[members[root]] = g
    return labels


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
) -> np.ndarray:
    """Global identity labels (0..P-1) for per-camera groups (one row per group).

    A person has at most one group per camera. With two cameras the groups are matched by
    an optimal one-to-one assignment (least total distance) over the pairs within
    ``threshold``; with more, identities merge closest first (average linkage) while no
    camera repeats. Groups left unmatched are identities of their own.
    """
    cams = list(cameras)
    n = len(cams)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    valid = np.ones(n, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    names = sorted(set(cams))
    cam_idx = np.asarray([names.index(c) for c in cams])
    d = np.full((n, n), np.inf)
    if valid.any():
        idx = np.flatnonzero(valid)
        d[np.ix_(idx, idx)] = _matrix(distance, np.asarray(embeddings)[idx])
    same_cam = cam_idx[:, None] == cam_idx[None, :]
    if len(names) == 2:
        return _assign_two(d, cam_idx, threshold)
    return _average_linkage(d, same_cam, threshold, all_blocked=same_cam)


def _assign_two(d: np.ndarray, cam_idx: np.ndarray, threshold: float) -> np.ndarray:
    a, b = np.flatnonzero(cam_idx == 0), np.flatnonzero(cam_idx == 1)
    n = d.shape[0]
    labels = -np.ones(n, dtype=np.int64)
    pairs: list[tuple[int, int]] = []
    if a.size and b.size:
        cost = d[np.ix_(a, b)]
        big = 1e6
        allowed = np.isfinite(cost) & (cost <= threshold)
        rows, cols = linear_sum_assignment(np.where(allowed, cost - big, 0.0))
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
    """The distance below which a share ``far`` of this camera's impostor pairs fall.

    Impostors are the pairs of tracklets that overlap in time (two people at once). None
    when fewer than ``min_pairs`` such pairs exist. With few pairs the quantile is the
    smallest impostor distance.
    """
    n = int(np.asarray(starts).shape[0])
    valid = np.ones(n, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    idx = np.flatnonzero(valid)
    if idx.size < 2:
        return None
    ov = overlaps(np.asarray(starts)[idx], np.asarray(ends)[idx])
    iu = np.triu_indices(idx.size, k=1)
    mask = ov[iu]
    if mask.sum() < min_pairs:
        return None
    dist = _matrix(distance, np.asarray(embeddings)[idx])[iu][mask]
    return float(np.quantile(dist, far, method="lower"))
