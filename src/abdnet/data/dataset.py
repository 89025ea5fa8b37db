"""Records, the ``ReIDDataset`` container, its validation report and the validation split.

Conventions (all parsers follow them):

- ``ImageRecord.camid`` is 0-based. Market-1501, DukeMTMC-reID and MSMT17 number their
  cameras from 1 in the file names; their parsers subtract 1. The folder and CSV formats
  take the camera number as written (it must be >= 0).
- Training pids are relabelled 0..N-1 (sorted original pids) so they index the classifier;
  ``ReIDDataset.pid_map`` keeps original -> label. Query and gallery keep original pids.
- pid -1 marks "junk" images (Market-1501 / DukeMTMC); parsers drop them. pid 0 in a
  Market-1501-style gallery is a distractor: kept, it never matches a query.
- A query whose identity has no gallery image from another camera cannot be scored by the
  Market-1501 protocol (the evaluation skips it). That is a *warning*, not an error: real
  data sets (and subsets made by users) contain such queries and the metrics are still
  well defined; the count and first examples are logged and shown by ``summary()``.
- Every image file is checked when the data set is loaded (``images.check_image_file``:
  header and end marker, ~0.1 ms per file): zero-byte, garbage and truncated files are one
  ``DatasetError`` naming every one of them, before any training starts, or with
  ``skip_bad`` they are left out and listed in ``ReIDDataset.skipped``. Images far smaller
  than the network's input (``images.MAX_UPSCALE``) are a warning naming them.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from .images import IMAGE_EXTENSIONS, MAX_UPSCALE, check_image_file, read_image, upscale_warning

__all__ = [
    "ImageRecord",
    "ReIDDataset",
    "DatasetError",
    "images_in",
    "make_dataset",
    "relabel",
    "split_validation",
]

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A data set on disk is malformed; the message names the file or folder at fault."""


