"""What the routes share: the model, the gallery, the batchers, the access policy, the limits.

One ``ServiceState`` per app, kept in ``app.state.service`` and handed to the routes by
``abdnet.service.api.deps.service``. Images of concurrent requests are embedded together
(``DynamicBatcher``), and the gallery searches of concurrent queries go to Milvus together.
"""

import asyncio
from typing import Any, NamedTuple

import numpy as np
import torch

from abdnet.engine import Embedder
from abdnet.gallery import (
    CropImage,
    Gallery,
    GalleryEntry,
    Hit,
    ModelInfo,
    SearchFilter,
    Sightings,
    Threshold,
)
from abdnet.service.auth import AccessPolicy
from abdnet.service.batcher import DynamicBatcher
from abdnet.service.limits import ServiceSettings
from abdnet.service.metrics import ServiceMetrics

__all__ = ["ServiceState"]


class _Query(NamedTuple):
    """One query of a batched gallery search."""

    embedding: np.ndarray  # (D,)
    k: int
    filter: SearchFilter


class ServiceState:
    """The model, the gallery, the batchers and the policy that every route reads."""

    def __init__(
        self,
        extractor: Embedder,
        gallery: Gallery,
        model: ModelInfo,
        policy: AccessPolicy,
        threshold: Threshold | None,
        settings: ServiceSettings,
    ) -> None:
        self.extractor = extractor
        self.gallery = gallery
        self.model = model
        self.policy = policy
        self.threshold = threshold
        self.settings = settings
        self.metrics = ServiceMetrics(gallery_size=lambda: float(gallery.size()))
        self.embedder: DynamicBatcher | None = None
        self.searcher: DynamicBatcher | None = None

    def start(self) -> None:
        s = self.settings
        self.embedder = DynamicBatcher(
            self._embed_batch,
            max_batch=s.max_batch,
            max_wait_ms=s.max_wait_ms,
            name="abdnet-embed",
            on_batch=self.metrics.batch_observer("embed"),
        )
        self.searcher = DynamicBatcher(
            self._search_batch,
            max_batch=s.max_batch,
            # queries arrive in bursts (one per image of an embedding batch): a short wait
            # lets a burst share one Milvus call
            max_wait_ms=2.0,
            name="abdnet-search",
            on_batch=self.metrics.batch_observer("search"),
        )

    def stop(self) -> None:
        for b in (self.embedder, self.searcher):
            if b is not None:
                b.close()

    def _embed_batch(self, tensors: list[torch.Tensor]) -> list[np.ndarray]:
        feats = self.extractor(torch.stack(tensors)).numpy()  # (B, D), in the model's space
        return list(feats)

    def _search_batch(self, queries: list[_Query]) -> list[list[Hit]]:
        k = max(q.k for q in queries)
        hits = self.gallery.search(
            np.stack([q.embedding for q in queries]), k, [q.filter for q in queries]
        )
        return [h[: q.k] for h, q in zip(hits, queries)]

    async def embed(self, crops: list[CropImage]) -> list[np.ndarray]:
        assert self.embedder is not None
        transform = self.extractor.transform
        tensors = await asyncio.to_thread(lambda: [transform(c.image) for c in crops])
        return list(await asyncio.gather(*(self.embedder.run(t) for t in tensors)))

    async def search(self, feat: np.ndarray, k: int, filt: SearchFilter) -> list[Hit]:
        """The ``k`` nearest gallery entries of one embedding, batched with other queries."""
        assert self.searcher is not None
        return await self.searcher.run(_Query(feat, k, filt))

    def match(self, distance: float) -> bool | None:
        return None if self.threshold is None else self.threshold.matches(distance)

    def thresholds(self) -> dict[str, float | None]:
        """The ``threshold`` and ``far`` fields of the search, verify and info answers."""
        t = self.threshold
        return {
            "threshold": None if t is None else t.threshold,
            "far": None if t is None else t.far,
        }

    @staticmethod
    def entry_json(e: GalleryEntry) -> dict[str, Any]:
        """A gallery entry as the API shows it: every field of the entry (camera from 1,
        capture time or None, frame or None, label, source file name, ...) and its image."""
        return {**e.to_dict(), "image": f"/gallery/{e.id}/image"}

    def hit_json(self, h: Hit) -> dict[str, Any]:
        """A search hit: its distance, score and match, then the entry as ``entry_json``."""
        return {
            "id": h.entry.id,
            "distance": h.distance,
            "score": h.score,
            "match": self.match(h.distance),
            **self.entry_json(h.entry),
        }

    def sightings_json(self, s: Sightings) -> dict[str, Any]:
        """One identity of a sightings answer: its label, nearest distance, score and match,
        its sightings per camera in spans, and its hits as ``hit_json``."""
        return {
            "label": s.label,
            "distance": s.distance,
            "score": s.score,
            "match": self.match(s.distance),
            "sightings": s.sightings,
            "complete": s.complete,
            "cameras": [c.to_dict() for c in s.cameras],
            "hits": [self.hit_json(h) for h in s.hits],
        }
