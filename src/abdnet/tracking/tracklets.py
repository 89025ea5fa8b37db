"""Tracklets of one camera and the few crops of each that are worth embedding.

:class:`TrackletBuilder` is fed each frame's tracked boxes (streaming); per track it keeps
the frames, boxes, scores and times, and a bounded pool of candidate crops ranked by
:func:`crop_quality` (detection confidence x visibility x size x not cut by the frame edge).
:func:`choose_crops` then picks a few of them spread over the track's time span.
:func:`pool_embeddings` turns the crops' embeddings into the tracklet's.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

from abdnet.gallery.images import DEFAULT_MIN_SIDE
from abdnet.tracking.interpolate import touches_border

__all__ = [
    "Crop",
    "Tracklet",
    "TrackletBuilder",
    "crop_quality",
    "visibility",
    "choose_crops",
    "pool_embeddings",
]


@dataclass
class Crop:
    frame: int
    box: np.ndarray  # (4,) x0, y0, x1, y1 in frame pixels
    quality: float
    image: np.ndarray | None = None  # (h, w, 3) uint8 RGB, cut from the frame
    embedding: np.ndarray | None = None  # (D,) in the embedder's space, once embedded


@dataclass
class Tracklet:
    """One track of one camera (the tracker's id), with its chosen crops.

    ``key`` is unique over all cameras (``camera/track``); ``embedding`` the pooled,
    L2-normalized embedding of its crops (None until embedded, or when it has no crop).
    """

    camera: str
    track: int
    frames: np.ndarray  # (L,) int64, increasing
    boxes: np.ndarray  # (L, 4) x0, y0, x1, y1
    scores: np.ndarray  # (L,)
    times: np.ndarray  # (L,) seconds on the camera's clock
    crops: list[Crop] = field(default_factory=list)
    embedding: np.ndarray | None = None

    @property
    def key(self) -> str:
        return f"{self.camera}/{self.track}"

    @property
    def start(self) -> float:
        return float(self.times[0])

    @property
    def end(self) -> float:
        return float(self.times[-1])

    def __len__(self) -> int:
        return int(self.frames.shape[0])


def visibility(boxes: np.ndarray) -> np.ndarray:
    """Per box, the share of its area not covered by boxes in front of it (a box whose
    bottom edge is lower in the image is nearer the camera). ``boxes`` ``(N, 4)`` xyxy."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = b.shape[0]
    if n < 2:
        return np.ones(n)
    area = np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)
    vis = np.ones(n)
    for i in range(n):
        front = b[:, 3] > b[i, 3]
        if not front.any():
            continue
        f = b[front]
        # union of the front boxes' intersections with box i, on a coarse grid
        x0 = np.clip(f[:, 0], b[i, 0], b[i, 2])
        x1 = np.clip(f[:, 2], b[i, 0], b[i, 2])
        y0 = np.clip(f[:, 1], b[i, 1], b[i, 3])
        y1 = np.clip(f[:, 3], b[i, 1], b[i, 3])
        if area[i] <= 0:
            vis[i] = 0.0
            continue
        gx = np.linspace(b[i, 0], b[i, 2], 17)[:-1] + (b[i, 2] - b[i, 0]) / 32
        gy = np.linspace(b[i, 1], b[i, 3], 33)[:-1] + (b[i, 3] - b[i, 1]) / 64
        covered = np.zeros((gy.size, gx.size), dtype=bool)
        for k in range(f.shape[0]):
            covered |= (
                (gy[:, None] >= y0[k])
                & (gy[:, None] < y1[k])
                & ((gx[None, :] >= x0[k]) & (gx[None, :] < x1[k]))
            )
        vis[i] = 1.0 - covered.mean()
    return vis


