"""Statistics over seeds: per metric the mean and sample std of a variant, and each row's
difference to the reference row (the baseline) with its standard error."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from abdnet.ablation.results import METRIC_NAMES, TIME_NAME, VariantResult
from abdnet.ablation.variants import PaperRow

__all__ = [
    "NOISE_SE",
    "REFERENCE",
    "Difference",
    "MetricSummary",
    "VariantSummary",
    "reference_row",
    "summarize",
]

NOISE_SE = 2.0  # a difference to the reference row is marked when |delta| > NOISE_SE * SE
REFERENCE = "baseline"  # the row differences are taken to (the first row when it is absent)


@dataclass(frozen=True)
class MetricSummary:
    """One metric of one variant over its seeds."""

    values: tuple[float, ...]  # one per seed, in seed order

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """Sample standard deviation (n - 1 in the denominator); NaN with one seed."""
        return statistics.stdev(self.values) if self.n > 1 else math.nan

    @property
    def sem(self) -> float:
        """Standard error of the mean, ``std / sqrt(n)``; NaN with one seed."""
        return self.std / math.sqrt(self.n)


@dataclass(frozen=True)
class Difference:
    """A row's mean minus the reference row's mean, with the standard error of the difference
    (``sqrt(s^2/n + s_ref^2/n_ref)``: the two rows' seeds taken as independent samples)."""

    delta: float
    se: float  # NaN when either row has a single seed

    @property
    def beyond_noise(self) -> bool:
        """``|delta| > NOISE_SE * se``: larger than the seed-to-seed noise measured. A screen,
        not a significance test (see the footer of ``table.md``)."""
        return not math.isnan(self.se) and abs(self.delta) > NOISE_SE * self.se

    @classmethod
    def between(cls, row: MetricSummary, reference: MetricSummary) -> Difference:
        return cls(row.mean - reference.mean, math.hypot(row.sem, reference.sem))


@dataclass(frozen=True)
class VariantSummary:
    """All finished seeds of one variant."""

    name: str
    label: str
    paper: PaperRow | None
    runs: tuple[VariantResult, ...]  # in seed order

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(r.seed for r in self.runs)

    def stats(self, metric: str) -> MetricSummary:
        """``metric``: one of ``METRIC_NAMES`` (fractions) or ``TIME_NAME`` (seconds)."""
        if metric not in (*METRIC_NAMES, TIME_NAME):
            raise ValueError(
                f"unknown metric {metric!r}; expected one of {', '.join((*METRIC_NAMES, TIME_NAME))}"
            )
        return MetricSummary(tuple(float(getattr(r, metric)) for r in self.runs))

    def difference(self, metric: str, reference: VariantSummary) -> Difference:
        return Difference.between(self.stats(metric), reference.stats(metric))


def summarize(results: Sequence[VariantResult]) -> list[VariantSummary]:
    """Per-seed results grouped by variant (variants in order of appearance, runs by seed)."""
    groups: dict[str, list[VariantResult]] = {}
    for r in results:
        groups.setdefault(r.name, []).append(r)
    return [
        VariantSummary(
            name=rs[0].name,
            label=rs[0].label,
            paper=rs[0].paper,
            runs=tuple(sorted(rs, key=lambda r: r.seed)),
        )
        for rs in groups.values()
    ]


def reference_row(rows: Sequence[VariantSummary]) -> VariantSummary:
    """The row the differences are taken to: ``REFERENCE`` (the baseline) when present, else
    the first row."""
    if not rows:
        raise ValueError("no finished runs to compare")
    return next((r for r in rows if r.name == REFERENCE), rows[0])
