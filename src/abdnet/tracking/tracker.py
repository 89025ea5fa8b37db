"""Tracking inside one camera: a small protocol and thin adapters over maintained libraries.

``Tracker.update(detections, frame) -> Tracks`` is called once per frame, in order. The
default adapter wraps Roboflow's ``trackers`` package (Apache-2.0: SORT, ByteTrack,
OC-SORT, BoT-SORT); the motion model, the association and the track life cycle are the
library's. BoxMOT (AGPL-3.0) appearance trackers, with ABD-Net as their re-ID model, are
built by :class:`abdnet.tracking.boxmot_reid.BoxmotTracker` (the pipeline picks it by name,
``boxmot:botsort`` ...); boxmot is imported only then.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = [
    "Detections",
    "Tracks",
    "Tracker",
    "TRACKERS",
    "DEFAULT_TRACKER",
    "RoboflowTracker",
    "build_tracker",
]

# name -> class name in Roboflow's ``trackers``
TRACKERS: dict[str, str] = {
    "bytetrack": "ByteTrackTracker",
    "sort": "SORTTracker",
    "ocsort": "OCSORTTracker",
    "botsort": "BoTSORTTracker",
}
# SORT: on development footage of unseen people (docs/tracking.md) it switched identities
# at crossings far less often than ByteTrack, whose second association with low-confidence
# boxes carries a track over to the person in front. A track broken at a crossing is
# stitched back by re-ID; a track that swapped people cannot be repaired.
DEFAULT_TRACKER = "sort"
SORT_MIN_IOU = 0.1  # abdnet's default for SORT's minimum_iou_threshold (see RoboflowTracker)


@dataclass
class Detections:
    """One frame's detections: ``boxes`` ``(N, 4)`` ``x0, y0, x1, y1`` pixels, ``scores`` (N,)."""

    boxes: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if self.scores.shape[0] != self.boxes.shape[0]:
            raise ValueError(f"{self.boxes.shape[0]} boxes but {self.scores.shape[0]} scores")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


@dataclass
class Tracks:
    """The tracked detections of one frame: ``ids`` (M,) per-camera track ids (>= 0),
    ``index`` (M,) the position of each in the frame's :class:`Detections`."""

    ids: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.shape[0])


class Tracker(Protocol):
    """Per-camera multi-object tracker, fed one frame at a time in order."""

    def update(
        self, detections: Detections, frame: np.ndarray | None = None, *, time: float
    ) -> Tracks: ...


@dataclass
class RoboflowTracker:
    """A tracker of Roboflow's ``trackers`` package behind :class:`Tracker`.

    ``name`` one of :data:`TRACKERS`; ``params`` go to its constructor as given (its own
    defaults otherwise, except ``minimum_consecutive_frames=1``: a track is reported from its
    second frame on, its first box stays untracked; and SORT's ``minimum_iou_threshold``
    :data:`SORT_MIN_IOU`).
    Frames go to the tracker only when it uses them (BoT-SORT's camera-motion
    compensation).
    """

    name: str = DEFAULT_TRACKER
    frame_rate: float = 30.0
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in TRACKERS:
            raise ValueError(f"tracker {self.name!r}: expected one of {sorted(TRACKERS)}")
        import trackers

        cls = getattr(trackers, TRACKERS[self.name])
        kwargs = {"frame_rate": self.frame_rate, **self.params}
        if self.name in ("bytetrack", "sort", "ocsort", "botsort"):
            kwargs.setdefault("minimum_consecutive_frames", 1)
        if self.name == "sort":
            # SORT's own IoU gate (0.3) drops people who move more than about a third of
            # their width between frames (small or fast walkers, low frame rates); 0.1 is
            # the gate of ByteTrack's first association
            kwargs.setdefault("minimum_iou_threshold", SORT_MIN_IOU)
        try:
            self._tracker = cls(**kwargs)
        except TypeError as exc:
            raise ValueError(f"tracker {self.name}: {exc}") from None
        self._uses_frame = self.name == "botsort"

    def update(
        self, detections: Detections, frame: np.ndarray | None = None, *, time: float
    ) -> Tracks:
        import supervision as sv

        n = len(detections)
        dets = sv.Detections(
            xyxy=detections.boxes.astype(np.float32).reshape(n, 4),
            confidence=detections.scores.astype(np.float32),
            data={"index": np.arange(n)},
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = self._tracker.update(
                dets, frame if self._uses_frame else None, timestamp=float(time)
            )
        if len(out) == 0:
            return Tracks(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        ids = np.asarray(out.tracker_id, dtype=np.int64)
        index = np.asarray(out.data["index"], dtype=np.int64)
        keep = ids >= 0
        return Tracks(ids[keep], index[keep])


def build_tracker(name: str = DEFAULT_TRACKER, *, frame_rate: float, **params: Any) -> Tracker:
    """The tracker called ``name``: one of :data:`TRACKERS` (Roboflow ``trackers``)."""
    return RoboflowTracker(name=name, frame_rate=frame_rate, params=dict(params))
