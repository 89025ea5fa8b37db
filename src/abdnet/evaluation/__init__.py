"""abdnet.evaluation: distances, Market-1501 CMC/mAP/mINP (exact, chunked), the evaluator,
re-ranking, query expansion, flip averaging.

Imports nothing else of abdnet.
"""

from abdnet.evaluation.distance import METRICS, pairwise_distance
from abdnet.evaluation.evaluator import RankEvaluator
from abdnet.evaluation.flip import FLIP_MODES, flip_average
from abdnet.evaluation.query_expansion import average_query_expansion
from abdnet.evaluation.rank import RankResult, evaluate_features, evaluate_rank
from abdnet.evaluation.rerank import k_reciprocal_rerank

__all__ = [
    "METRICS",
    "RankResult",
    "RankEvaluator",
    "evaluate_rank",
    "evaluate_features",
    "pairwise_distance",
    "k_reciprocal_rerank",
    "average_query_expansion",
    "flip_average",
    "FLIP_MODES",
]
