"""2-D t-SNE of embeddings (Fig. 8): a few identities, coloured by identity, marker by camera."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["TsneLayout", "choose_identities", "tsne_layout", "plot_tsne"]

_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">", "h", "p")


@dataclass(frozen=True)
class TsneLayout:
    points: np.ndarray  # (N, 2)
    pids: np.ndarray  # (N,)
    camids: np.ndarray  # (N,)

    def to_json(self) -> dict:
        return {
            "points": np.round(self.points, 5).tolist(),
            "pids": self.pids.tolist(),
            "camids": self.camids.tolist(),
        }


def choose_identities(pids, num: int, seed: int) -> list[int]:
    """``num`` distinct identities drawn with ``seed`` (all when fewer exist), sorted."""
    unique = np.unique(np.asarray(pids))
    if num <= 0:
        raise ValueError(f"--ids: need at least one identity, got {num}")
    if num >= unique.size:
        return unique.tolist()
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(unique, size=num, replace=False).tolist())


def tsne_layout(
    features, pids, camids, *, seed: int = 0, perplexity: float | None = None, max_iter: int = 1000
) -> TsneLayout:
    """scikit-learn TSNE of ``features`` ``(N, D)`` to 2-D, deterministic for ``seed``.

    The default perplexity is 30 capped at ``(N - 1) / 3`` so that small sets work.
    """
    from sklearn.manifold import TSNE

    x = np.asarray(features, dtype=np.float64)
    n = x.shape[0]
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 embeddings, got {n}")
    if perplexity is None:
        perplexity = float(min(30.0, max(1.0, (n - 1) / 3.0)))
    if perplexity >= n:
        raise ValueError(f"--perplexity {perplexity} must be below the number of embeddings ({n})")
    # Exact gradients for small sets: no OpenMP threads (Barnes-Hut's fight torch's for the
    # CPU) and no approximation; Barnes-Hut scales to large sets.
    method = "exact" if n <= 1000 else "barnes_hut"
    tsne = TSNE(
        n_components=2,
        perplexity=perplexity,
        init="pca",
        random_state=seed,
        max_iter=max_iter,
        method=method,
    )
    pts = tsne.fit_transform(x)
    return TsneLayout(points=np.asarray(pts), pids=np.asarray(pids), camids=np.asarray(camids))


def plot_tsne(
    panels: list[tuple[str, TsneLayout]],
    out_path: str,
    *,
    title: str = "t-SNE of embeddings (Fig. 8)",
    dpi: int = 100,
) -> Figure:
    """Side-by-side scatter plots; one colour per identity (ids written at their centroid),
    one marker per camera, legends for both.

    Returns the figure (closed: pyplot no longer holds it), whose artists hold what was
    drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    all_pids = sorted({int(p) for _, lay in panels for p in lay.pids})
    all_cams = sorted({int(c) for _, lay in panels for c in lay.camids})
    cmap = matplotlib.colormaps["tab10" if len(all_pids) <= 10 else "tab20"]
    colour = {p: cmap(i % cmap.N) for i, p in enumerate(all_pids)}
    marker = {c: _MARKERS[i % len(_MARKERS)] for i, c in enumerate(all_cams)}

    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n + 1.5, 5.5), squeeze=False)
    for ax, (label, lay) in zip(axes[0], panels):
        for p in all_pids:
            for c in all_cams:
                sel = (lay.pids == p) & (lay.camids == c)
                if sel.any():
                    ax.scatter(
                        lay.points[sel, 0],
                        lay.points[sel, 1],
                        c=[colour[p]],
                        marker=marker[c],
                        s=36,
                    )
            sel = lay.pids == p
            if sel.any():
                cx, cy = lay.points[sel].mean(axis=0)
                ax.annotate(str(p), (cx, cy), fontsize=8, weight="bold", ha="center")
        ax.set_title(label)
        ax.set_xticks([])
        ax.set_yticks([])
    id_handles = [
        Line2D([], [], marker="o", linestyle="", color=colour[p], label=f"id {p}") for p in all_pids
    ]
    cam_handles = [
        Line2D([], [], marker=marker[c], linestyle="", color="0.3", label=f"camera {c}")
        for c in all_cams
    ]
    first = fig.legend(handles=id_handles, loc="upper right", title="identity", fontsize=8)
    fig.add_artist(first)
    fig.legend(handles=cam_handles, loc="lower right", title="camera", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, (5.5 * n) / (5.5 * n + 1.5), 1))
    fig.savefig(out_path, dpi=dpi)
    plt.close(fig)
    return fig
