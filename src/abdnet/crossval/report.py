"""The cross-validation's report: ``cv.json``, ``cv.md`` and the plot ``cv.png``.

Every metric is summarised over the finished folds as the mean ± the sample standard
deviation (n - 1 in the denominator; the spread of one fold's number, not the uncertainty
of the mean). Each fold's row carries its number of test identities: mAP falls as the
gallery grows, so folds are only comparable at similar sizes.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abdnet.crossval.plan import METRICS, CVPlan, FoldResult
from abdnet.files import atomic_file, atomic_write

__all__ = ["MetricStats", "summarize_folds", "write_report", "REPORT_METRICS"]

REPORT_METRICS = ("mAP", "rank1", "rank5", "mINP")  # the columns of cv.md and the plot


@dataclass(frozen=True)
class MetricStats:
    """One metric over the finished folds."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        finite = [v for v in self.values if not math.isnan(v)]
        return statistics.fmean(finite) if finite else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (n - 1); NaN with fewer than two folds."""
        finite = [v for v in self.values if not math.isnan(v)]
        return statistics.stdev(finite) if len(finite) > 1 else math.nan

    def text(self, scale: float = 100.0, digits: int = 1) -> str:
        if math.isnan(self.std):
            return f"{scale * self.mean:.{digits}f}"
        return f"{scale * self.mean:.{digits}f} ± {scale * self.std:.{digits}f}"


def summarize_folds(results: Sequence[FoldResult]) -> dict[str, MetricStats]:
    """``metric -> MetricStats`` over ``results`` (the metrics of ``runner.METRICS``)."""
    return {m: MetricStats(tuple(float(getattr(r, m)) for r in results)) for m in METRICS}


def _json(plan: CVPlan, results: Sequence[FoldResult]) -> dict[str, Any]:
    stats = summarize_folds(results)
    single = sum(1 for p in plan.pool.pids if len(plan.pool.cameras(p)) < 2) if plan.pool else 0
    return {
        "data_root": plan.data_root,
        "identities": len(plan.pool.pids) if plan.pool else None,
        "single_camera_identities": single,
        "folds": plan.folds,
        "repeats": plan.repeats,
        "seed": plan.seed,
        "queries_per_camera": plan.queries_per_camera,
        "finished": len(results),
        "planned": len(plan.splits),
        "summary": {
            m: {"mean": s.mean, "std": s.std, "n": s.n, "values": list(s.values)}
            for m, s in stats.items()
        },
        "fold_results": [r.to_json() for r in results],
    }


def _markdown(plan: CVPlan, results: Sequence[FoldResult]) -> str:
    stats = summarize_folds(results)
    info = _json(plan, results)
    c = plan.config
    lines = [
        "# Cross-validation",
        "",
        f"Data: `{plan.data_root}`, {info['identities']} identities "
        f"({info['single_camera_identities']} seen by one camera only: gallery-only when tested). "
        f"{plan.folds} folds x {plan.repeats} repeat(s), seed {plan.seed}; "
        f"{len(results)} of {len(plan.splits)} folds finished. Each fold trains on the other "
        f"folds' identities and tests on its own (cross-camera Market-1501 protocol, flip "
        f"averaging; {plan.queries_per_camera} queries per test identity and camera, evenly "
        "spaced in file-name order). Model: "
        f"preset {c.model.preset}, {c.model.backbone}; {c.train.frozen_epochs} + "
        f"{c.train.epochs} epochs.",
        "",
        "| metric | mean ± std (%) | min | max | folds |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in REPORT_METRICS:
        s = stats[m]
        finite = [v for v in s.values if not math.isnan(v)] or [math.nan]
        lines.append(
            f"| {m} | {s.text()} | {100 * min(finite):.1f} | {100 * max(finite):.1f} | {s.n} |"
        )
    lines += [
        "",
        "± is the sample standard deviation over folds (n − 1): the spread of one fold's "
        "number. mAP falls as the gallery grows: compare folds of similar test-identity counts.",
        "",
        "| fold | test ids | query ids | one-camera ids | queries | gallery | train ids "
        "| mAP | rank-1 | rank-5 | mINP | train s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        k = r.counts
        cells = [
            r.name,
            *(str(k[n]) for n in ("test_ids", "query_ids", "single_camera_test_ids")),
            *(str(k[n]) for n in ("query_images", "gallery_images", "train_ids")),
            *(f"{100 * getattr(r, m):.1f}" for m in REPORT_METRICS),
            f"{r.train_seconds:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _figure(results: Sequence[FoldResult]) -> Any:
    """Per-fold points and the mean ± std of each metric."""
    from matplotlib.figure import Figure  # heavy: only for the plot

    stats = summarize_folds(results)
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    for i, m in enumerate(REPORT_METRICS):
        s = stats[m]
        n = max(s.n, 1)
        xs = [i - 0.15 + 0.3 * j / max(n - 1, 1) for j in range(s.n)]
        ax.scatter(xs, [100 * v for v in s.values], s=14, color="tab:blue", alpha=0.7,
                   label="one fold" if i == 0 else "_nolegend_")  # fmt: skip
        err = 0.0 if math.isnan(s.std) else 100 * s.std
        ax.errorbar([i + 0.3], [100 * s.mean], yerr=[err], fmt="o", color="black", capsize=4,
                    label="mean ± std" if i == 0 else "_nolegend_")  # fmt: skip
    ax.set_xticks(range(len(REPORT_METRICS)), list(REPORT_METRICS))
    ax.set_ylim(0, 100)
    ax.set_ylabel("%")
    ax.set_title(f"cross-validation: {len(results)} folds")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def write_report(
    plan: CVPlan, results: Sequence[FoldResult], out_dir: str | Path
) -> dict[str, Path]:
    """Write ``cv.json``, ``cv.md`` and ``cv.png`` atomically; returns their paths."""
    out = Path(out_dir)
    paths = {"json": out / "cv.json", "md": out / "cv.md", "png": out / "cv.png"}
    atomic_write(paths["json"], json.dumps(_json(plan, results), indent=1) + "\n")
    atomic_write(paths["md"], _markdown(plan, results))
    if results:
        with atomic_file(paths["png"]) as tmp:
            _figure(results).savefig(tmp, format="png", dpi=100)
    return paths
