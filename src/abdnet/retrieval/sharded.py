"""A feature file from a list of images, in one process or sharded across torchrun ranks.

:func:`extract_feature_file` is what ``abdnet extract`` runs. Single-process, it extracts
every image and writes the file. Under ``torchrun`` (a :class:`abdnet.engine.DistContext`
with ``world_size`` W > 1) rank r extracts the contiguous share ``[r*n//W, (r+1)*n//W)`` of
the list (:func:`abdnet.engine.shard`) through the same :class:`FeatureExtractor`, writes it
atomically to ``OUT.part-R-of-W.npz`` beside the output, and reports success to the others
(:func:`abdnet.engine.failed_ranks`, a collective every rank reaches, also after an error).
When every rank succeeded, rank 0 reads the parts in rank order, checks that each holds
exactly its share (the kept paths in order plus the skipped ones), writes the one output file
(the same file a single process writes: order, paths, labels, meta) and removes the parts.
When any rank failed (or died: torchrun then stops the others) nothing is written and the
parts are removed; the error names the failed ranks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from abdnet.engine import DistContext, failed_ranks, shard
from abdnet.retrieval.extractor import FeatureExtractor
from abdnet.retrieval.features import FeatureSet, load_features, save_features
from abdnet.retrieval.files import parse_labels

__all__ = ["FeatureFileResult", "ShardFailedError", "extract_feature_file", "part_path"]

log = logging.getLogger(__name__)


class ShardFailedError(RuntimeError):
    """A rank of a sharded extraction failed; nothing was written."""


@dataclass
class FeatureFileResult:
    """What :func:`extract_feature_file` did. On ranks other than 0 of a sharded run
    ``features`` is None (rank 0 wrote the file) and ``skipped`` holds this rank's only."""

    path: Path
    features: FeatureSet | None  # what was written (rank 0 / single process)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image, reason), all ranks
    images: int = 0  # images this rank extracted (read or skipped)


def part_path(out: str | Path, rank: int, world_size: int) -> Path:
    """Where rank ``rank`` of ``world_size`` writes its share of ``out``."""
    out = Path(out)
    return out.with_name(f"{out.name}.part-{rank}-of-{world_size}.npz")


def _feature_set(features: np.ndarray, paths: list[str], meta: dict[str, Any]) -> FeatureSet:
    if not paths:
        raise ValueError("no image could be read; nothing written")
    labels = parse_labels(paths)
    return FeatureSet(
        features=features,
        paths=paths,
        pids=labels[0] if labels else None,
        camids=labels[1] if labels else None,
        meta=meta,
    )


def extract_feature_file(
    extractor: FeatureExtractor,
    paths: list[str],
    out: str | Path,
    *,
    meta: dict[str, Any],
    skip_bad: bool = False,
    ctx: DistContext | None = None,
    progress: Callable[[int], None] | None = None,
) -> FeatureFileResult:
    """Extract ``paths`` into the feature file ``out`` (see the module docstring).

    ``meta`` is stored in the file. Unreadable images raise ``ImageReadError`` unless
    ``skip_bad``. Raises :class:`ShardFailedError` on every rank when any rank failed.
    """
    out = Path(out)
    ctx = ctx or DistContext()
    share = shard(len(paths), ctx)
    mine = paths[share.start : share.stop]
    if ctx.enabled:
        log.info("rank %d/%d: %d images", ctx.rank, ctx.world_size, len(mine))
    else:
        result = extractor.extract(mine, skip_bad=skip_bad, progress=progress)
        kept = [mine[i] for i in result.kept]
        fs = _feature_set(result.features.numpy(), kept, meta)
        return FeatureFileResult(save_features(out, fs), fs, result.skipped, len(mine))

    part = part_path(out, ctx.rank, ctx.world_size)
    error: BaseException | None = None
    skipped: list[tuple[str, str]] = []
    try:
        result = extractor.extract(mine, skip_bad=skip_bad, progress=progress)
        skipped = result.skipped
        kept = [mine[i] for i in result.kept]
        part_meta = {"share": [share.start, share.stop], "skipped": [list(s) for s in skipped]}
        save_features(part, FeatureSet(result.features.numpy(), kept, meta=part_meta))
    except Exception as exc:  # reported to the other ranks below, then raised here
        log.error("rank %d/%d failed: %s", ctx.rank, ctx.world_size, exc)
        error = exc
    failed = failed_ranks(error is None, ctx)
    if error is not None:
        part.unlink(missing_ok=True)
        raise error
    if failed:
        if ctx.is_main:
            for r in range(ctx.world_size):
                part_path(out, r, ctx.world_size).unlink(missing_ok=True)
        raise ShardFailedError(
            f"{out}: rank(s) {', '.join(map(str, failed))} of {ctx.world_size} failed "
            f"(see their errors); nothing written"
        )
    if not ctx.is_main:
        return FeatureFileResult(out, None, skipped, len(mine))
    try:
        fs, skipped = _merge(out, paths, ctx.world_size, meta)
        written = save_features(out, fs)
    finally:
        for r in range(ctx.world_size):
            part_path(out, r, ctx.world_size).unlink(missing_ok=True)
    return FeatureFileResult(written, fs, skipped, len(mine))


def _merge(
    out: Path, paths: list[str], world_size: int, meta: dict[str, Any]
) -> tuple[FeatureSet, list[tuple[str, str]]]:
    """The parts of all ranks joined in rank order, each checked against its share."""
    features: list[np.ndarray] = []
    kept: list[str] = []
    skipped: list[tuple[str, str]] = []
    for r in range(world_size):
        path = part_path(out, r, world_size)
        share = shard(len(paths), DistContext(rank=r, world_size=world_size))
        expected = paths[share.start : share.stop]
        part = load_features(path)
        part_skipped = [(str(a), str(b)) for a, b in part.meta.get("skipped", [])]
        skipped_items = {item for item, _ in part_skipped}
        if part.meta.get("share") != [share.start, share.stop] or part.paths != [
            p for p in expected if p not in skipped_items
        ]:
            raise ShardFailedError(
                f"{path}: holds {len(part.paths)} images (+{len(part_skipped)} skipped) that are "
                f"not rank {r}'s share, images {share.start}..{share.stop - 1} of {len(paths)}; "
                f"nothing written"
            )
        if part.paths:
            features.append(part.features)
        kept += part.paths
        skipped += part_skipped
    dims = {f.shape[1] for f in features}
    if len(dims) > 1:
        raise ShardFailedError(f"{out}: the ranks' features differ in size ({sorted(dims)})")
    joined = np.concatenate(features) if features else np.zeros((0, 0), np.float32)
    return _feature_set(joined, kept, meta), skipped
