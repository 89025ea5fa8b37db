"""Table 1 rows as cross-validated means: ``abdnet ablate --cv K``.

Every variant is cross-validated on the same identity folds (same seed, same K, same
queries), each in ``DIR/<variant>/``, a resumable ``abdnet cv`` folder of its own. Because
the folds are shared, a row's difference to the reference row is taken fold by fold
(paired): its mean ± the standard error of the paired differences.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from abdnet.ablation import REFERENCE, resolve_variants, variant_config
from abdnet.config import Config
from abdnet.crossval.plan import FoldResult
from abdnet.crossval.report import REPORT_METRICS, MetricStats, summarize_folds
from abdnet.crossval.runner import run_cv
from abdnet.files import atomic_write

__all__ = ["CVRow", "run_ablation_cv", "cv_table"]


@dataclass(frozen=True)
class CVRow:
    """One variant's folds."""

    name: str
    label: str
    folds: tuple[FoldResult, ...]

    def stats(self, metric: str) -> MetricStats:
        return summarize_folds(self.folds)[metric]

    def paired_difference(self, metric: str, ref: CVRow) -> tuple[float, float]:
        """Mean and standard error of ``self - ref`` over the folds both finished."""
        theirs = {f.name: getattr(f, metric) for f in ref.folds}
        d = [getattr(f, metric) - theirs[f.name] for f in self.folds if f.name in theirs]
        if not d:
            return math.nan, math.nan
        se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else math.nan
        return statistics.fmean(d), se


def run_ablation_cv(
    base: Config,
    out_dir: str | Path,
    variants: Sequence[str] | None = None,
    *,
    folds: int,
    repeats: int = 1,
    seed: int | None = None,
    keep_state: bool = False,
) -> list[CVRow]:
    """Cross-validate each variant over the same folds; writes ``DIR/cv_table.md``."""
    out = Path(out_dir)
    rows: list[CVRow] = []
    for v in resolve_variants(variants):
        results = run_cv(
            variant_config(v, base),
            out / v.name,
            folds=folds,
            repeats=repeats,
            seed=seed,
            keep_state=keep_state,
        )
        rows.append(CVRow(v.name, v.label, tuple(results)))
        atomic_write(out / "cv_table.md", cv_table(rows, folds=folds, repeats=repeats))
    return rows


def cv_table(rows: Sequence[CVRow], *, folds: int, repeats: int) -> str:
    """The markdown table: mean ± sample std over folds, and the paired Δ to the reference."""
    ref = next((r for r in rows if r.name == REFERENCE), rows[0])
    head = ["variant", "name", "folds", *(f"{m} (%)" for m in REPORT_METRICS), "Δ mAP (paired)"]
    lines = [
        "# Table 1 ablation, cross-validated",
        "",
        f"{folds} identity folds x {repeats} repeat(s), the same folds for every row. Cells: "
        "mean ± sample std (n − 1) over folds; Δ: the row's mAP minus the reference row's "
        f"({ref.label}) fold by fold, mean ± standard error.",
        "",
        "| " + " | ".join(head) + " |",
        "|---|---|" + "---:|" * (len(head) - 2),
    ]
    for r in rows:
        delta, se = r.paired_difference("mAP", ref)
        cell = (
            ""
            if r is ref
            else f"{100 * delta:+.1f}" + ("" if math.isnan(se) else f" ± {100 * se:.1f}")
        )
        stats = [r.stats(m).text() for m in REPORT_METRICS]
        lines.append("| " + " | ".join([r.label, r.name, str(len(r.folds)), *stats, cell]) + " |")
    return "\n".join(lines) + "\n"
