"""abdnet.viz: the figures of section 4.5 -- attention (Grad-CAM / RAM), channel
correlation (Fig. 6/7), t-SNE (Fig. 8) and ranked lists (Fig. 9). matplotlib and
scikit-learn are imported only when a figure is drawn."""

from abdnet.viz.correlation import (
    CorrelationStats,
    batch_correlation_stats,
    channel_correlation,
    correlation_stats,
    plot_correlation,
)
from abdnet.viz.figures import (
    VizModel,
    attention_figure,
    choose_records,
    correlation_figure,
    load_viz_model,
    ranks_figure,
    tsne_figure,
)
from abdnet.viz.gradcam import grad_cam, overlay_heatmap, ranking_score, upsample_maps
from abdnet.viz.ranks import RankedQuery, RankEntry, plot_ranks, rank_query
from abdnet.viz.taps import (
    FeatureTap,
    TapCapture,
    attention_taps,
    capture_taps,
    default_taps,
    map_tap,
)
from abdnet.viz.tsne import TsneLayout, choose_identities, plot_tsne, tsne_layout

__all__ = [
    "CorrelationStats",
    "FeatureTap",
    "RankEntry",
    "RankedQuery",
    "TsneLayout",
    "VizModel",
    "attention_figure",
    "attention_taps",
    "batch_correlation_stats",
    "capture_taps",
    "channel_correlation",
    "choose_identities",
    "choose_records",
    "correlation_figure",
    "correlation_stats",
    "default_taps",
    "map_tap",
    "TapCapture",
    "grad_cam",
    "load_viz_model",
    "overlay_heatmap",
    "plot_correlation",
    "plot_ranks",
    "plot_tsne",
    "rank_query",
    "ranking_score",
    "ranks_figure",
    "tsne_figure",
    "tsne_layout",
    "upsample_maps",
]
