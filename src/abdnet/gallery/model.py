"""Which model made a gallery's embeddings: a fingerprint of the weights and the transform.

Embeddings of two models (or of one model with two input transforms) live in different
spaces; comparing them gives meaningless distances without any error. A gallery and a
calibrated threshold therefore record :class:`ModelInfo` and refuse another model's.

The fingerprint is the sha256 of the weights' values (tensor names, dtypes, shapes and bytes,
in name order: the same weights saved twice, or in another folder, have one fingerprint) or,
for an ONNX graph, of the file's bytes; combined with the test transform (input size,
mean/std) and flip averaging.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import torch

from abdnet.models import weights_digest

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
        raise ModelMismatchError(
            f"{what} was made with model {self.short}, not with model {other.short} "
            f"({', '.join(reasons) or 'different fingerprint'}): embeddings of different models "
            f"cannot be compared; use the same model (and --flip setting) or a new gallery"
        )


def describe_extractor(extractor: Any, *, source: str = "") -> ModelInfo:
    """:class:`ModelInfo` of an :class:`abdnet.retrieval.FeatureExtractor`.

    The embedding size is measured with one forward pass of a blank image when the model
    does not declare it.
    """
    data = extractor.config.data
    # the network the features come from, whichever runtime (ONNX Runtime, OpenVINO) runs it
    weights = weights_digest(getattr(extractor, "network", None) or extractor.model)
    dim = extractor.feature_dim
    if dim is None:
        probe = torch.zeros(1, 3, int(data.height), int(data.width))
        dim = int(extractor(probe).shape[1])
    transform = {
        "weights": weights,
        "height": int(data.height),
        "width": int(data.width),
        "mean": [float(x) for x in data.mean],
        "std": [float(x) for x in data.std],
        "flip": bool(extractor.flip),
        "normalize": bool(extractor.normalize),
    }
    fingerprint = hashlib.sha256(json.dumps(transform, sort_keys=True).encode()).hexdigest()
    return ModelInfo(
        fingerprint=fingerprint,
        weights=weights,
        dim=int(dim),
        height=int(data.height),
        width=int(data.width),
        mean=tuple(float(x) for x in data.mean),
        std=tuple(float(x) for x in data.std),
        flip=bool(extractor.flip),
        source=source,
    )