def crop_quality(
    boxes: np.ndarray,
    scores: np.ndarray,
    *,
    frame_size: tuple[int, int],
    input_height: int,
    visible: np.ndarray | None = None,
) -> np.ndarray:
    """How good each box is as a re-ID crop, in [0, 1]: confidence x visibility x size
    (box height over the model's input height, capped at 1) x 0.5 when the box touches the
    frame edge (the person is cut). ``frame_size`` is ``(width, height)``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    vis = visibility(b) if visible is None else visible
    size = np.clip((b[:, 3] - b[:, 1]) / float(input_height), 0.0, 1.0)
    edge = touches_border(b, frame_size, margin=1.0)
    conf = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    return conf * vis * size * np.where(edge, 0.5, 1.0)


def choose_crops(crops: list[Crop], k: int) -> list[Crop]:
    """Up to ``k`` of ``crops``: the best first, then each next-best one that lies at least
    a ``span / (2k)`` frames from those chosen (spread over the track), then the rest by
    quality. Returned in frame order."""
    if len(crops) <= k:
        return sorted(crops, key=lambda c: c.frame)
    ranked = sorted(crops, key=lambda c: (-c.quality, c.frame))
    frames = [c.frame for c in crops]
    spacing = (max(frames) - min(frames)) / (2 * k)
    chosen: list[Crop] = []
    for c in ranked:
        if len(chosen) == k:
            break
        if all(abs(c.frame - d.frame) >= spacing for d in chosen):
            chosen.append(c)
    for c in ranked:
        if len(chosen) == k:
            break
        if c not in chosen:
            chosen.append(c)
    return sorted(chosen, key=lambda c: c.frame)


def pool_embeddings(
    embeddings: np.ndarray, weights: np.ndarray | None = None, *, normalized: bool = True
) -> np.ndarray:
    """The (weighted) mean of ``embeddings`` ``(N, D)``; with ``normalized`` (a space of unit
    vectors) the mean of the unit vectors, L2-normalized again."""
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] == 0:
        raise ValueError(f"pool_embeddings: expected (N>0, D) embeddings, got shape {e.shape}")
    if normalized:
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    w = np.ones(e.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    m = (w[:, None] * e).sum(0) / max(w.sum(), 1e-12)
    if normalized:
        m = m / max(np.linalg.norm(m), 1e-12)
    return m.astype(np.float32)


@dataclass
class _Open:
    frames: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    pool: list[tuple[float, int, Crop]] = field(default_factory=list)  # min-heap by quality


class TrackletBuilder:
    """Collects one camera's tracked boxes frame by frame into :class:`Tracklet` objects.

    Per track, at most ``pool`` candidate crops are cut (the best by quality so far); crops
    of quality below ``min_quality``, or less than the gallery's minimum side
    (:data:`abdnet.gallery.images.DEFAULT_MIN_SIDE` pixels) wide or high, are never cut.
    ``finish`` chooses ``crops`` of them per tracklet (:func:`choose_crops`).
    """

    def __init__(
        self,
        camera: str,
        *,
        input_height: int,
        crops: int = 6,
        pool: int = 24,
        min_quality: float = 0.05,
    ) -> None:
        if crops < 1 or pool < crops:
            raise ValueError(f"crops must be >= 1 and pool >= crops, got {crops}, {pool}")
        self.camera = camera
        self.input_height = int(input_height)
        self.crops = int(crops)
        self.pool = int(pool)
        self.min_quality = float(min_quality)
        self._open: dict[int, _Open] = {}
        self._counter = 0

    def add(
        self,
        *,
        frame: int,
        time: float,
        image: np.ndarray | None,
        ids: np.ndarray,
        boxes: np.ndarray,
        scores: np.ndarray,
        all_boxes: np.ndarray | None = None,
    ) -> None:
        """One frame's tracks: ``ids`` (M,), ``boxes`` (M, 4) xyxy, ``scores`` (M,).
        ``all_boxes`` (every detection of the frame) decide visibility; ``image`` (the RGB
        frame) is what crops are cut from (None: no crops)."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if image is not None and len(ids):
            h, w = image.shape[:2]
            context = boxes if all_boxes is None else np.asarray(all_boxes).reshape(-1, 4)
            vis_all = visibility(np.concatenate([boxes, context]))[: len(ids)]
            q = crop_quality(
                boxes, scores, frame_size=(w, h), input_height=self.input_height, visible=vis_all
            )
        else:
            q = np.zeros(len(ids))
        for i, tid in enumerate(np.asarray(ids).tolist()):
            t = self._open.setdefault(int(tid), _Open())
            t.frames.append(int(frame))
            t.boxes.append(boxes[i])
            t.scores.append(float(scores[i]))
            t.times.append(float(time))
            if image is None or q[i] < self.min_quality:
                continue
            if len(t.pool) >= self.pool and q[i] <= t.pool[0][0]:
                continue
            x0, y0, x1, y1 = np.round(boxes[i]).astype(int)
            if min(x1 - x0, y1 - y0) < DEFAULT_MIN_SIDE:
                continue  # a sliver at the frame edge: the gallery refuses it as a person crop
            crop = Crop(int(frame), boxes[i].copy(), float(q[i]), image[y0:y1, x0:x1].copy())
            self._counter += 1
            item = (float(q[i]), self._counter, crop)
            if len(t.pool) >= self.pool:
                heapq.heapreplace(t.pool, item)
            else:
                heapq.heappush(t.pool, item)

    def finish(self) -> list[Tracklet]:
        """The tracklets, ordered by start frame then track id."""
        out = []
        for tid, t in self._open.items():
            crops = choose_crops([c for _, _, c in t.pool], self.crops)
            out.append(
                Tracklet(
                    camera=self.camera,
                    track=tid,
                    frames=np.asarray(t.frames, dtype=np.int64),
                    boxes=np.asarray(t.boxes, dtype=np.float64).reshape(-1, 4),
                    scores=np.asarray(t.scores, dtype=np.float64),
                    times=np.asarray(t.times, dtype=np.float64),
                    crops=crops,
                )
            )
        out.sort(key=lambda t: (int(t.frames[0]), t.track))
        return out
