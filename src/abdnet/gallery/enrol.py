"""Bulk enrolment of image files: read, skip what is enrolled, embed in batches, add.

Crops are committed in groups (crops synced, rows written), and a crop already in the
gallery is recognised by its sha256 before it is embedded: an interrupted run resumes after
its last commit when started again with the same arguments.

Camera and time come from the arguments; a camera not given, and the frame, come from
Market/Duke-style file names (``0002_c1s1_000451_03.jpg``: camera 1, frame 451;
``0001_c2_f0046182.jpg``: camera 2, frame 46182). Cameras are numbered from 1, as the names
write them. A frame number is a position in a video, not a time: it is stored as the
entry's frame, and the entry has a capture time only when one is given.

Under ``torchrun`` (:func:`enrol_sharded`) only rank 0 opens the gallery (a Milvus Lite file
serves one process). Rank 0 reads the bytes of every file and keeps those whose sha256 is not
enrolled yet, the first file of each content (:func:`pending_files`), and sends that list to
every rank. Each rank embeds its contiguous share of it (:func:`abdnet.engine.shard`,
:func:`embed_files`: the same reading and the same :class:`FeatureExtractor` as one
process) and reports success (:func:`abdnet.engine.failed_ranks`). When every rank
succeeded, the embeddings (keyed by the sha256 of the bytes they were computed from) are
gathered on rank 0, which enrols all the files through :func:`enrol_files` with them: the
same entries, ids, metadata, crops, commits and report as one process. When any rank failed,
every rank raises and rank 0 adds nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from abdnet.engine import (
    DistContext,
    Embedder,
    broadcast_object,
    failed_ranks,
    gather_objects,
    shard,
)
from abdnet.gallery.gallery import Gallery
from abdnet.gallery.images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_SIDE,
    CropImage,
    read_crop,
    sha256_hex,
)
from abdnet.gallery.model import ModelInfo
from abdnet.gallery.records import Enrolment
from abdnet.retrieval import ImageReadError, ShardFailedError, parse_name

__all__ = [
    "EmbeddedFiles",
    "EnrolReport",
    "NameMetadata",
    "embed_files",
    "enrol_embedded",
    "enrol_files",
    "enrol_sharded",
    "name_metadata",
    "pending_files",
]

log = logging.getLogger(__name__)


@dataclass
class EnrolReport:
    added: int = 0  # new entries
    skipped: int = 0  # already enrolled (same bytes)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, reason), --skip-bad
    ids: dict[str, str] = field(default_factory=dict)  # file -> id


@dataclass
class EmbeddedFiles:
    """Embeddings of image files, keyed by the sha256 of the bytes they were computed from."""

    sha256: list[str] = field(default_factory=list)
    features: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # (N, D)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, reason), skip_bad

    def as_dict(self) -> dict[str, np.ndarray]:
        return dict(zip(self.sha256, self.features))


@dataclass(frozen=True)
class NameMetadata:
    """What a Market/Duke-style crop name carries; all None for any other name."""

    camera: int | None = None  # from 1, as the name writes it (c1 -> 1)
    frame: int | None = None  # frame number in the video
    pid: int | None = None  # identity


def name_metadata(path: str | Path) -> NameMetadata:
    """Camera (numbered from 1), frame and identity of a Market/Duke-style file name."""
    labels = parse_name(path)
    if labels is None:
        return NameMetadata()
    # parse_name gives the data sets' 0-based camera index; the gallery counts from 1
    return NameMetadata(camera=labels.camid + 1, frame=labels.frame, pid=labels.pid)


def enrol_files(
    gallery: Gallery,
    extractor: Embedder | None,
    paths: Sequence[str | Path],
    *,
    camera: int | None = None,
    timestamp: datetime | None = None,
    label: str | None = None,
    label_from_pid: bool = False,
    batch_size: int = 64,
    skip_bad: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    commit_every: int = 512,
    progress: Callable[[int], None] | None = None,
    embeddings: Mapping[str, np.ndarray] | None = None,
) -> EnrolReport:
    """Add image files to ``gallery`` with embeddings from ``extractor`` (the gallery model's
    :class:`~abdnet.engine.Embedder`, e.g. a FeatureExtractor).

    ``camera`` (from 1) / ``timestamp`` / ``label`` apply to every file; without ``camera``
    the camera, and always the frame, are parsed from Market/Duke-style names
    (:func:`name_metadata`). ``label_from_pid`` labels each crop with the
    identity its name carries. An unreadable file, or one less than ``min_side`` pixels wide or
    high (:class:`ImageTooSmall`), raises ImageReadError naming it (what was committed stays
    enrolled) unless ``skip_bad``, which lists it in the report instead.
    Embeddings are computed ``batch_size`` images at a time and committed (crops synced, rows
    written) every ``commit_every`` images: a commit costs a file-system sync.

    ``embeddings`` (sha256 of a crop's bytes -> its embedding, e.g. from :func:`embed_files`)
    replaces ``extractor`` (which may then be None): a crop not enrolled yet must have one,
    or ValueError names its file (what was committed before stays enrolled).
    """
    if embeddings is None and extractor is None:
        raise ValueError("enrol_files: an extractor or precomputed embeddings are needed")
    if extractor is not None:
        gallery.model.space.check_same(extractor.space, f"gallery {gallery.uri}")
    if batch_size < 1 or commit_every < 1:
        raise ValueError(
            f"batch_size and commit_every must be >= 1, got {batch_size}, {commit_every}"
        )
    report = EnrolReport()
    pending: list[tuple[Enrolment, np.ndarray]] = []

    def commit() -> None:
        _commit(gallery, pending, report)

    for start in range(0, len(paths), batch_size):
        batch = [str(p) for p in paths[start : start + batch_size]]
        crops = _read_crops(batch, skip_bad, (max_pixels, min_side), report.failed)
        known = gallery.find([c.sha256 for c in crops])
        todo = []
        for c in crops:
            if c.sha256 in known:
                report.skipped += 1
                report.ids[c.name] = known[c.sha256]
            else:
                todo.append(c)
        if todo:
            if embeddings is None:
                features = extractor([c.image for c in todo]).numpy()  # (b, D), the space's
            else:
                features = np.stack([_precomputed(embeddings, c) for c in todo])
            for c, f in zip(todo, features):
                named = name_metadata(c.name)
                pid = named.pid
                enrolment = Enrolment(
                    crop=c,
                    camera=camera if camera is not None else named.camera,
                    timestamp=timestamp,
                    frame=named.frame,
                    label=str(pid) if label_from_pid and pid is not None else label,
                )
                pending.append((enrolment, f))
        if len(pending) >= commit_every:
            commit()
        if progress is not None:
            progress(len(batch))
    commit()
    return report


def _commit(
    gallery: Gallery, pending: list[tuple[Enrolment, np.ndarray]], report: EnrolReport
) -> None:
    """Add ``pending`` (crops synced, rows written), count it in ``report``, empty it."""
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


def enrol_embedded(
    gallery: Gallery,
    items: Sequence[tuple[Enrolment, np.ndarray]],
    *,
    model: ModelInfo,
    commit_every: int = 512,
    progress: Callable[[int], None] | None = None,
) -> EnrolReport:
    """Add crops whose embeddings were computed already (e.g. by ``abdnet track``), each
    ``(enrolment, embedding (D,))``, committed every ``commit_every`` crops as
    :func:`enrol_files` commits. ``model`` made the embeddings (:func:`describe_extractor`):
    another than the gallery's raises :class:`ModelMismatchError` naming the gallery before
    anything is added. A crop already enrolled (same bytes) is counted as skipped and keeps
    its entry."""
    gallery.model.check_same(model, f"gallery {gallery.uri}")
    if commit_every < 1:
        raise ValueError(f"commit_every must be >= 1, got {commit_every}")
    report = EnrolReport()
    pending: list[tuple[Enrolment, np.ndarray]] = []
    for e, f in items:
        pending.append((e, f))
        if len(pending) >= commit_every:
            n = len(pending)
            _commit(gallery, pending, report)
            if progress is not None:
                progress(n)
    n = len(pending)
    _commit(gallery, pending, report)
    if progress is not None and n:
        progress(n)
    return report


def _read_crops(
    paths: Sequence[str],
    skip_bad: bool,
    limits: tuple[int, int],
    failed: list[tuple[str, str]],
) -> list[CropImage]:
    """The crops of ``paths`` that can be read; with ``skip_bad`` the others are logged and
    listed in ``failed``, without it the first raises ImageReadError naming its file."""
    crops = []
    for p in paths:
        try:
            crops.append(read_crop(p, max_pixels=limits[0], min_side=limits[1]))
        except ImageReadError as exc:
            if not skip_bad:
                raise
            log.warning("skipping %s", exc)
            failed.append((p, str(exc)))
    return crops


def _precomputed(embeddings: Mapping[str, np.ndarray], crop: CropImage) -> np.ndarray:
    try:
        return np.asarray(embeddings[crop.sha256], dtype=np.float32)
    except KeyError:
        raise ValueError(
            f"{crop.name}: no embedding was computed for its bytes (sha256 {crop.sha256}): "
            f"the file changed during the run, or the process that embedded it could not "
            f"read it"
        ) from None


def embed_files(
    extractor: Embedder,
    paths: Sequence[str | Path],
    *,
    batch_size: int = 64,
    skip_bad: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    progress: Callable[[int], None] | None = None,
) -> EmbeddedFiles:
    """Embeddings of image files, read and embedded as :func:`enrol_files` does.

    An unreadable file raises ImageReadError naming it unless ``skip_bad``, which lists it
    in ``failed`` instead.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = EmbeddedFiles()
    features: list[np.ndarray] = []
    for start in range(0, len(paths), batch_size):
        batch = [str(p) for p in paths[start : start + batch_size]]
        crops = _read_crops(batch, skip_bad, (max_pixels, min_side), out.failed)
        if crops:
            features.append(extractor([c.image for c in crops]).numpy())
            out.sha256 += [c.sha256 for c in crops]
        if progress is not None:
            progress(len(batch))
    if features:
        out.features = np.concatenate(features).astype(np.float32, copy=False)
    return out


def pending_files(gallery: Gallery, paths: Sequence[str | Path], chunk: int = 1024) -> list[str]:
    """The files of ``paths`` whose bytes are not enrolled in ``gallery``, in order, one per
    content (the first file with those bytes). A file that cannot be read is kept: reading
    it for its embedding reports it."""
    todo: list[str] = []
    seen: set[str] = set()
    for start in range(0, len(paths), chunk):
        hashed: list[tuple[str, str | None]] = []
        for p in paths[start : start + chunk]:
            try:
                hashed.append((str(p), sha256_hex(Path(p).read_bytes())))
            except OSError:
                hashed.append((str(p), None))
        known = gallery.find([h for _, h in hashed if h is not None])
        for p, h in hashed:
            if h is None:
                todo.append(p)
            elif h not in known and h not in seen:
                seen.add(h)
                todo.append(p)
    return todo


def enrol_sharded(
    gallery: Gallery | None,
    extractor: Embedder,
    paths: Sequence[str | Path],
    ctx: DistContext,
    *,
    batch_size: int = 64,
    skip_bad: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    progress: Callable[[int], None] | None = None,
    **options: Any,
) -> EnrolReport | None:
    """:func:`enrol_files` with the embedding split over the ranks of ``ctx`` (see the
    module docstring); every rank calls it with the same ``paths``.

    ``gallery`` is the open gallery on rank 0 and None on the others; ``options`` are
    :func:`enrol_files`'s metadata and commit options, used by rank 0. ``progress`` counts
    this rank's share as it is embedded. Returns the report on rank 0, None elsewhere.
    Raises :class:`ShardFailedError` on every rank when another rank failed; the failed rank
    raises its own error. Either way rank 0 has added nothing.
    """
    if ctx.is_main and gallery is None:
        raise ValueError("enrol_sharded: rank 0 needs the open gallery")
    todo: list[str] | None = None
    error: BaseException | None = None
    if ctx.is_main:
        try:
            todo = pending_files(gallery, paths)
            log.info(
                "%d of %d images already enrolled or repeated; %d to embed",
                len(paths) - len(todo),
                len(paths),
                len(todo),
            )
        except Exception as exc:  # the other ranks learn it from the broadcast
            error = exc
    todo = broadcast_object(todo, ctx)
    if error is not None:
        raise error
    if todo is None:
        raise ShardFailedError(
            f"rank 0 of {ctx.world_size} failed to list the files to embed (see its error); "
            f"nothing enrolled"
        )
    share = shard(len(todo), ctx)
    mine = todo[share.start : share.stop]
    log.info("rank %d/%d: %d images", ctx.rank, ctx.world_size, len(mine))
    embedded = None
    try:
        embedded = embed_files(
            extractor,
            mine,
            batch_size=batch_size,
            skip_bad=skip_bad,
            max_pixels=max_pixels,
            min_side=min_side,
            progress=progress,
        )
    except Exception as exc:  # reported to the other ranks below, then raised here
        log.error("rank %d/%d failed: %s", ctx.rank, ctx.world_size, exc)
        error = exc
    failed = failed_ranks(error is None, ctx)
    if error is not None:
        raise error
    if failed:
        raise ShardFailedError(
            f"rank(s) {', '.join(map(str, failed))} of {ctx.world_size} failed (see their "
            f"errors); nothing enrolled"
        )
    parts = gather_objects(embedded, ctx)
    if parts is None:  # not rank 0
        return None
    embeddings: dict[str, np.ndarray] = {}
    for part in parts:
        embeddings.update(part.as_dict())
    return enrol_files(
        gallery,
        None,
        paths,
        batch_size=batch_size,
        skip_bad=skip_bad,
        max_pixels=max_pixels,
        min_side=min_side,
        embeddings=embeddings,
        **options,
    )
