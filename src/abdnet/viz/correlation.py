"""Channel correlation of a feature map: section 4.5 "Feature De-correlation", Fig. 6 and 7.

The feature map before global average pooling, ``(C, H, W)``, is reshaped to
``F in R^{C x N}`` (N = H*W); each row is one channel's response over the N positions. Fig. 6
shows ``|Corr(F)|`` (C x C, Pearson coefficients between rows, absolute value per the paper's
footnote), Fig. 7 the histogram of its off-diagonal entries, and the text quotes their mean
(0.049 baseline, 0.368 baseline + PAM + CAM, 0.214 ABD-Net (XE) on Market-1501).

A channel that is constant over the image (common after a ReLU: a "dead" channel) has no
defined correlation. Such channels are shown as 0 in the matrix and left out of the mean
and the histogram; their number is reported (``constant_channels``) so that nothing is
hidden.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "CorrelationStats",
    "channel_correlation",
    "correlation_stats",
    "batch_correlation_stats",
    "plot_correlation",
]

# A channel whose standard deviation over positions is below this (relative to the largest
# channel's) counts as constant; float32 round-off on a constant map gives ~1e-7.
_CONST_RTOL = 1e-6


@dataclass(frozen=True)
class CorrelationStats:
    """|Corr| of one feature map (or the average over a batch) and its summary numbers.

    ``matrix``: ``(C, C)`` absolute correlation coefficients, diagonal 1, constant channels 0.
    ``valid``: ``(C,)`` bool, channels with non-zero variance.
    ``offdiag``: the off-diagonal entries between valid channels (each pair once, i < j).
    ``mean_abs``: their mean, the number the paper quotes.
    """

    matrix: np.ndarray
    valid: np.ndarray
    offdiag: np.ndarray
    mean_abs: float
    num_images: int

    @property
    def constant_channels(self) -> int:
        return int((~self.valid).sum())

    def histogram(self, bins: int = 50) -> tuple[np.ndarray, np.ndarray]:
        """Counts and edges of the off-diagonal |corr| over [0, 1] (Fig. 7)."""
        return np.histogram(self.offdiag, bins=bins, range=(0.0, 1.0))

    def to_json(self, bins: int = 50) -> dict:
        counts, edges = self.histogram(bins)
        return {
            "mean_abs_corr": self.mean_abs,
            "num_images": self.num_images,
            "channels": int(self.matrix.shape[0]),
            "constant_channels": self.constant_channels,
            "histogram": {"counts": counts.tolist(), "edges": edges.tolist()},
            "matrix": np.round(self.matrix, 6).tolist(),
        }


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().double().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def channel_correlation(features) -> tuple[np.ndarray, np.ndarray]:
    """Absolute Pearson correlation between the rows of ``features``.

    ``features``: ``(C, N)`` or a single map ``(C, H, W)`` (reshaped to ``(C, H*W)``), numpy
    or torch. Returns ``(|Corr| (C, C), valid (C,))``; rows of constant channels and their
    columns are 0 except the diagonal, which is 1 everywhere.
    """
    f = _as_numpy(features)
    if f.ndim == 3:
        f = f.reshape(f.shape[0], -1)  # (C, H, W) -> (C, N)
    if f.ndim != 2:
        raise ValueError(f"channel_correlation: expected (C, N) or (C, H, W), got shape {f.shape}")
    c, n = f.shape
    if n < 2:
        raise ValueError(f"channel_correlation: need at least 2 positions per channel, got N={n}")
    centred = f - f.mean(axis=1, keepdims=True)
    std = np.sqrt((centred**2).sum(axis=1))  # (C,), up to the 1/N factor that cancels
    valid = std > _CONST_RTOL * max(float(std.max()), 1e-30)
    safe = np.where(valid, std, 1.0)
    z = centred / safe[:, None]
    corr = np.abs(z @ z.T)  # (C, C)
    corr[~valid, :] = 0.0
    corr[:, ~valid] = 0.0
    np.fill_diagonal(corr, 1.0)
    return np.clip(corr, 0.0, 1.0), valid


def _summarize(
    matrix: np.ndarray, valid: np.ndarray, num_images: int, pairs: np.ndarray | None = None
) -> CorrelationStats:
    iu = np.triu_indices(matrix.shape[0], k=1)
    pair_ok = valid[iu[0]] & valid[iu[1]] if pairs is None else pairs[iu]
    off = matrix[iu][pair_ok]
    mean = float(off.mean()) if off.size else float("nan")
    return CorrelationStats(
        matrix=matrix, valid=valid, offdiag=off, mean_abs=mean, num_images=num_images
    )


def correlation_stats(feature_map) -> CorrelationStats:
    """|Corr| statistics of one image's feature map ``(C, H, W)`` or ``(C, N)``."""
    matrix, valid = channel_correlation(feature_map)
    return _summarize(matrix, valid, 1)


def batch_correlation_stats(feature_maps) -> CorrelationStats:
    """Average of the per-image |Corr| matrices of a batch ``(B, C, H, W)``.

    Each entry is averaged over the images where both channels are non-constant; a channel
    counts as valid if it is non-constant in at least one image.
    """
    maps = _as_numpy(feature_maps)
    if maps.ndim != 4:
        raise ValueError(f"batch_correlation_stats: expected (B, C, H, W), got shape {maps.shape}")
    b, c = maps.shape[:2]
    total = np.zeros((c, c))
    count = np.zeros((c, c))
    any_valid = np.zeros(c, dtype=bool)
    for i in range(b):
        m, v = channel_correlation(maps[i])
        both = v[:, None] & v[None, :]
        total += np.where(both, m, 0.0)
        count += both
        any_valid |= v
    matrix = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    np.fill_diagonal(matrix, 1.0)
    return _summarize(matrix, any_valid, b, pairs=count > 0)


def plot_correlation(
    panels: list[tuple[str, CorrelationStats]],
    out_path: str,
    *,
    title: str = "Channel correlation |Corr(F)| (section 4.5)",
    bins: int = 50,
    dpi: int = 100,
) -> Figure:
    """One row per model: the |Corr| matrix with a colour bar (Fig. 6) and the histogram of
    its off-diagonal entries (Fig. 7).

    Returns the figure (closed: pyplot no longer holds it), whose artists hold what was
    drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panels)
    fig, axes = plt.subplots(n, 2, figsize=(10, 4.2 * n), squeeze=False)
    for row, (label, st) in enumerate(panels):
        ax_m, ax_h = axes[row]
        im = ax_m.imshow(st.matrix, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax_m.set_title(f"{label}\nmean off-diagonal |corr| = {st.mean_abs:.3f}", fontsize=10)
        ax_m.set_xlabel("channel")
        ax_m.set_ylabel("channel")
        fig.colorbar(im, ax=ax_m, fraction=0.046, pad=0.04, label="|corr|")
        ax_h.hist(st.offdiag, bins=bins, range=(0.0, 1.0), color="tab:blue")
        ax_h.axvline(st.mean_abs, color="tab:red", linestyle="--", label=f"mean {st.mean_abs:.3f}")
        ax_h.set_xlabel("|corr| (off-diagonal)")
        ax_h.set_ylabel("channel pairs")
        imgs = "1 image" if st.num_images == 1 else f"average over {st.num_images} images"
        ax_h.set_title(f"histogram of off-diagonal |corr| ({imgs})", fontsize=10)
        ax_h.legend(loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_path, dpi=dpi)
    plt.close(fig)
    return fig
