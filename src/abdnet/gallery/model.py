"""Which model made a gallery's embeddings: a fingerprint of the weights and the transform.

Embeddings of two models (or of one model with two input transforms) live in different
spaces; comparing them gives meaningless distances without any error. A gallery and a
calibrated threshold therefore record :class:`ModelInfo` and refuse another model's.

The fingerprint is the sha256 of the weights' values (tensor names, dtypes, shapes and bytes,
in name order: the same weights saved twice, or in another folder, have one fingerprint) or,
for an ONNX graph, of the file's bytes; combined with the test transform (input size,
mean/std), flip averaging and the embedding space (:class:`abdnet.engine.EmbeddingSpace`:
unit vectors or raw, the distance rule). :attr:`ModelInfo.space` is the space the gallery's
search and the threshold's distances are in.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from abdnet.config import Metric
from abdnet.engine import Embedder, EmbeddingSpace

__all__ = ["ModelInfo", "ModelMismatchError", "describe_extractor"]


class ModelMismatchError(ValueError):
    """Embeddings of one model met a gallery or threshold made with another."""


@dataclass(frozen=True)
class ModelInfo:
    fingerprint: str  # sha256 hex of weights + transform + flip
    weights: str  # sha256 hex of the weights alone
    dim: int  # embedding size
    height: int  # test transform: input size
    width: int
    mean: tuple[float, ...]  # test transform: normalization
    std: tuple[float, ...]
    flip: bool  # embeddings averaged with the mirrored image
    source: str = ""  # where the weights came from (informative only)
    normalized: bool = True  # the space: unit vectors (files without the key: always were)
    metric: Metric = "euclidean"  # the space's distance: squared Euclidean or 1 - cos

    @property
    def space(self) -> EmbeddingSpace:
        """The embedding space of the model's vectors (and of distances and thresholds)."""
        return EmbeddingSpace(
            dim=self.dim, normalized=self.normalized, metric=self.metric, model_digest=self.weights
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelInfo:
        return cls(
            fingerprint=str(d["fingerprint"]),
            weights=str(d["weights"]),
            dim=int(d["dim"]),
            height=int(d["height"]),
            width=int(d["width"]),
            mean=tuple(float(x) for x in d["mean"]),
            std=tuple(float(x) for x in d["std"]),
            flip=bool(d["flip"]),
            source=str(d.get("source", "")),
            normalized=bool(d.get("normalized", True)),
            metric=str(d.get("metric", "euclidean")),  # type: ignore[arg-type]
        )

    @property
    def short(self) -> str:
        """A readable name: the first 12 hex digits and the source."""
        return f"{self.fingerprint[:12]} ({self.source})" if self.source else self.fingerprint[:12]

    def check_same(self, other: ModelInfo, what: str) -> None:
        """Raise ModelMismatchError naming ``what`` unless ``other`` is the same model."""
        if other.fingerprint == self.fingerprint:
            return
        reasons = []
        if other.weights != self.weights:
            reasons.append("other weights")
        if (other.height, other.width) != (self.height, self.width):
            reasons.append(
                f"input {other.height}x{other.width} instead of {self.height}x{self.width}"
            )
        if (other.mean, other.std) != (self.mean, self.std):
            reasons.append("other mean/std")
        if other.flip != self.flip:
            reasons.append("flip averaging " + ("on" if other.flip else "off"))
        if (other.normalized, other.metric) != (self.normalized, self.metric):
            reasons.append(f"{other.space.rule} instead of {self.space.rule}")
        raise ModelMismatchError(
            f"{what} was made with model {self.short}, not with model {other.short} "
            f"({', '.join(reasons) or 'different fingerprint'}): embeddings of different models "
            f"cannot be compared; use the same model (and --flip setting) or a new gallery"
        )


def describe_extractor(embedder: Embedder, *, source: str = "") -> ModelInfo:
    """:class:`ModelInfo` of an :class:`~abdnet.engine.Embedder` (an
    :class:`abdnet.retrieval.FeatureExtractor`): its space (dimension, weights digest, rule),
    test transform and flip averaging."""
    data = embedder.config.data
    space = embedder.space
    if not space.model_digest:
        raise TypeError(
            "cannot fingerprint an embedder whose runner has neither weights nor a model file "
            "(an nn.Module, or a backend with the .path of its model file, is needed)"
        )
    transform: dict[str, Any] = {
        "weights": space.model_digest,
        "height": int(data.height),
        "width": int(data.width),
        "mean": [float(x) for x in data.mean],
        "std": [float(x) for x in data.std],
        "flip": bool(embedder.flip),
        "normalize": bool(space.normalized),
    }
    if space.metric != "euclidean":  # the fingerprints of squared-L2 spaces stay as they were
        transform["metric"] = space.metric
    fingerprint = hashlib.sha256(json.dumps(transform, sort_keys=True).encode()).hexdigest()
    return ModelInfo(
        fingerprint=fingerprint,
        weights=space.model_digest,
        dim=space.dim,
        height=int(data.height),
        width=int(data.width),
        mean=tuple(float(x) for x in data.mean),
        std=tuple(float(x) for x in data.std),
        flip=bool(embedder.flip),
        source=source,
        normalized=space.normalized,
        metric=space.metric,
    )
