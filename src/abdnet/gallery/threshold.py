"""A calibrated "same person?" threshold, saved as ``threshold.json``.

Written by ``abdnet calibrate`` (and ``abdnet eval --threshold-out``) from the verification
ROC of a labelled query/gallery split (:func:`abdnet.engine.verify_embedder`): two crops are
declared the same person when their distance in the model's embedding space (squared
Euclidean distance of L2-normalized embeddings, ``2 - 2 cos``, for every model abdnet
serves) is ``<= threshold``. The file names the distance (``distance``: the space's
:attr:`~abdnet.engine.EmbeddingSpace.distance_name`), the false-accept rate the threshold was
chosen for, what it achieved on the calibration pairs, and the model (a threshold means
nothing for another model's embeddings).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abdnet.evaluation import VerificationResult
from abdnet.files import atomic_write
from abdnet.gallery.model import ModelInfo

__all__ = [
    "THRESHOLD_FORMAT",
    "STITCH_FAR_RATIO",
    "Threshold",
    "calibration_fars",
    "load_threshold",
    "save_threshold",
]

THRESHOLD_FORMAT = "abdnet-threshold"
_VERSION = 1
#: Stitching inside a camera is held to a false-accept rate this many times smaller than
#: the threshold's: the impostors of one camera (two people at once, sharing its background
#: and light) sit closer than the cross-camera impostors a calibration measures, and a wrong
#: stitch cannot be undone by the cross-camera linking. On development footage of unseen
#: people (docs/tracking.md) the FAR/10 operating point removed over-merges without losing
#: true stitches.
STITCH_FAR_RATIO = 10.0


def calibration_fars(far: float) -> list[float]:
    """The false-accept rates a calibration for ``far`` computes, largest first: ``far``,
    the stitching rate ``far / STITCH_FAR_RATIO``, and the reported 1e-2 and 1e-3."""
    return sorted({far, far / STITCH_FAR_RATIO, 1e-2, 1e-3}, reverse=True)


@dataclass(frozen=True)
class Threshold:
    threshold: float  # same person when distance <= threshold
    far: float  # the false-accept rate it was chosen for
    far_achieved: float  # FAR on the calibration pairs (<= far)
    tar: float  # true-accept rate on the calibration pairs
    eer: float  # equal error rate of the calibration pairs
    model: ModelInfo
    num_genuine: int = 0  # calibration pairs
    num_impostor: int = 0
    data: str = ""  # the calibration data set
    created: str = ""  # ISO 8601
    extra: dict[str, Any] = field(default_factory=dict)  # other operating points, notes

    def matches(self, distance: float) -> bool:
        return distance <= self.threshold

    def threshold_at(self, far: float) -> float | None:
        """The threshold of the calibration's operating point for target ``far`` (kept in
        ``extra``), or None when it was not computed."""
        if math.isclose(far, self.far, rel_tol=1e-9):
            return self.threshold
        for p in self.extra.get("operating_points", []):
            if math.isclose(float(p.get("far_target", -1.0)), far, rel_tol=1e-9):
                return float(p["threshold"])
        return None

    @property
    def stitch_threshold(self) -> float:
        """The largest distance at which two tracklets of one camera may be stitched: the
        operating point at ``far / STITCH_FAR_RATIO`` (never above :attr:`threshold`); the
        threshold itself for a file calibrated without that point."""
        t = self.threshold_at(self.far / STITCH_FAR_RATIO)
        return self.threshold if t is None else min(t, self.threshold)

    @classmethod
    def from_verification(
        cls,
        roc: VerificationResult,
        *,
        far: float,
        model: ModelInfo,
        data: str = "",
        created: str = "",
    ) -> Threshold:
        """The operating point of ``roc`` (computed in ``model.space``) for target ``far``,
        with the other operating points and the EER threshold in ``extra``."""
        point = roc.at_far(far)
        return cls(
            threshold=point.threshold,
            far=far,
            far_achieved=point.far,
            tar=point.tar,
            eer=roc.eer,
            model=model,
            num_genuine=roc.num_genuine,
            num_impostor=roc.num_impostor,
            data=data,
            created=created,
            extra={
                "operating_points": [p.to_dict() for p in roc.points],
                "eer_threshold": roc.eer_threshold,
            },
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": THRESHOLD_FORMAT,
            "version": _VERSION,
            "distance": self.model.space.distance_name,
            "threshold": self.threshold,
            "far": self.far,
            "far_achieved": self.far_achieved,
            "tar": self.tar,
            "eer": self.eer,
            "num_genuine_pairs": self.num_genuine,
            "num_impostor_pairs": self.num_impostor,
            "data": self.data,
            "created": self.created,
            "model": self.model.to_dict(),
            **({"extra": self.extra} if self.extra else {}),
        }


def save_threshold(path: str | Path, t: Threshold) -> Path:
    return atomic_write(path, json.dumps(t.to_dict(), indent=2) + "\n")


def load_threshold(path: str | Path) -> Threshold:
    """Read a threshold file; errors name the file and the key at fault."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"threshold file not found: {p}")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: not valid JSON: {exc}") from None
    if not isinstance(d, dict) or d.get("format") != THRESHOLD_FORMAT:
        raise ValueError(f"{p}: not an abdnet threshold file (written by 'abdnet calibrate')")
    if int(d.get("version", 0)) > _VERSION:
        raise ValueError(f"{p}: threshold format version {d['version']} is newer than supported")
    try:
        t = Threshold(
            threshold=float(d["threshold"]),
            far=float(d["far"]),
            far_achieved=float(d["far_achieved"]),
            tar=float(d["tar"]),
            eer=float(d["eer"]),
            model=ModelInfo.from_dict(d["model"]),
            num_genuine=int(d.get("num_genuine_pairs", 0)),
            num_impostor=int(d.get("num_impostor_pairs", 0)),
            data=str(d.get("data", "")),
            created=str(d.get("created", "")),
            extra=dict(d.get("extra", {})),
        )
    except KeyError as exc:
        raise ValueError(f"{p}: missing key {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{p}: malformed value: {exc}") from None
    expected = t.model.space.distance_name
    if d.get("distance") != expected:
        raise ValueError(f"{p}: distance {d.get('distance')!r}: expected {expected!r}")
    if not math.isfinite(t.threshold):
        raise ValueError(f"{p}: threshold must be a finite number, got {t.threshold}")
    return t
