"""The result of one trained (variant, seed): ``VariantResult``, stored in its run folder."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abdnet.ablation.variants import PaperRow
from abdnet.evaluation import RankResult

__all__ = ["METRIC_NAMES", "RESULT_FILE", "TIME_NAME", "VariantResult", "read_result"]

RESULT_FILE = "ablation_result.json"  # in each run folder; its presence marks a finished run
METRIC_NAMES = RankResult.METRIC_NAMES  # the VariantResult fields of the metrics
TIME_NAME = "train_seconds"  # VariantResult field: training time summed over the epochs


@dataclass
class VariantResult:
    """Test-set numbers of one trained (variant, seed) (fractions in [0, 1]; time in seconds)."""

    name: str
    label: str
    rank1: float
    rank5: float
    rank10: float
    mAP: float
    mINP: float
    train_seconds: float
    run_dir: str
    seed: int = 0  # the run's train.seed
    paper: PaperRow | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["paper"] = list(self.paper) if self.paper else None
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> VariantResult:
        d = dict(d)
        if d.get("paper") is not None:
            d["paper"] = PaperRow(*d["paper"])
        return cls(**d)


def read_result(run_dir: str | Path) -> VariantResult | None:
    """The finished run's result in ``run_dir``, or None when it has not finished."""
    p = Path(run_dir) / RESULT_FILE
    if not p.is_file():
        return None
    try:
        return VariantResult.from_json(json.loads(p.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(
            f"{p}: not a valid ablation result ({exc}); delete it to evaluate the run again"
        ) from exc
