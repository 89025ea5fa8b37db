"""From camera footage to identities: track each camera, embed a few crops per tracklet,
stitch inside each camera, link across cameras.

:func:`track_camera` streams one camera's frames, with boxes from a detections file or a
:class:`~abdnet.tracking.detector.Detector` (frames batched), through a :class:`Tracker` into
tracklets (with their chosen crops cut); :func:`identify` embeds all tracklets in one batched
call and assigns global identities with :mod:`abdnet.tracking.linking`. Both record the
seconds spent per stage (``timings``) for ``benchmarks/track_speed.py``.
"""

from __future__ import annotations

import logging
import time as _time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from abdnet.engine import Embedder
from abdnet.tracking.boxmot_reid import BoxmotTracker
from abdnet.tracking.detector import Detector
from abdnet.tracking.embedding import embed_tracklets
from abdnet.tracking.interpolate import fill_gaps
from abdnet.tracking.linking import (
    attach_by_motion,
    cannot_links_by_proxy,
    group_embeddings,
    impostor_distances,
    impostor_quantile,
    link_cameras,
    stitch,
)
from abdnet.tracking.mot import (
    ClipReport,
    MotRows,
    clip_rows,
    confidences_in_unit_range,
    read_mot,
)
from abdnet.tracking.tracker import DEFAULT_TRACKER, Detections, Tracker, build_tracker
from abdnet.tracking.tracklets import Tracklet, TrackletBuilder
from abdnet.tracking.video import Frame, FrameSource, ImageSequence, open_source

__all__ = [
    "CameraInput",
    "CameraTracks",
    "Identities",
    "track_camera",
    "identify",
    "DEFAULT_DETECTIONS",
]

log = logging.getLogger(__name__)

DEFAULT_DETECTIONS = Path("det") / "det.txt"


@dataclass(frozen=True)
class CameraInput:
    """One camera: its footage (sequence folder or video), detections file (default
    ``det/det.txt`` of a sequence folder) and optional wall-clock start."""

    name: str
    path: Path
    detections: Path | None = None
    start: datetime | None = None


@dataclass
class CameraTracks:
    """The tracklets of one camera and what was counted on the way."""

    camera: CameraInput
    tracklets: list[Tracklet]
    frames: int  # frames read
    frame_rate: float
    size: tuple[int, int]  # (width, height)
    detections: int  # detections used
    clipped: ClipReport = field(default_factory=ClipReport)
    past_end: int = 0  # detections on frames the footage does not have
    detector: str = ""  # the detector's name when the boxes came from one, else ""
    # seconds spent per stage: decode, detect, track (the tracker library), crops (tracklet
    # bookkeeping and cutting the crops kept for re-ID)
    timings: dict[str, float] = field(default_factory=dict)


def _detections_path(camera: CameraInput) -> Path:
    if camera.detections is not None:
        return camera.detections
    if camera.path.is_dir():
        return camera.path / DEFAULT_DETECTIONS
    raise ValueError(
        f"--camera {camera.name}: {camera.path} is a video; give its detections with "
        f"--detections {camera.name}=det.txt"
    )


