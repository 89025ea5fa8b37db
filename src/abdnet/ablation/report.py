"""The ablation's tables (``table.md``, ``table.csv``, ``runs.csv``) and chart (``table.png``)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from abdnet.ablation.results import METRIC_NAMES, TIME_NAME, VariantResult
from abdnet.ablation.stats import (
    NOISE_SE,
    Difference,
    MetricSummary,
    VariantSummary,
    reference_row,
    summarize,
)
from abdnet.ablation.variants import PaperRow
from abdnet.files import atomic_file, atomic_write

__all__ = ["PAPER_HEADER", "RUNS_FILE", "TABLE_HEADER", "write_tables"]

RUNS_FILE = "runs.csv"  # DIR/runs.csv: one row per (variant, seed)


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100.0 * x:.2f}"


def _paper_cells(p: PaperRow | None) -> list[str]:
    return [f"{x:.2f}" for x in p] if p else ["-", "-", "-", "-"]


PAPER_HEADER = ["paper Market rank1", "paper Market mAP", "paper Duke rank1", "paper Duke mAP"]
TABLE_HEADER = [
    "variant",
    "name",
    *METRIC_NAMES,
    "train time (s)",
    *PAPER_HEADER,
]
_PAPER_NOTE = (
    "The paper's Table 1 numbers (Market-1501 / DukeMTMC-reID, ResNet-50, full schedule) are "
    "given for reference."
)


def write_tables(results: Sequence[VariantResult], out_dir: str | Path) -> dict[str, Path]:
    """``table.md``, ``table.csv`` (metrics in %), the chart ``table.png`` and ``runs.csv``
    (one row per run), all written atomically.

    With one seed per variant the tables hold each run's numbers. With more, every metric is
    the mean ± the sample standard deviation over the seeds (``n`` column), the CSV has
    ``<metric>_mean`` / ``<metric>_std`` columns, the chart error bars, and a second table
    gives each row's difference to the reference row with its standard error.
    """
    out = Path(out_dir)
    paths = {
        "md": out / "table.md",
        "csv": out / "table.csv",
        "png": out / "table.png",
        "runs": out / RUNS_FILE,
    }
    rows = summarize(results)
    if not rows:
        return {}
    out.mkdir(parents=True, exist_ok=True)
    tables = _seed_tables(rows) if any(r.n > 1 for r in rows) else _single_tables(rows)
    atomic_write(paths["md"], "\n".join(tables.markdown) + "\n")
    atomic_write(paths["csv"], _csv_text(tables.rows))
    atomic_write(paths["runs"], _csv_text(_runs_table(rows)))
    figure = _figure(rows)
    with atomic_file(paths["png"]) as tmp:
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")  # legend below the axes
    return paths


def _csv_text(rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int) -> list[str]:
    align = ["---"] * text_columns + ["---:"] * (len(header) - text_columns)
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(align) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


class _Tables(NamedTuple):
    markdown: list[str]  # the lines of table.md
    rows: list[list[str]]  # table.csv, header first


def _single_tables(rows: Sequence[VariantSummary]) -> _Tables:
    """One run per variant: its numbers."""
    body = [
        [
            r.label,
            r.name,
            *(_pct(getattr(r.runs[0], m)) for m in METRIC_NAMES),
            f"{r.runs[0].train_seconds:.1f}",
            *_paper_cells(r.paper),
        ]
        for r in rows
    ]
    md = [
        "# Table 1 ablation",
        "",
        f"Our numbers: test set of the config's data, in %. {_PAPER_NOTE}",
        "",
        *_md_table(TABLE_HEADER, body, 2),
    ]
    return _Tables(md, [TABLE_HEADER, *body])


def _mean_std(s: MetricSummary, scale: float, digits: int) -> str:
    if s.n < 2:
        return f"{scale * s.mean:.{digits}f}"
    return f"{scale * s.mean:.{digits}f} ± {scale * s.std:.{digits}f}"


def _difference_cell(d: Difference) -> str:
    if math.isnan(d.se):
        return f"{100 * d.delta:+.2f}"
    return f"{100 * d.delta:+.2f} ± {100 * d.se:.2f}" + (" *" if d.beyond_noise else "")


def _seeds_text(rows: Sequence[VariantSummary]) -> str:
    ns = sorted({r.n for r in rows})
    return str(ns[0]) if len(ns) == 1 else f"{ns[0]} to {ns[-1]}"


def _seed_tables(rows: Sequence[VariantSummary]) -> _Tables:
    """Several seeds per variant: mean ± sample std, and differences to the reference row."""
    ref = reference_row(rows)
    first_seed = min(s for r in rows for s in r.seeds)
    mark = f"beyond_{NOISE_SE:g}se"
    header = ["variant", "name", "n", *METRIC_NAMES, "train time (s)", *PAPER_HEADER]
    body = [
        [
            r.label,
            r.name,
            str(r.n),
            *(_mean_std(r.stats(m), 100.0, 2) for m in METRIC_NAMES),
            _mean_std(r.stats(TIME_NAME), 1.0, 1),
            *_paper_cells(r.paper),
        ]
        for r in rows
    ]
    others = [r for r in rows if r is not ref]
    diff_header = ["variant", "name", "n", *(f"Δ {m}" for m in METRIC_NAMES)]
    diff_body = [
        [r.label, r.name, str(r.n), *(_difference_cell(r.difference(m, ref)) for m in METRIC_NAMES)]
        for r in others
    ]
    md = [
        "# Table 1 ablation",
        "",
        "Our numbers: test set of the config's data, in %. Each cell is the mean ± the sample "
        "standard deviation (n − 1 in the denominator) over the row's n seeds "
        f"(train.seed = {first_seed}, {first_seed + 1}, ...). {_PAPER_NOTE}",
        "",
        *_md_table(header, body, 2),
        "",
        f"## Difference to the reference row: {ref.label}, n = {ref.n}",
        "",
        *_md_table(diff_header, diff_body, 2),
        "",
        "How to read these tables:",
        "",
        "- ± in the first table is the spread of one run (the sample standard deviation over "
        "seeds), not the uncertainty of the mean.",
        "- Δ is the row's mean minus the reference row's mean, in points, ± its standard error "
        "SE = √(s²/n + s_ref²/n_ref) (the two rows' seeds taken as independent samples; s is "
        "the sample standard deviation).",
        f"- `*` marks |Δ| > {NOISE_SE:g} SE: a difference larger than the seed-to-seed noise "
        "measured here. It is a screen, not a significance test: with so few seeds the "
        "standard errors are themselves rough, a two-sided 95% t-test would need about 2.8 SE "
        "with 3 seeds per row and 4.3 SE with 2 (more when the rows' spreads differ), and with "
        "many rows compared to one reference some marks appear by chance. A difference "
        "without `*` is within the noise and is no evidence of an effect.",
        "- A seed changes the weight initialisation, the batch order, the augmentation and the "
        "validation split. The data set and its test split stay the same, so the spread says "
        "nothing about other data.",
        "- Train time: the epochs' own times summed over the sessions of a resumed run; runs "
        "trained in parallel (`--jobs`) shared the machine.",
    ]
    csv_header = [
        "variant",
        "name",
        "n",
        *(f"{m}_{s}" for m in (*METRIC_NAMES, TIME_NAME) for s in ("mean", "std")),
        *PAPER_HEADER,
        *(f"{m}_{s}" for m in METRIC_NAMES for s in ("delta", "delta_se", mark)),
    ]
    csv_body = []
    for r in rows:
        cells = [r.label, r.name, str(r.n)]
        for m in (*METRIC_NAMES, TIME_NAME):
            s = r.stats(m)
            scale, digits = (1.0, 1) if m == TIME_NAME else (100.0, 2)
            std = "" if s.n < 2 else f"{scale * s.std:.{digits}f}"
            cells += [f"{scale * s.mean:.{digits}f}", std]
        cells += _paper_cells(r.paper)
        for m in METRIC_NAMES:
            if r is ref:
                cells += ["", "", ""]
                continue
            d = r.difference(m, ref)
            se = "" if math.isnan(d.se) else f"{100 * d.se:.2f}"
            cells += [f"{100 * d.delta:.2f}", se, "true" if d.beyond_noise else "false"]
        csv_body.append(cells)
    return _Tables(md, [csv_header, *csv_body])


def _runs_table(rows: Sequence[VariantSummary]) -> list[list[str]]:
    """One row per (variant, seed), metrics in % with enough digits to recompute the table."""
    header = ["variant", "name", "seed", *METRIC_NAMES, TIME_NAME, "run_dir"]
    body = [
        [
            r.label,
            r.name,
            str(run.seed),
            *(f"{100.0 * getattr(run, m):.4f}" for m in METRIC_NAMES),
            f"{run.train_seconds:.3f}",
            run.run_dir,
        ]
        for r in rows
        for run in r.runs
    ]
    return [header, *body]


_CHART_METRICS = (("rank1", "tab:blue"), ("mAP", "tab:orange"), ("mINP", "tab:green"))


def _figure(rows: Sequence[VariantSummary]) -> Any:
    """The chart of ``table.png``: bars of rank1 / mAP / mINP per variant (with several seeds:
    the mean, ± sample std error bars and one dot per seed), the paper's Market numbers as
    ticks. Returns the matplotlib ``Figure``."""
    from matplotlib.figure import Figure  # heavy, optional: only for the chart

    seeds = any(r.n > 1 for r in rows)
    y = [float(i) for i in range(len(rows))]
    h = 0.26
    fig = Figure(figsize=(10, 2.4 + 0.6 * len(rows)))
    ax = fig.subplots()
    for i, (key, colour) in enumerate(_CHART_METRICS):
        stats = [r.stats(key) for r in rows]
        pos = [p + (i - 1) * h for p in y]
        means = [100.0 * s.mean for s in stats]
        if not seeds:
            ax.barh(pos, means, height=h, color=colour, label=f"ours {key}")
            continue
        errors = [100.0 * s.std if s.n > 1 else 0.0 for s in stats]
        ax.barh(
            pos,
            means,
            height=h,
            color=colour,
            xerr=errors,
            error_kw={"capsize": 3, "elinewidth": 1, "ecolor": "black"},
            label=f"ours {key}",
        )
        ax.scatter(
            [100.0 * v for s in stats for v in s.values],
            [p for p, s in zip(pos, stats) for _ in s.values],
            s=8,
            color="black",
            alpha=0.6,
            zorder=4,
            label="one seed" if i == 0 else "_nolegend_",
        )
    h_paper = [r.paper.market_rank1 if r.paper else math.nan for r in rows]
    m_paper = [r.paper.market_mAP if r.paper else math.nan for r in rows]
    ax.scatter(
        h_paper, [p - h for p in y], marker="|", s=200, color="navy", label="paper Market rank1",
        zorder=3,
    )  # fmt: skip
    ax.scatter(
        m_paper, y, marker="|", s=200, color="saddlebrown", label="paper Market mAP", zorder=3
    )
    ax.set_yticks(y, [r.label for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("%")
    title = "Table 1 ablation: test-set rank1 / mAP / mINP"
    if seeds:
        title += f"\nmean ± sample std (n − 1) over {_seeds_text(rows)} seeds, dots: single seeds"
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=6, fontsize=8)
    fig.tight_layout()
    return fig
