"""Filling the frames where a person was hidden: linear interpolation of one identity's boxes
across short gaps inside one camera.

A tracker reports a person only on frames with a matched detection; while someone walks
behind another person the detector misses them and the track (or, after stitching, the
identity) has a gap. Ground truth keeps annotating occluded people, so the gap costs recall
and IDF1. Interpolating boxes across short gaps is the usual post-processing of
tracking-by-detection results (e.g. ByteTrack's and StrongSORT's MOTChallenge
submissions). A gap is filled only when it is at most ``max_gap`` frames long and neither
box at its ends touches the frame border: a person whose box reached the border has most
likely left the view, and interpolating across their absence would invent boxes where
nobody is.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fill_gaps", "touches_border"]


def touches_border(
    boxes: np.ndarray, frame_size: tuple[int, int], margin: float = 2.0
) -> np.ndarray:
    """Per ``x0, y0, x1, y1`` box, whether it lies within ``margin`` pixels of the border
    of a ``(width, height)`` frame."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w, h = frame_size
    return (
        (b[:, 0] <= margin)
        | (b[:, 1] <= margin)
        | (b[:, 2] >= w - margin)
        | (b[:, 3] >= h - margin)
    )


def fill_gaps(
    frames: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    *,
    max_gap: int,
    frame_size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One identity's boxes in one camera with its short gaps filled.

    ``frames`` (N,) strictly increasing, ``boxes`` (N, 4) ``x0, y0, x1, y1``, ``scores``
    (N,). A gap of ``g`` missing frames between two reported frames is filled when
    ``1 <= g <= max_gap`` and neither end box touches the border; the new boxes lie on the
    straight line between the two ends and take the smaller of their two scores. Returns
    ``(frames, boxes, scores, filled)``, sorted by frame, ``filled`` True for new rows.
    """
    f = np.asarray(frames, dtype=np.int64).reshape(-1)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not (f.shape[0] == b.shape[0] == s.shape[0]):
        raise ValueError(f"fill_gaps: {f.shape[0]} frames, {b.shape[0]} boxes, {s.shape[0]} scores")
    if f.size and np.any(np.diff(f) <= 0):
        raise ValueError("fill_gaps: frames must be strictly increasing (one box per frame)")
    keep = np.zeros(f.shape[0], dtype=bool)
    if max_gap < 1 or f.size < 2:
        return f, b, s, keep
    edge = touches_border(b, frame_size)
    step = np.diff(f)
    new_f, new_b, new_s = [], [], []
    for i in np.flatnonzero((step > 1) & (step - 1 <= max_gap)):
        if edge[i] or edge[i + 1]:
            continue
        g = int(step[i])
        t = np.arange(1, g, dtype=np.float64) / g
        new_f.append(f[i] + np.arange(1, g))
        new_b.append(b[i][None, :] * (1.0 - t[:, None]) + b[i + 1][None, :] * t[:, None])
        new_s.append(np.full(g - 1, min(s[i], s[i + 1])))
    if not new_f:
        return f, b, s, keep
    all_f = np.concatenate([f, *new_f])
    order = np.argsort(all_f, kind="stable")
    filled = np.concatenate([keep, np.ones(all_f.shape[0] - f.shape[0], dtype=bool)])
    return (
        all_f[order],
        np.concatenate([b, *new_b])[order],
        np.concatenate([s, *new_s])[order],
        filled[order],
    )