def track_camera(
    camera: CameraInput,
    *,
    input_height: int,
    tracker: str = DEFAULT_TRACKER,
    tracker_params: dict[str, Any] | None = None,
    crops: int = 6,
    detector: Detector | None = None,
    detector_name: str = "",
    embedder: Embedder | None = None,
    progress: Callable[[int], None] | None = None,
) -> CameraTracks:
    """Track one camera. Its boxes come from ``camera.detections``, else from ``detector``
    (batches of ``detector.batch_size`` frames), else from the sequence's ``det/det.txt``.
    Boxes of a file are clipped to the frame (counted, warned) and its confidences brought
    onto [0, 1] (:func:`~abdnet.tracking.mot.confidences_in_unit_range`, warned); detections on frames the
    footage lacks are counted and warned; an empty detection file gives no tracklets.
    ``embedder`` is the re-ID model of a ``boxmot:NAME`` tracker. ``progress`` is called
    with 1 after each frame."""
    source = open_source(camera.path)
    w, h = source.info.width, source.info.height
    timings = {"decode": 0.0, "detect": 0.0, "track": 0.0, "crops": 0.0}
    use_detector = detector is not None and camera.detections is None
    det_path: Path | None = None
    rows = MotRows.empty()
    report = ClipReport()
    if use_detector:
        stream = _detected(source, detector, timings)
    else:
        det_path = _detections_path(camera)
        rows = read_mot(det_path)
        rows, report = clip_rows(rows, width=w, height=h)
        if report.clipped or report.dropped:
            log.warning("%s", report.message(str(det_path)))
        rows, rescaled = confidences_in_unit_range(rows)
        if rescaled:
            log.warning("%s: %s", det_path, rescaled)
        stream = _from_rows(source, rows, timings)
    per_frame = rows.by_frame()
    if tracker.startswith("boxmot:"):
        if embedder is None:
            raise ValueError(f"tracker {tracker}: needs the run's embedder as its re-ID model")
        trk: Tracker = BoxmotTracker(
            tracker, embedder=embedder, frame_rate=source.info.frame_rate, params=tracker_params
        )
    else:
        trk = build_tracker(tracker, frame_rate=source.info.frame_rate, **(tracker_params or {}))
    builder = TrackletBuilder(camera.name, input_height=input_height, crops=crops)
    seen: set[int] = set()
    known: set[int] = set()
    previous: tuple[int, float, np.ndarray, np.ndarray] | None = None
    n_frames = 0
    n_dets = 0
    for frame, dets in stream:
        n_frames += 1
        n_dets += len(dets)
        seen.add(frame.index)
        t0 = _time.perf_counter()
        tracks = trk.update(dets, frame.image, time=frame.time)
        t1 = _time.perf_counter()
        _backfill(builder, tracks, dets, previous, known)
        untracked = np.setdiff1d(np.arange(len(dets)), tracks.index)
        previous = (frame.index, frame.time, dets.boxes[untracked], dets.scores[untracked])
        if len(tracks):
            builder.add(
                frame=frame.index,
                time=frame.time,
                image=frame.image,
                ids=tracks.ids,
                boxes=dets.boxes[tracks.index],
                scores=dets.scores[tracks.index],
                all_boxes=dets.boxes,
            )
        timings["track"] += t1 - t0
        timings["crops"] += _time.perf_counter() - t1
        if progress is not None:
            progress(1)
    if isinstance(source, ImageSequence):
        seen.update(source.missing)  # warned by the source
    past = int(sum(len(v) for f, v in per_frame.items() if f not in seen))
    if past:
        log.warning(
            "%s: %d detection(s) on frames that %s does not have (it has %d)",
            det_path,
            past,
            camera.path,
            n_frames,
        )
    t0 = _time.perf_counter()
    tracklets = builder.finish()
    timings["crops"] += _time.perf_counter() - t0
    log.info(
        "%s: %d frames, %d detections, %d tracklets",
        camera.name,
        n_frames,
        n_dets,
        len(tracklets),
    )
    return CameraTracks(
        camera=camera,
        tracklets=tracklets,
        frames=n_frames,
        frame_rate=source.info.frame_rate,
        size=(w, h),
        detections=n_dets,
        clipped=report,
        past_end=past,
        detector=(detector_name or type(detector).__name__) if use_detector else "",
        timings=timings,
    )


def _timed_frames(source: FrameSource, timings: dict[str, float]) -> Iterator[Frame]:
    """The source's frames, the time spent decoding each added to ``timings["decode"]``."""
    frames = iter(source)
    while True:
        t0 = _time.perf_counter()
        frame = next(frames, None)
        timings["decode"] += _time.perf_counter() - t0
        if frame is None:
            return
        yield frame


def _from_rows(
    source: FrameSource, rows: MotRows, timings: dict[str, float]
) -> Iterator[tuple[Frame, Detections]]:
    per_frame = rows.by_frame()
    for frame in _timed_frames(source, timings):
        idx = per_frame.get(frame.index)
        if idx is None:
            yield frame, Detections(np.zeros((0, 4)), np.zeros(0))
            continue
        xywh = rows.boxes[idx]
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        yield frame, Detections(xyxy, rows.scores[idx])


def _detected(
    source: FrameSource, detector: Detector, timings: dict[str, float]
) -> Iterator[tuple[Frame, Detections]]:
    """Frames with the detector's boxes, the frames batched ``detector.batch_size`` at a time."""
    batch: list[Frame] = []

    def flush() -> list[tuple[Frame, Detections]]:
        t0 = _time.perf_counter()
        dets = detector.detect([f.image for f in batch])
        timings["detect"] += _time.perf_counter() - t0
        if len(dets) != len(batch):
            raise RuntimeError(f"the detector gave {len(dets)} results for {len(batch)} frames")
        return list(zip(batch, dets))

    for frame in _timed_frames(source, timings):
        batch.append(frame)
        if len(batch) >= detector.batch_size:
            yield from flush()
            batch = []
    if batch:
        yield from flush()


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def _backfill(builder, tracks, dets, previous, known: set[int]) -> None:
    """A track the library reports for the first time began one frame earlier, on a box it
    left untracked then: give that box (the best overlap, IoU >= 0.3) to the track."""
    for tid, i in zip(tracks.ids.tolist(), tracks.index.tolist()):
        if tid in known:
            continue
        known.add(tid)
        if previous is None or not len(previous[2]):
            continue
        f, t, boxes, scores = previous
        iou = _iou(dets.boxes[i], boxes)
        j = int(np.argmax(iou))
        if iou[j] >= 0.3:
            builder.add(
                frame=f,
                time=t,
                image=None,
                ids=np.asarray([tid]),
                boxes=boxes[j : j + 1].copy(),
                scores=scores[j : j + 1],
            )
            boxes[j] = -1e9  # used


