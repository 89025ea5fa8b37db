"""The verification ROC (TAR against FAR, log-scaled FAR) with the chosen operating points."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_roc"]


def plot_roc(result, out_path: str | Path, *, title: str = "verification ROC", dpi: int = 100):
    """Draw ``result`` (an ``abdnet.evaluation.VerificationResult``) to ``out_path`` (PNG).

    The curve joins the exact ROC corners at each genuine distance; each operating point is
    marked with its FAR target, TAR and threshold; the EER is marked on the curve.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    far, tar = np.asarray(result.far), np.asarray(result.tar)
    floor = 1.0 / max(result.num_impostor, 1)  # the smallest FAR a log axis can show
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    shown = far > 0
    ax.step(
        far[shown], tar[shown], where="post", color="tab:blue", label="ROC (cross-camera pairs)"
    )
    for p in result.points:
        x = max(p.far, floor)
        ax.plot([x], [p.tar], "o", color="tab:red")
        ax.annotate(
            f"FAR<={p.far_target:g}: TAR {p.tar:.3f}\nthreshold {p.threshold:.4f}",
            (x, p.tar),
            textcoords="offset points",
            xytext=(6, -18),
            fontsize=8,
        )
    ax.plot([max(result.eer, floor)], [1 - result.eer], "s", color="tab:green")
    ax.annotate(
        f"EER {result.eer:.3f}",
        (max(result.eer, floor), 1 - result.eer),
        textcoords="offset points",
        xytext=(6, 4),
        fontsize=8,
    )
    ax.set_xscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("false-accept rate (FAR)")
    ax.set_ylabel("true-accept rate (TAR)")
    ax.set_title(
        f"{title}\n{result.num_genuine} genuine / {result.num_impostor} impostor pairs", fontsize=10
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path, dpi=dpi)
    plt.close(fig)
    return Path(out_path)
