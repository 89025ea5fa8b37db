"""Video re-ID data: a tracklet (one person's frames in one camera) is the unit of a split.

``TrackletRecord`` holds a tracklet's frame paths (in order), its pid and its 0-based
camera; ``TrackletDataset`` holds the train / query / gallery tracklets of a video data set
(MARS, DukeMTMC-VideoReID, iLIDS-VID, PRID2011; parsed by ``video_parsers.py``). The
conventions are those of the image data sets (``dataset.py``): training pids relabelled
0..N-1 (``pid_map``), query and gallery pids as the data set writes them, junk (pid -1)
dropped by the parsers, queries without a cross-camera gallery tracklet of their identity
a warning (the evaluation skips them).

Frame files are listed (their existence is checked when the data set is parsed) but not
opened: MARS alone has over a million frames. An unreadable frame is an
``ImageReadError`` naming it when the evaluation reads it.

``sample_frames`` chooses the frames of a tracklet the evaluation embeds: all of them, or
``k`` spread evenly over it (torchreid's "all" and "evenly" test samplers).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .dataset import DatasetError, relabel, unmatched_queries

__all__ = ["TrackletRecord", "TrackletDataset", "make_tracklet_dataset", "sample_frames"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackletRecord:
    """One tracklet: its frame files in order, its identity and its 0-based camera."""

    paths: tuple[str, ...]
    pid: int
    camid: int

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class TrackletDataset:
    """A parsed video re-ID data set: train / query / gallery tracklets."""

    name: str
    root: str
    train: list[TrackletRecord]
    query: list[TrackletRecord]
    gallery: list[TrackletRecord]
    pid_map: dict[int, int]  # original training pid -> label 0..N-1
    unmatched_queries: list[TrackletRecord] = field(default_factory=list)

    @property
    def num_train_pids(self) -> int:
        return len(self.pid_map)

    def split_counts(self) -> dict[str, tuple[int, int, int, int]]:
        """``split -> (tracklets, frames, identities, cameras)``."""
        return {
            name: (
                len(recs),
                sum(len(r) for r in recs),
                len({r.pid for r in recs}),
                len({r.camid for r in recs}),
            )
            for name, recs in (
                ("train", self.train),
                ("query", self.query),
                ("gallery", self.gallery),
            )
        }

    def summary(self) -> str:
        """A small table of tracklet / frame / identity / camera counts per split."""
        lines = [
            f"dataset {self.name} ({self.root})",
            "  split   | tracklets |  frames |    ids | cameras",
            "  --------+-----------+---------+--------+--------",
        ]
        for name, (n_t, n_f, n_id, n_cam) in self.split_counts().items():
            lines.append(f"  {name:<7} | {n_t:>9} | {n_f:>7} | {n_id:>6} | {n_cam:>7}")
        if self.unmatched_queries:
            lines.append(
                f"  note: {len(self.unmatched_queries)} query tracklets have no gallery tracklet "
                "of the same id from another camera (skipped by the evaluation)"
            )
        return "\n".join(lines)


def make_tracklet_dataset(
    name: str,
    root: str,
    train: Sequence[TrackletRecord],
    query: Sequence[TrackletRecord],
    gallery: Sequence[TrackletRecord],
) -> TrackletDataset:
    """Validate the three splits and relabel the training pids (``train`` carries original
    pids). Errors (``DatasetError``): an empty split, a tracklet without frames, a negative
    camera id. Warning: query tracklets without a cross-camera gallery match."""
    splits = {"train": list(train), "query": list(query), "gallery": list(gallery)}
    for split, records in splits.items():
        if not records:
            raise DatasetError(f"{name} at {root}: the {split} split has no tracklets")
        for r in records:
            if not r.paths:
                raise DatasetError(
                    f"{name} at {root}: a {split} tracklet of pid {r.pid} has no frames"
                )
            if r.camid < 0:
                raise DatasetError(
                    f"{r.paths[0]}: negative camera id {r.camid} in the {split} split"
                )
    train_records, pid_map = relabel(splits["train"])
    unmatched = unmatched_queries(splits["query"], splits["gallery"])
    ds = TrackletDataset(
        name=name,
        root=str(root),
        train=train_records,
        query=splits["query"],
        gallery=splits["gallery"],
        pid_map=pid_map,
        unmatched_queries=unmatched,
    )
    if unmatched:
        log.warning(
            "%s: %d of %d query tracklets have no gallery tracklet of the same id from another "
            "camera; the evaluation skips them. First: %s (pid %d)",
            name,
            len(unmatched),
            len(splits["query"]),
            unmatched[0].paths[0],
            unmatched[0].pid,
        )
    log.info(
        "%s: %s",
        name,
        "; ".join(
            f"{split} {t} tracklets / {f} frames / {i} ids / {c} cameras"
            for split, (t, f, i, c) in ds.split_counts().items()
        ),
    )
    return ds


def sample_frames(length: int, frames: int = 0) -> np.ndarray:
    """Indices of the frames of a ``length``-frame tracklet to embed, in order: every frame
    when ``frames`` is 0 or at least ``length``, else ``frames`` of them spread evenly from
    the first to the last."""
    if length < 1:
        raise ValueError(f"sample_frames: a tracklet has at least one frame, got {length}")
    if frames < 0:
        raise ValueError(f"frames per tracklet: expected >= 0 (0 = all), got {frames}")
    if frames == 0 or frames >= length:
        return np.arange(length)
    return np.round(np.linspace(0, length - 1, frames)).astype(np.int64)
