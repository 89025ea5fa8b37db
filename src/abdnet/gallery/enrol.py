"""Bulk enrolment of image files: read, skip what is enrolled, embed in batches, add.

Crops are committed in groups (crops synced, rows written), and a crop already in the
gallery is recognised by its sha256 before it is embedded: an interrupted run resumes after
its last commit when started again with the same arguments.

Camera and time come from the arguments or, when not given, from Market/Duke-style file
names (``0002_c1s1_000451_03.jpg``: camera 0, frame 451; ``0001_c2_f0046182.jpg``: camera 1,
frame 46182). A frame number is a position in the video, not a date: it becomes a time on
the video's own clock, ``frame / fps`` seconds after 1970-01-01T00:00:00Z.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from abdnet.gallery.gallery import Gallery
from abdnet.gallery.images import DEFAULT_MAX_PIXELS, read_crop
from abdnet.gallery.records import Enrolment
from abdnet.retrieval import ImageReadError, parse_name

__all__ = ["EnrolReport", "enrol_files", "name_metadata"]

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass
class EnrolReport:
    added: int = 0  # new entries
    skipped: int = 0  # already enrolled (same bytes)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, reason), --skip-bad
    ids: dict[str, str] = field(default_factory=dict)  # file -> id


def name_metadata(path: str | Path, fps: float) -> tuple[int | None, datetime | None, int | None]:
    """``(camera, time, pid)`` a Market/Duke-style file name carries; Nones otherwise."""
    labels = parse_name(path)
    if labels is None:
        return None, None, None
    when = None
    if labels.frame is not None:
        when = _EPOCH + timedelta(seconds=labels.frame / fps)
    return labels.camid, when, labels.pid


def enrol_files(
    gallery: Gallery,
    extractor: Any,
    paths: Sequence[str | Path],
    *,
    camera: int | None = None,
    timestamp: datetime | None = None,
    label: str | None = None,
    label_from_pid: bool = False,
    fps: float = 25.0,
    batch_size: int = 64,
    skip_bad: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    commit_every: int = 512,
    progress: Callable[[int], None] | None = None,
) -> EnrolReport:
    """Add image files to ``gallery`` with embeddings from ``extractor`` (FeatureExtractor).

    ``camera`` / ``timestamp`` / ``label`` apply to every file; without them camera and time
    are parsed from Market/Duke-style names. ``label_from_pid`` labels each crop with the
    identity its name carries. An unreadable file raises ImageReadError naming it (what was
    committed stays enrolled) unless ``skip_bad``, which lists it in the report instead.
    Embeddings are computed ``batch_size`` images at a time and committed (crops synced, rows
    written) every ``commit_every`` images: a commit costs a file-system sync.
    """
    if batch_size < 1 or commit_every < 1:
        raise ValueError(
            f"batch_size and commit_every must be >= 1, got {batch_size}, {commit_every}"
        )
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    report = EnrolReport()
    pending: list[tuple[Enrolment, np.ndarray]] = []

    def commit() -> None:
        if not pending:
            return
        enrolments = [e for e, _ in pending]
        for e, added in zip(enrolments, gallery.add(enrolments, np.stack([f for _, f in pending]))):
            report.ids[e.crop.name] = added.id
            if added.created:
                report.added += 1
            else:
                report.skipped += 1
        pending.clear()

    for start in range(0, len(paths), batch_size):
        batch = [str(p) for p in paths[start : start + batch_size]]
        crops = []
        for p in batch:
            try:
                crops.append(read_crop(p, max_pixels=max_pixels))
            except ImageReadError as exc:
                if not skip_bad:
                    raise
                log.warning("skipping %s", exc)
                report.failed.append((p, str(exc)))
        known = gallery.find([c.sha256 for c in crops])
        todo = []
        for c in crops:
            if c.sha256 in known:
                report.skipped += 1
                report.ids[c.name] = known[c.sha256]
            else:
                todo.append(c)
        if todo:
            features = extractor([c.image for c in todo]).numpy()  # (b, D), L2-normalized
            for c, f in zip(todo, features):
                cam, when, pid = name_metadata(c.name, fps)
                lab = str(pid) if label_from_pid and pid is not None else label
                enrolment = Enrolment(
                    crop=c,
                    camera=camera if camera is not None else cam,
                    timestamp=timestamp if timestamp is not None else when,
                    label=lab,
                )
                pending.append((enrolment, f))
        if len(pending) >= commit_every:
            commit()
        if progress is not None:
            progress(len(batch))
    commit()
    return report
