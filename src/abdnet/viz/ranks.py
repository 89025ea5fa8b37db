"""Ranked retrieval lists (Fig. 9): each query with its top-k gallery images.

The standard re-ID protocol (Market-1501 / DukeMTMC, as in ``abdnet.evaluation``) removes,
for each query, the gallery images of the same identity taken by the same camera ("junk"):
they neither count as matches nor take a rank. They are drawn here where their distance puts
them, with a grey dashed border and no rank number, so the reader sees what the metric
skipped. Distractor images (identities outside the test set, e.g. Market-1501's id 0) stay in
the ranking as wrong matches; they get a red border and a "distractor" label.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from abdnet.evaluation import JUNK_PID

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["RankEntry", "RankedQuery", "rank_query", "plot_ranks", "STATUS_STYLE"]

# status -> (border colour, line style, legend text)
STATUS_STYLE: dict[str, tuple[str, str, str]] = {
    "query": ("black", "-", "query"),
    "match": ("limegreen", "-", "correct match"),
    "wrong": ("red", "-", "wrong match"),
    "distractor": ("red", ":", "distractor (counts as wrong)"),
    "junk": ("grey", "--", "junk: same id + camera, or id -1 (not ranked)"),
}


@dataclass(frozen=True)
class RankEntry:
    index: int  # gallery index
    status: str  # "match" | "wrong" | "distractor" | "junk"
    rank: int | None  # 1-based rank as the protocol counts it; None for junk
    distance: float
    pid: int
    camid: int


@dataclass(frozen=True)
class RankedQuery:
    index: int  # query index
    pid: int
    camid: int
    entries: list[RankEntry] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "query": self.index,
            "pid": self.pid,
            "camid": self.camid,
            "entries": [e.__dict__ for e in self.entries],
        }


def rank_query(
    distances,
    q_pid: int,
    q_camid: int,
    g_pids,
    g_camids,
    *,
    k: int,
    query_index: int = 0,
    distractor_pids: frozenset[int] = frozenset(),
    junk_pids: frozenset[int] = frozenset({JUNK_PID}),
    show_junk: bool = True,
) -> RankedQuery:
    """Gallery sorted by distance (ties by index) until ``k`` ranked entries are collected.

    Junk -- same id and same camera as the query, or a pid in ``junk_pids`` (Market-1501's
    -1 "junk" images, which ``abdnet.engine.evaluate_model`` leaves out of the gallery) --
    takes no rank; junk entries met on the way are kept (rank None) when ``show_junk``."""
    d = np.asarray(distances, dtype=np.float64)
    g_pids = np.asarray(g_pids)
    g_camids = np.asarray(g_camids)
    order = np.argsort(d, kind="stable")
    entries: list[RankEntry] = []
    rank = 0
    for gi in order:
        pid, cam = int(g_pids[gi]), int(g_camids[gi])
        if (pid == q_pid and cam == q_camid) or pid in junk_pids:
            if show_junk:
                entries.append(RankEntry(int(gi), "junk", None, float(d[gi]), pid, cam))
            continue
        rank += 1
        if pid == q_pid:
            status = "match"
        elif pid in distractor_pids:
            status = "distractor"
        else:
            status = "wrong"
        entries.append(RankEntry(int(gi), status, rank, float(d[gi]), pid, cam))
        if rank >= k:
            break
    return RankedQuery(index=query_index, pid=int(q_pid), camid=int(q_camid), entries=entries)


def plot_ranks(
    rows: list[RankedQuery],
    query_image: Callable[[int], np.ndarray],
    gallery_image: Callable[[int], np.ndarray],
    out_path: str,
    *,
    title: str = "Ranked gallery images",
    row_labels: list[str] | None = None,
    dpi: int = 100,
) -> Figure:
    """Grid: one row per ranked query, the query first, then its entries with coloured
    borders (green correct, red wrong, dotted red distractor, dashed grey junk).

    Returns the figure (closed: pyplot no longer holds it), whose artists hold what was
    drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    ncols = 1 + max((len(r.entries) for r in rows), default=0)
    nrows = max(len(rows), 1)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(1.25 * ncols + 0.5, 2.4 * nrows + 1.2), squeeze=False
    )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off")

    def show(ax, img: np.ndarray, status: str, text: str) -> None:
        ax.axis("on")
        ax.imshow(img)
        colour, style, _ = STATUS_STYLE[status]
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(4)
            spine.set_linestyle(style)
        ax.set_title(text, fontsize=7)

    for r, rq in enumerate(rows):
        label = f"query {rq.index}\nid {rq.pid} cam {rq.camid}"
        if row_labels is not None:
            label = f"{row_labels[r]}\n{label}"
        show(axes[r, 0], query_image(rq.index), "query", label)
        for c, e in enumerate(rq.entries, start=1):
            head = "junk" if e.rank is None else f"#{e.rank}"
            if e.status == "distractor":
                head += " distractor"
            show(
                axes[r, c],
                gallery_image(e.index),
                e.status,
                f"{head}\nid {e.pid} cam {e.camid}\nd={e.distance:.3g}",
            )
    handles = [
        Patch(facecolor="white", edgecolor=col, linestyle=ls, linewidth=2, label=text)
        for col, ls, text in STATUS_STYLE.values()
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=7)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    fig.savefig(out_path, dpi=dpi)
    plt.close(fig)
    return fig
