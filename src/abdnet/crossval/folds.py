"""Identity folds of a data set: pooling, the K-fold assignment and each fold's test split.

Cross-validation by identity: the train, query and gallery images of a data set are pooled
by original person id, the ids are shuffled (deterministically from a seed and the repeat
number) and dealt into ``K`` folds of near-equal size. Fold ``k`` tests on its ids and
trains on all the others, so no person is ever on both sides.

A fold's test ids become a cross-camera query/gallery (Market-1501 protocol) chosen without
randomness: per test id and camera the images are sorted by file name and
``queries_per_camera`` evenly spaced ones (positions ``floor(i * n / q)``) become queries,
always leaving at least one of that camera's images in the gallery. On the PKU-Reid dev
set (8 orientations per camera, names sorted by orientation) ``q = 2`` picks orientations 1
and 5, the queries the dev split itself uses. An id seen by one camera only cannot be a
cross-camera query: all its images go to the gallery (extra distractors) and it is counted.
Gallery-only distractor images (pid 0 in the Market-1501 layout, never in training) join
every fold's gallery.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from abdnet.data import ImageRecord, ReIDDataset

__all__ = [
    "IdentityPool",
    "FoldSplit",
    "pool_identities",
    "assign_folds",
    "fold_split",
]

log = logging.getLogger(__name__)

DISTRACTOR_PID = 0  # Market-1501 / synthetic: gallery-only distractors


@dataclass(frozen=True)
class IdentityPool:
    """Every image of a data set grouped by original person id, and the distractors."""

    by_pid: dict[int, tuple[ImageRecord, ...]]  # original pid -> images sorted by path
    distractors: tuple[ImageRecord, ...] = ()  # gallery-only pid-0 images

    @property
    def pids(self) -> list[int]:
        return sorted(self.by_pid)

    def cameras(self, pid: int) -> set[int]:
        return {r.camid for r in self.by_pid[pid]}


@dataclass(frozen=True)
class FoldSplit:
    """One fold: training records (original pids) and the test query/gallery."""

    repeat: int
    fold: int
    train_pids: tuple[int, ...]
    test_pids: tuple[int, ...]
    train: tuple[ImageRecord, ...]
    query: tuple[ImageRecord, ...]
    gallery: tuple[ImageRecord, ...]
    single_camera_pids: tuple[int, ...] = field(default=())  # test ids with one camera

    @property
    def name(self) -> str:
        """The fold's folder name, ``r<repeat>-f<fold>``."""
        return f"r{self.repeat}-f{self.fold}"

    @property
    def query_pids(self) -> tuple[int, ...]:
        return tuple(sorted({r.pid for r in self.query}))

    def counts(self) -> dict[str, int]:
        return {
            "train_ids": len(self.train_pids),
            "train_images": len(self.train),
            "test_ids": len(self.test_pids),
            "query_ids": len(self.query_pids),
            "single_camera_test_ids": len(self.single_camera_pids),
            "query_images": len(self.query),
            "gallery_images": len(self.gallery),
        }

    def to_csv(self) -> str:
        """The fold as a data-set CSV (``path,pid,camid,split``; absolute paths, cameras
        0-based as the records hold them), readable by ``data.name: csv``."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["path", "pid", "camid", "split"])
        for split, records in (
            ("train", self.train),
            ("query", self.query),
            ("gallery", self.gallery),
        ):
            for r in records:
                w.writerow([os.path.abspath(r.path), r.pid, r.camid, split])
        return buf.getvalue()


def pool_identities(dataset: ReIDDataset) -> IdentityPool:
    """Pool ``dataset``'s train, query and gallery images by original pid (training labels
    mapped back through ``pid_map``). Gallery/query pid-0 images of an id that never
    trains are distractors; junk (pid -1) was dropped by the parsers."""
    original = {label: pid for pid, label in dataset.pid_map.items()}
    groups: dict[int, list[ImageRecord]] = defaultdict(list)
    for r in dataset.train:
        groups[original[r.pid]].append(ImageRecord(r.path, original[r.pid], r.camid))
    distractors: list[ImageRecord] = []
    for r in (*dataset.query, *dataset.gallery):
        if r.pid < 0:
            continue
        if r.pid == DISTRACTOR_PID and DISTRACTOR_PID not in dataset.pid_map:
            distractors.append(r)
            continue
        groups[r.pid].append(r)
    by_pid = {pid: tuple(sorted(set(rs), key=lambda r: r.path)) for pid, rs in groups.items()}
    return IdentityPool(by_pid, tuple(sorted(set(distractors), key=lambda r: r.path)))


def assign_folds(pids: Sequence[int], folds: int, *, seed: int, repeat: int) -> list[list[int]]:
    """Deal ``pids`` into ``folds`` groups of near-equal size (sizes differ by at most one)
    after a shuffle determined by ``(seed, repeat)``; each group sorted."""
    pids = sorted(pids)
    if folds < 2:
        raise ValueError(f"--folds: expected at least 2 folds, got {folds}")
    if len(pids) < folds:
        raise ValueError(
            f"--folds {folds}: the data set has only {len(pids)} identities; need at least one "
            "per fold"
        )
    order = np.random.default_rng([seed, repeat]).permutation(len(pids))
    groups: list[list[int]] = [[] for _ in range(folds)]
    for i, j in enumerate(order):
        groups[i % folds].append(pids[j])
    return [sorted(g) for g in groups]


def _query_positions(n: int, q: int) -> list[int]:
    """Evenly spaced positions of ``min(q, n - 1)`` queries among ``n`` sorted images."""
    take = min(q, n - 1)
    return sorted({(i * n) // take for i in range(take)}) if take > 0 else []


def fold_split(
    pool: IdentityPool,
    test_pids: Sequence[int],
    *,
    repeat: int,
    fold: int,
    queries_per_camera: int = 2,
) -> FoldSplit:
    """Fold ``fold`` of repeat ``repeat``: train on every id not in ``test_pids``, test on
    ``test_pids`` with the deterministic query choice of the module docstring."""
    if queries_per_camera < 1:
        raise ValueError(f"--queries-per-camera: expected >= 1, got {queries_per_camera}")
    test = set(test_pids)
    unknown = sorted(test - set(pool.by_pid))
    if unknown:
        raise ValueError(f"fold {fold}: test ids {unknown[:5]} are not in the data set")
    train_pids = [p for p in pool.pids if p not in test]
    query: list[ImageRecord] = []
    gallery: list[ImageRecord] = list(pool.distractors)
    single: list[int] = []
    for pid in sorted(test):
        records = pool.by_pid[pid]
        cams = sorted(pool.cameras(pid))
        if len(cams) < 2:
            single.append(pid)
            gallery.extend(records)
            continue
        for cam in cams:
            mine = [r for r in records if r.camid == cam]
            chosen = set(_query_positions(len(mine), queries_per_camera))
            query.extend(r for i, r in enumerate(mine) if i in chosen)
            gallery.extend(r for i, r in enumerate(mine) if i not in chosen)
    if not query:
        raise ValueError(
            f"fold {fold} (repeat {repeat}): none of its {len(test)} test identities was seen by "
            "two cameras with an image to spare; no cross-camera query is possible"
        )
    if single:
        log.warning(
            "fold %s (repeat %s): %d of %d test identities are seen by one camera only "
            "(gallery only, no queries): %s",
            fold,
            repeat,
            len(single),
            len(test),
            single[:10],
        )
    return FoldSplit(
        repeat=repeat,
        fold=fold,
        train_pids=tuple(train_pids),
        test_pids=tuple(sorted(test)),
        train=tuple(r for p in train_pids for r in pool.by_pid[p]),
        query=tuple(query),
        gallery=tuple(gallery),
        single_camera_pids=tuple(single),
    )
