"""ABD-Net as BoxMOT's appearance model.

BoxMOT (AGPL-3.0) is never a dependency of abdnet and this module never imports it. Its
appearance trackers (BoT-SORT, StrongSORT, DeepOC-SORT, ...) take an injected re-ID object
with ``get_features(boxes_xyxy, image_bgr) -> (N, D)``: :class:`AbdnetReID` is that object,
built on the run's one :class:`abdnet.engine.Embedder` (its transform, batching, flip and
space), so a user who installed BoxMOT passes ``reid_model=AbdnetReID(embedder)`` to one of
its trackers.
"""

from __future__ import annotations

import numpy as np

from abdnet.engine import Embedder

__all__ = ["AbdnetReID"]


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
