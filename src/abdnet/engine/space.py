"""The embedding space an :class:`~abdnet.engine.embedder.Embedder` declares, and its distance rule.

Every distance, score and threshold abdnet prints, stores or accepts is a distance of this
space, and this file is the one place that writes the rule down:

- ``normalized=True, metric="euclidean"`` (what every gallery, index, threshold and the
  service use): vectors are L2-normalized and the distance is their **squared Euclidean
  distance**, which on unit vectors is ``2 - 2 cos``; the score is the cosine
  (``1 - d / 2``). faiss searches it with its L2 metric (whose results are squared
  distances already), Milvus by inner product (the cosine, turned into the distance).
- ``normalized=True, metric="cosine"``: ``1 - cos`` of unit vectors; faiss and Milvus search
  by inner product.
- ``normalized=False`` (raw embeddings, ``metric="euclidean"`` only): squared Euclidean
  distance of the vectors as the network outputs them, the official code's test metric;
  faiss and Milvus use their L2 metric, and there is no score.

``model_digest`` names the weights the vectors come from (:func:`abdnet.models.weights_digest`):
two spaces with different digests, dimensions or rules cannot be compared
(:meth:`EmbeddingSpace.check_same`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from abdnet.config import Metric
from abdnet.evaluation import METRICS, pairwise_distance

__all__ = ["EmbeddingSpace", "FaissMetric", "MilvusMetric", "SpaceMismatchError", "project"]

FaissMetric = Literal["l2", "inner_product"]
MilvusMetric = Literal["L2", "IP"]

# The names files record for each rule (``threshold.json`` ``distance``, index and gallery
# metadata); the first is the name threshold files have always carried.
_DISTANCE_NAMES = {
    ("euclidean", True): "squared_euclidean_l2_normalized",
    ("cosine", True): "cosine_distance_l2_normalized",
    ("euclidean", False): "squared_euclidean",
}
_RULES = {
    ("euclidean", True): "squared L2 on unit vectors (2 - 2 cos)",
    ("cosine", True): "1 - cos on unit vectors",
    ("euclidean", False): "squared L2 on raw embeddings",
}


class SpaceMismatchError(ValueError):
    """Vectors, an index, a gallery or a threshold of one embedding space met another."""


@dataclass(frozen=True)
class EmbeddingSpace:
    """Where an embedder's vectors live and how two of them are compared (module docstring)."""

    dim: int  # D, the embedding size
    normalized: bool = True  # vectors are L2-normalized
    metric: Metric = "euclidean"  # "euclidean": squared Euclidean; "cosine": 1 - cos
    model_digest: str = ""  # sha256 hex of the weights; "" when unknown

    def __post_init__(self) -> None:
        if int(self.dim) < 1:
            raise ValueError(f"embedding space: dim must be >= 1, got {self.dim}")
        if self.metric not in METRICS:
            raise ValueError(f"embedding space: metric {self.metric!r}: expected one of {METRICS}")
        if self.metric == "cosine" and not self.normalized:
            raise ValueError("embedding space: metric 'cosine' needs normalized=True")

    # -- the rule ----------------------------------------------------------------------------

    @property
    def distance_name(self) -> str:
        """The rule's name in files, e.g. ``squared_euclidean_l2_normalized``."""
        return _DISTANCE_NAMES[(self.metric, self.normalized)]

    @property
    def rule(self) -> str:
        """The rule in words, for messages: ``squared L2 on unit vectors (2 - 2 cos)``."""
        return _RULES[(self.metric, self.normalized)]

    @property
    def has_score(self) -> bool:
        """Whether a distance has a cosine score (only unit vectors have one)."""
        return self.normalized

    def project(self, features: torch.Tensor | np.ndarray) -> Any:
        """``(N, D)`` network embeddings moved into the space (:func:`project`)."""
        return project(features, normalized=self.normalized)

    def distances(
        self, qf: torch.Tensor | np.ndarray, gf: torch.Tensor | np.ndarray
    ) -> torch.Tensor:
        """``(Q, G)`` distances between vectors of this space."""
        return pairwise_distance(qf, gf, self.metric)

    def distance_from_score(self, score: np.ndarray | float) -> np.ndarray | float:
        """The distance of two unit vectors from their cosine ``score``."""
        s = np.clip(np.asarray(score, dtype=np.float64), -1.0, 1.0)
        if not self.normalized:
            raise ValueError(f"{self.rule}: a cosine score does not give a distance")
        d = 2.0 - 2.0 * s if self.metric == "euclidean" else 1.0 - s
        return np.maximum(d, 0.0) if d.ndim else float(max(float(d), 0.0))

    def score_from_distance(self, distance: np.ndarray | float) -> np.ndarray | float:
        """The cosine of two unit vectors at ``distance``."""
        d = np.asarray(distance, dtype=np.float64)
        if not self.normalized:
            raise ValueError(f"{self.rule}: a distance has no cosine score")
        s = 1.0 - d / 2.0 if self.metric == "euclidean" else 1.0 - d
        return np.clip(s, -1.0, 1.0) if s.ndim else float(np.clip(float(s), -1.0, 1.0))

    # -- how a search library searches it ------------------------------------------------------

    @property
    def faiss_metric(self) -> FaissMetric:
        """faiss's metric for this space: ``l2`` (squared distances) or ``inner_product``."""
        return "l2" if self.metric == "euclidean" else "inner_product"

    @property
    def milvus_metric(self) -> MilvusMetric:
        """Milvus's ``metric_type``: ``IP`` on unit vectors, ``L2`` (squared) on raw ones."""
        return "IP" if self.normalized else "L2"

    def distance_from_search(
        self, values: np.ndarray | float, metric: FaissMetric | MilvusMetric
    ) -> np.ndarray | float:
        """Distances of this space from the ``values`` a search in ``metric`` returned:
        squared L2 values as they are (halved into ``1 - cos`` for a cosine space),
        inner products of unit vectors through :meth:`distance_from_score`."""
        if metric in ("l2", "L2"):
            v = np.maximum(np.asarray(values, dtype=np.float64), 0.0)
            d = v / 2.0 if self.metric == "cosine" else v
            return d if d.ndim else float(d)
        if metric in ("inner_product", "IP"):
            return self.distance_from_score(values)
        raise ValueError(f"search metric {metric!r}: expected l2, inner_product, L2 or IP")

    def score_from_search(
        self, values: np.ndarray | float, metric: FaissMetric | MilvusMetric
    ) -> np.ndarray | float:
        """Cosine scores from the ``values`` a search in ``metric`` returned: an inner product
        of unit vectors is the score itself (clipped to [-1, 1])."""
        if metric in ("inner_product", "IP"):
            s = np.clip(np.asarray(values, dtype=np.float64), -1.0, 1.0)
            return s if s.ndim else float(s)
        return self.score_from_distance(self.distance_from_search(values, metric))

    # -- records -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "dim": int(self.dim),
            "normalized": bool(self.normalized),
            "metric": self.metric,
            "distance": self.distance_name,
            "model_digest": self.model_digest,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "embedding space") -> EmbeddingSpace:
        """The space :meth:`to_dict` wrote; errors name ``where`` and the key at fault."""
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(d).__name__}")
        try:
            space = cls(
                dim=int(d["dim"]),
                normalized=bool(d.get("normalized", True)),
                metric=str(d.get("metric", "euclidean")),  # type: ignore[arg-type]
                model_digest=str(d.get("model_digest", "")),
            )
        except KeyError as exc:
            raise ValueError(f"{where}: missing key {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
        if "distance" in d and d["distance"] != space.distance_name:
            raise ValueError(
                f"{where}: distance {d['distance']!r} does not match metric {space.metric!r} "
                f"with normalized={space.normalized} ({space.distance_name!r})"
            )
        return space

    def check_same(self, other: EmbeddingSpace, what: str) -> None:
        """Raise :class:`SpaceMismatchError` naming ``what`` unless ``other`` is this space
        (an unknown digest on either side matches any)."""
        reasons = []
        if other.dim != self.dim:
            reasons.append(f"{other.dim}-d instead of {self.dim}-d vectors")
        if (other.metric, other.normalized) != (self.metric, self.normalized):
            reasons.append(f"{other.rule} instead of {self.rule}")
        if other.model_digest and self.model_digest and other.model_digest != self.model_digest:
            reasons.append(f"weights {other.model_digest[:12]} instead of {self.model_digest[:12]}")
        if reasons:
            raise SpaceMismatchError(f"{what}: another embedding space ({', '.join(reasons)})")


def project(features: torch.Tensor | np.ndarray, *, normalized: bool) -> Any:
    """``(N, D)`` network embeddings moved into a space: L2-normalized rows when
    ``normalized``, else as they are; same type as given, float32."""
    if isinstance(features, np.ndarray):
        f = features.astype(np.float32, copy=False)
        if not normalized:
            return f
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    t = features.float()
    return torch.nn.functional.normalize(t, dim=1) if normalized else t