@dataclass
class Identities:
    """Global identities: ``labels[key]`` = identity (1-based) of each tracklet key
    (``camera/track``); ``groups[key]`` its stitched group inside its camera."""

    labels: dict[str, int]
    groups: dict[str, int]
    threshold: float  # the cross-camera link threshold
    stitch_thresholds: dict[str, float]  # per camera
    crops_embedded: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # seconds: embed, link
    # an identity's gaps of at most this many seconds inside a camera are interpolated in
    # the results (:func:`result_rows`); 0: only the boxes the tracker reported
    fill_gap: float = 0.0


#: Default longest gap (seconds) of one person inside one camera that the results fill by
#: interpolation: long enough for a walker hidden behind one or two others.
FILL_GAP_SECONDS = 2.0


def identify(
    cameras: Sequence[CameraTracks],
    *,
    embedder: Embedder,
    threshold: float,
    stitch_threshold: float | None = None,
    far: float = 1e-3,
    link: bool = True,
    fill_gap: float = FILL_GAP_SECONDS,
    min_length: int = 1,
    progress: Callable[[int], None] | None = None,
) -> Identities:
    """Embed, stitch and link. ``threshold`` (a distance of ``embedder.space``) links
    groups across cameras; inside a camera the threshold is the smaller of
    ``stitch_threshold`` (default ``threshold``; ``abdnet track`` passes
    :attr:`abdnet.gallery.Threshold.stitch_threshold`, a stricter operating point) and the
    camera's own impostor quantile at ``far`` (:func:`~abdnet.tracking.linking.
    impostor_distances`: tracklets seen at once), or, for a camera with too few such pairs,
    the quantile of every camera's impostor pairs pooled. ``link=False``
    keeps every camera's people apart. Tracklets shorter than ``min_length`` frames or with
    nothing embedded are not stitched or linked by appearance: each joins the tracklet it
    continues in time and place (:func:`~abdnet.tracking.linking.attach_by_motion`) or
    stays alone. ``fill_gap`` (seconds) is kept in the result: the longest gap of one
    identity inside one camera that :func:`result_rows` interpolates (0: none)."""
    if fill_gap < 0:
        raise ValueError(f"fill_gap must be >= 0 seconds, got {fill_gap}")
    stitch_cap = threshold if stitch_threshold is None else float(stitch_threshold)
    every = [t for c in cameras for t in c.tracklets]
    t0 = _time.perf_counter()
    n_crops = embed_tracklets(embedder, every, progress=progress)
    t_embed = _time.perf_counter() - t0
    dist = embedder.space.distances
    labels: dict[str, int] = {}
    groups: dict[str, int] = {}
    stitch_t: dict[str, float] = {}
    group_rows: list[tuple[str, np.ndarray, float]] = []  # camera, embedding, weight
    group_keys: list[list[str]] = []
    group_boxes: list[int] = []  # tracked boxes per group: the evidence behind a link
    per_cam = []  # camera, its tracklets, embeddings, valid, starts, ends
    for cam in cameras:
        ts = cam.tracklets
        if not ts:
            continue
        dim = next((t.embedding.shape[0] for t in every if t.embedding is not None), 1)
        emb = np.stack([t.embedding if t.embedding is not None else np.zeros(dim) for t in ts])
        valid = np.asarray([t.embedding is not None and len(t) >= min_length for t in ts])
        starts = np.asarray([t.start for t in ts])
        ends = np.asarray([t.end for t in ts])
        per_cam.append((cam, ts, emb, valid, starts, ends))
    impostors = {
        cam.camera.name: impostor_distances(
            embeddings=emb, starts=starts, ends=ends, valid=valid, distance=dist
        )
        for cam, _, emb, valid, starts, ends in per_cam
    }
    pooled = impostor_quantile(np.concatenate([np.zeros(0), *impostors.values()]), far)
    for cam, ts, emb, valid, starts, ends in per_cam:
        own = impostor_quantile(impostors[cam.camera.name], far)
        own = pooled if own is None else own
        t_cam = min(threshold, stitch_cap) if own is None else min(threshold, stitch_cap, own)
        stitch_t[cam.camera.name] = t_cam
        proxy = (
            cannot_links_by_proxy(
                embeddings=emb,
                valid=valid,
                others=[(e2, v2, s2, n2) for c2, _, e2, v2, s2, n2 in per_cam if c2 is not cam],
                threshold=threshold,
                distance=dist,
            )
            if link
            else None
        )
        lab = stitch(
            embeddings=emb,
            starts=starts,
            ends=ends,
            threshold=t_cam,
            valid=valid,
            distance=dist,
            cannot_link=proxy,
        )
        lab = attach_by_motion(
            labels=lab,
            valid=valid,
            starts=starts,
            ends=ends,
            first_boxes=np.stack([t.boxes[0] for t in ts]),
            last_boxes=np.stack([t.boxes[-1] for t in ts]),
        )
        weights = np.asarray([max(len(t.crops), 1) for t in ts], dtype=np.float64)
        for g in range(int(lab.max()) + 1 if lab.size else 0):
            members = np.flatnonzero(lab == g)
            keys = [ts[i].key for i in members]
            for k in keys:
                groups[k] = g
            ok = valid[members]
            if ok.any():
                e = group_embeddings(
                    emb[members][ok],
                    np.zeros(int(ok.sum()), dtype=np.int64),
                    weights[members][ok],
                    normalized=embedder.space.normalized,
                )[0]
                group_rows.append((cam.camera.name, e, 1.0))
            else:
                group_rows.append((cam.camera.name, np.zeros(emb.shape[1]), 0.0))
            group_keys.append(keys)
            group_boxes.append(sum(len(ts[i]) for i in members))
    if group_rows:
        valid_g = np.asarray([w > 0 for _, _, w in group_rows])
        if link:
            glab = link_cameras(
                cameras=[c for c, _, _ in group_rows],
                embeddings=np.stack([e for _, e, _ in group_rows]),
                threshold=threshold,
                valid=valid_g,
                distance=dist,
                sizes=np.asarray([max(b, 1) for b in group_boxes], dtype=np.float64),
            )
        else:
            glab = np.arange(len(group_rows))
        # identities numbered from 1 in order of first appearance
        first: dict[int, float] = {}
        start_of = {t.key: t.start for t in every}
        for g, keys in enumerate(group_keys):
            s = min(start_of[k] for k in keys)
            first[int(glab[g])] = min(first.get(int(glab[g]), np.inf), s)
        order = sorted(first, key=lambda p: (first[p], p))
        number = {p: i + 1 for i, p in enumerate(order)}
        for g, keys in enumerate(group_keys):
            for k in keys:
                labels[k] = number[int(glab[g])]
    timings = {"embed": t_embed, "link": _time.perf_counter() - t0 - t_embed}
    return Identities(labels, groups, threshold, stitch_t, n_crops, timings, fill_gap=fill_gap)


