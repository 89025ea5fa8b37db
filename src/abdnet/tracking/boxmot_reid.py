"""ABD-Net as BoxMOT's appearance model.

BoxMOT (AGPL-3.0) is never a dependency of abdnet and this module never imports it. Its
appearance trackers (BoT-SORT, StrongSORT, DeepOC-SORT, ...) take an injected re-ID object
with ``get_features(boxes_xyxy, image_bgr) -> (N, D)``: :class:`AbdnetReID` is that object,
built on the run's one :class:`abdnet.engine.Embedder` (its transform, batching, flip and
space), so a user who installed BoxMOT passes ``reid_model=AbdnetReID(embedder)`` to one of
its trackers. :class:`BoxmotTracker` does that for abdnet's own pipeline: a BoxMOT
appearance tracker behind :class:`abdnet.tracking.tracker.Tracker`, importing ``boxmot``
only when it is built (``abdnet track --tracker boxmot:botsort``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from abdnet.engine import Embedder
from abdnet.tracking.tracker import Detections, Tracks

__all__ = ["AbdnetReID", "BoxmotTracker", "BOXMOT_TRACKERS"]

# abdnet name -> BoxMOT class: its trackers that take an injected appearance model
BOXMOT_TRACKERS: dict[str, str] = {
    "boxmot:botsort": "BotSort",
    "boxmot:strongsort": "StrongSort",
    "boxmot:deepocsort": "DeepOcSort",
}


class AbdnetReID:
    """``get_features(boxes_xyxy (N, 4), image_bgr (H, W, 3) uint8) -> (N, D) float32``: the
    embeddings of the N crops, in the embedder's space, one row per box in order.

    BoxMOT needs a row for every box: a box is clipped to the frame and widened to at least
    one pixel, so a box at or past the edge still gets the embedding of its nearest pixels.
    """

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    @property
    def dim(self) -> int:
        return int(self.embedder.space.dim)

    def get_features(self, boxes_xyxy: np.ndarray, image_bgr: np.ndarray) -> np.ndarray:
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        if not len(boxes):
            return np.zeros((0, self.dim), dtype=np.float32)
        image = np.asarray(image_bgr)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"get_features: expected an (H, W, 3) uint8 BGR image, got shape "
                f"{image.shape} dtype {image.dtype}"
            )
        h, w = image.shape[:2]
        x0 = np.clip(np.floor(boxes[:, 0]), 0, w - 1)
        y0 = np.clip(np.floor(boxes[:, 1]), 0, h - 1)
        x1 = np.clip(np.ceil(boxes[:, 2]), x0 + 1, w)
        y1 = np.clip(np.ceil(boxes[:, 3]), y0 + 1, h)
        rgb = np.ascontiguousarray(image[:, :, ::-1])  # BoxMOT frames are OpenCV's BGR
        feats = self.embedder((rgb, np.stack([x0, y0, x1, y1], axis=1)))  # (N, D)
        return feats.numpy().astype(np.float32, copy=False)


class BoxmotTracker:
    """A BoxMOT appearance tracker (one of :data:`BOXMOT_TRACKERS`) with ABD-Net as its
    re-ID model, fed abdnet's :class:`Detections` and RGB frames; ``params`` go to its
    constructor. Raises a one-line ``ValueError`` when BoxMOT is not installed."""

    def __init__(
        self,
        name: str,
        *,
        embedder: Embedder,
        frame_rate: float = 30.0,
        params: dict[str, Any] | None = None,
    ) -> None:
        if name not in BOXMOT_TRACKERS:
            raise ValueError(f"tracker {name!r}: expected one of {sorted(BOXMOT_TRACKERS)}")
        try:
            import boxmot
        except ImportError:
            raise ValueError(
                f"--tracker {name} needs BoxMOT, which abdnet does not install (it is "
                "AGPL-3.0): 'pip install boxmot', or use a tracker of Roboflow's trackers"
            ) from None
        cls = getattr(boxmot, BOXMOT_TRACKERS[name])
        kwargs: dict[str, Any] = {"reid_model": AbdnetReID(embedder), **(params or {})}
        if name == "boxmot:botsort":
            kwargs.setdefault("frame_rate", int(round(frame_rate)))
            kwargs.setdefault("use_cmc", False)  # camera motion compensation: fixed cameras
        try:
            self._tracker = cls(**kwargs)
        except TypeError as exc:
            raise ValueError(f"tracker {name}: {exc}") from None
        self.name = name

    def update(
        self, detections: Detections, frame: np.ndarray | None = None, *, time: float
    ) -> Tracks:
        if frame is None:
            raise ValueError(f"tracker {self.name}: needs the frame (its re-ID model crops it)")
        n = len(detections)
        dets = np.zeros((n, 6), dtype=np.float32)  # x0, y0, x1, y1, conf, class
        dets[:, :4] = detections.boxes
        dets[:, 4] = detections.scores
        out = np.asarray(self._tracker.update(dets, np.ascontiguousarray(frame[:, :, ::-1])))
        if out.size == 0:
            return Tracks(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        out = out.reshape(len(out), -1)  # x0, y0, x1, y1, id, conf, class, detection index
        return Tracks(out[:, 4].astype(np.int64), out[:, 7].astype(np.int64))