def images_in(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (sorted); other files (Thumbs.db, ...) are ignored."""
    if not folder.is_dir():
        raise DatasetError(f"missing folder: {folder}")
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


@dataclass(frozen=True)
class ImageRecord:
    """One image: where to read it, its identity and its 0-based camera."""

    path: str
    pid: int
    camid: int


@dataclass
class ReIDDataset:
    """A parsed re-ID data set: train / query / gallery records plus how to read an image.

    ``image_source`` (optional) renders images that live only in memory (the synthetic
    set); it maps ``record.path`` to an RGB ``PIL.Image``. Without it, paths are files.
    """

    name: str
    root: str
    train: list[ImageRecord]
    query: list[ImageRecord]
    gallery: list[ImageRecord]
    pid_map: dict[int, int]  # original training pid -> label 0..N-1
    image_source: Callable[[str], Image.Image] | None = None
    unmatched_queries: list[ImageRecord] = field(default_factory=list)
    # (path, problem) of unreadable images left out at loading (skip_bad)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def num_train_pids(self) -> int:
        return len(self.pid_map)

    def read_image(self, record: ImageRecord) -> Image.Image:
        """The record's image as an RGB ``PIL.Image``."""
        if self.image_source is not None:
            return self.image_source(record.path)
        return read_image(record.path)

    def split_counts(self) -> dict[str, tuple[int, int, int]]:
        """``split -> (images, identities, cameras)``."""
        return {
            name: (len(recs), len({r.pid for r in recs}), len({r.camid for r in recs}))
            for name, recs in (
                ("train", self.train),
                ("query", self.query),
                ("gallery", self.gallery),
            )
        }

    def summary(self) -> str:
        """A small table of image / identity / camera counts per split."""
        lines = [f"dataset {self.name} ({self.root})", "  split   | images |    ids | cameras"]
        lines.append("  --------+--------+--------+--------")
        for name, (n_img, n_id, n_cam) in self.split_counts().items():
            lines.append(f"  {name:<7} | {n_img:>6} | {n_id:>6} | {n_cam:>7}")
        if self.skipped:
            lines.append(f"  note: {len(self.skipped)} unreadable images left out")
        if self.unmatched_queries:
            lines.append(
                f"  note: {len(self.unmatched_queries)} queries have no gallery image of the same id "
                "from another camera (skipped by the evaluation)"
            )
        return "\n".join(lines)


_R = TypeVar("_R", bound=Any)


def relabel(records: Sequence[_R]) -> tuple[list[_R], dict[int, int]]:
    """Map the pids of ``records`` (images or tracklets: dataclasses with a ``pid``) to
    0..N-1 (in sorted order); returns records and the map."""
    pid_map = {pid: label for label, pid in enumerate(sorted({r.pid for r in records}))}
    return [dataclasses.replace(r, pid=pid_map[r.pid]) for r in records], pid_map


def _check_duplicates(splits: dict[str, Sequence[ImageRecord]]) -> None:
    seen: dict[str, str] = {}
    for split, records in splits.items():
        for r in records:
            other = seen.get(r.path)
            if other is not None:
                where = f"twice in {split}" if other == split else f"in both {other} and {split}"
                raise DatasetError(f"duplicate image path {r.path} ({where})")
            seen[r.path] = split


def unmatched_queries(query: Sequence[Any], gallery: Sequence[Any]) -> list[Any]:
    """The queries (images or tracklets: anything with ``pid`` and ``camid``) that have no
    gallery item of their identity in another camera."""
    cams_of: dict[int, set[int]] = defaultdict(set)
    for g in gallery:
        cams_of[g.pid].add(g.camid)
    # A valid match: same pid, different camera (Market-1501 protocol).
    return [q for q in query if not (cams_of.get(q.pid, set()) - {q.camid})]


def _check_images(
    splits: dict[str, list[ImageRecord]],
    *,
    skip_bad: bool,
    input_size: tuple[int, int] | None = None,
    where: str = "",
) -> tuple[dict[str, list[ImageRecord]], list[tuple[str, str]]]:
    """Check every image file of ``splits`` (:func:`check_image_file`).

    Unreadable files are one :class:`DatasetError` naming every one of them, or, with
    ``skip_bad``, left out and returned as ``(path, problem)``. With ``input_size`` (H, W),
    images the transform would enlarge more than ``MAX_UPSCALE`` times are logged.
    """
    t0 = time.perf_counter()
    bad: list[tuple[str, str]] = []
    tiny: list[str] = []
    kept: dict[str, list[ImageRecord]] = {}
    for split, records in splits.items():
        kept[split] = []
        for r in records:
            check = check_image_file(r.path)
            if check.problem is not None:
                bad.append((r.path, check.problem))
                continue
            kept[split].append(r)
            if input_size is not None and check.size is not None:
                warning = upscale_warning(r.path, check.size, input_size)
                if warning is not None:
                    tiny.append(warning)
    n = sum(len(r) for r in splits.values())
    log.debug("checked %d image files in %.2f s", n, time.perf_counter() - t0)
    if bad and not skip_bad:
        by_problem: dict[str, list[str]] = defaultdict(list)
        for path, problem in bad:
            by_problem[problem].append(path)
        listing = "; ".join(
            f"{problem}: {', '.join(paths)}" for problem, paths in by_problem.items()
        )
        raise DatasetError(
            f"{where}{len(bad)} of {n} images cannot be read ({listing}); fix or remove them, "
            "or set data.skip_bad: true to leave them out"
        )
    for path, problem in bad:
        log.warning("leaving out %s: %s", path, problem)
    if tiny:
        log.warning(
            "%s%d images are smaller than 1/%g of the input size; first: %s",
            where,
            len(tiny),
            MAX_UPSCALE,
            " | ".join(tiny[:5]),
        )
    return kept, bad


def make_dataset(
    name: str,
    root: str | Path,
    train: Sequence[ImageRecord],
    query: Sequence[ImageRecord],
    gallery: Sequence[ImageRecord],
    *,
    image_source: Callable[[str], Image.Image] | None = None,
    skip_bad: bool = False,
    input_size: tuple[int, int] | None = None,
) -> ReIDDataset:
    """Validate the three splits, relabel the training pids and log the counts.

    ``train`` carries original pids. Errors (``DatasetError``): an empty split, a negative
    camera id, a path listed twice, unreadable image files (all of them named; with
    ``skip_bad`` they are left out and listed in ``skipped`` instead). Warnings: queries
    without a valid gallery match; images smaller than ``input_size`` (H, W) allows.
    Images rendered by ``image_source`` are not files and are not checked.
    """
    splits = {"train": list(train), "query": list(query), "gallery": list(gallery)}
    for split, records in splits.items():
        if not records:
            raise DatasetError(f"{name} at {root}: the {split} split has no images")
        bad = next((r for r in records if r.camid < 0), None)
        if bad is not None:
            raise DatasetError(f"{bad.path}: negative camera id {bad.camid} in the {split} split")
    _check_duplicates(splits)
    skipped: list[tuple[str, str]] = []
    if image_source is None:
        splits, skipped = _check_images(
            splits, skip_bad=skip_bad, input_size=input_size, where=f"{name} at {root}: "
        )
        for split, records in splits.items():
            if not records:
                raise DatasetError(
                    f"{name} at {root}: the {split} split has no readable images "
                    f"({len(skipped)} left out)"
                )
    train_records, pid_map = relabel(splits["train"])
    unmatched = unmatched_queries(splits["query"], splits["gallery"])
    ds = ReIDDataset(
        name=name,
        root=str(root),
        train=train_records,
        query=splits["query"],
        gallery=splits["gallery"],
        pid_map=pid_map,
        image_source=image_source,
        unmatched_queries=unmatched,
        skipped=skipped,
    )
    if unmatched:
        examples = ", ".join(f"{r.path} (pid {r.pid}, cam {r.camid})" for r in unmatched[:3])
        log.warning(
            "%s: %d of %d queries have no gallery image of the same id from another camera; "
            "the evaluation skips them. First: %s",
            name,
            len(unmatched),
            len(splits["query"]),
            examples,
        )
    log.info(
        "%s: %s",
        name,
        "; ".join(
            f"{split} {n} images / {i} ids / {c} cameras"
            for split, (n, i, c) in ds.split_counts().items()
        ),
    )
    return ds


def split_validation(
    dataset: ReIDDataset, fraction: float, seed: int = 0
) -> tuple[list[ImageRecord], list[ImageRecord], list[ImageRecord]]:
    """Hold out ``fraction`` of the training identities for model selection.

    Returns ``(train_records, val_query, val_gallery)``. The remaining training records are
    relabelled 0..M-1 (M = number of remaining identities, in the order of their current
    labels) so they index a classifier of size M. Each held-out identity that was seen by at
    least two cameras gives one query image per camera that has two or more images (or a
    single query when none has); all its other images form the gallery, so every
    validation query has a valid match. Held-out identities seen by one
    camera only go to the gallery (as extra distractors). Deterministic from ``seed``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"data.val_fraction: expected a number in (0, 1), got {fraction}")
    by_pid: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(dataset.train):
        by_pid[r.pid].append(i)
    pids = sorted(by_pid)
    n_val = int(round(fraction * len(pids)))
    if n_val < 1 or n_val >= len(pids):
        raise ValueError(
            f"data.val_fraction={fraction} holds out {n_val} of {len(pids)} training identities; "
            "need at least 1 held out and 1 left for training"
        )
    rng = np.random.default_rng(seed)
    val_pids = {pids[i] for i in rng.choice(len(pids), size=n_val, replace=False)}
    train_records, _ = relabel([r for r in dataset.train if r.pid not in val_pids])
    val_query: list[ImageRecord] = []
    val_gallery: list[ImageRecord] = []
    for pid in sorted(val_pids):
        records = [dataset.train[i] for i in by_pid[pid]]
        cams = sorted({r.camid for r in records})
        if len(cams) < 2:
            val_gallery.extend(records)
            continue
        # A camera gives a query only if it keeps an image in the gallery, so every other
        # camera's query still has a match there; if none can, the first camera gives one.
        by_cam = {cam: [r for r in records if r.camid == cam] for cam in cams}
        donors = [cam for cam in cams if len(by_cam[cam]) >= 2] or cams[:1]
        chosen = {by_cam[cam][int(rng.integers(len(by_cam[cam])))] for cam in donors}
        val_query.extend(r for r in records if r in chosen)
        val_gallery.extend(r for r in records if r not in chosen)
    if not val_query:
        raise ValueError(
            "split_validation: no held-out identity was seen by two cameras; no query possible"
        )
    log.info(
        "validation split: %d train ids (%d images), %d held-out ids -> %d queries, %d gallery images",
        len(pids) - n_val,
        len(train_records),
        n_val,
        len(val_query),
        len(val_gallery),
    )
    return train_records, val_query, val_gallery