def result_rows(
    cam: CameraTracks, identities: Identities, *, fill_gap: float | None = None
) -> MotRows:
    """The MOTChallenge result rows of one camera: every tracked box with its identity, and
    each identity's gaps of at most ``fill_gap`` seconds (default ``identities.fill_gap``)
    interpolated (:func:`abdnet.tracking.interpolate.fill_gaps`)."""
    seconds = identities.fill_gap if fill_gap is None else fill_gap
    max_gap = int(round(seconds * cam.frame_rate)) if seconds > 0 else 0
    per_id: dict[int, list[Tracklet]] = {}
    for t in cam.tracklets:
        pid = identities.labels.get(t.key)
        if pid is not None:
            per_id.setdefault(pid, []).append(t)
    frames, ids, boxes, scores = [], [], [], []
    for pid, ts in sorted(per_id.items()):
        f = np.concatenate([t.frames for t in ts])
        b = np.concatenate([t.boxes for t in ts])
        s = np.concatenate([t.scores for t in ts])
        order = np.argsort(f, kind="stable")
        f, b, s = f[order], b[order], s[order]
        if max_gap > 0 and np.all(np.diff(f) > 0):
            f, b, s, _ = fill_gaps(f, b, s, max_gap=max_gap, frame_size=cam.size)
        frames.append(f)
        ids.append(np.full(f.shape[0], pid))
        boxes.append(np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1))
        scores.append(s)
    if not frames:
        return MotRows.empty()
    return MotRows.from_arrays(
        frames=np.concatenate(frames),
        ids=np.concatenate(ids),
        boxes=np.concatenate(boxes),
        scores=np.concatenate(scores),
    )
