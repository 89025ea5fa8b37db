"""The one place where tracking embeds crops: every tracklet's chosen crops, in one batched
call of the run's :class:`abdnet.engine.Embedder` (its transform, batching, flip,
normalisation and backend); the pooled vectors stay in the embedder's space."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from abdnet.engine import Embedder
from abdnet.tracking.tracklets import Tracklet, pool_embeddings

__all__ = ["embed_tracklets"]

log = logging.getLogger(__name__)


def embed_tracklets(
    embedder: Embedder,
    tracklets: Sequence[Tracklet],
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Embed the chosen crops of all ``tracklets`` at once and set each tracklet's pooled
    ``embedding`` (quality-weighted mean, L2-normalized when the space is) and each embedded
    crop's own ``embedding`` (what ``abdnet track --gallery`` enrols). Tracklets without crops
    keep ``None``. Returns the number of crops embedded."""
    items = [(t, c) for t in tracklets for c in t.crops if c.image is not None and c.image.size]
    if not items:
        return 0
    images = [c.image for _, c in items]
    result = embedder.embed(images, skip_bad=True, progress=progress)
    feats = result.features.numpy()
    by_tracklet: dict[int, list[tuple[np.ndarray, float]]] = {}
    for row, pos in enumerate(result.kept):
        t, c = items[pos]
        c.embedding = feats[row]
        by_tracklet.setdefault(id(t), []).append((feats[row], c.quality))
    for t in tracklets:
        got = by_tracklet.get(id(t))
        if got:
            t.embedding = pool_embeddings(
                np.stack([f for f, _ in got]),
                np.asarray([max(q, 1e-3) for _, q in got]),
                normalized=embedder.space.normalized,
            )
    if result.skipped:
        log.warning("%d crop(s) could not be embedded", len(result.skipped))
    return len(result.kept)
