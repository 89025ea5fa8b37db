"""abdnet.evaluation: distances, Market-1501 CMC/mAP/mINP (exact, chunked), the evaluator,
re-ranking, query expansion, flip averaging, verification (ROC, TAR@FAR, EER).

Imports nothing else of abdnet.
"""

from abdnet.evaluation.distance import METRICS, pairwise_distance
from abdnet.evaluation.evaluator import RankEvaluator
from abdnet.evaluation.flip import FLIP_MODES, flip_average
from abdnet.evaluation.labels import JUNK_PID, is_junk
from abdnet.evaluation.query_expansion import average_query_expansion
from abdnet.evaluation.rank import RankResult, evaluate_features, evaluate_rank
from abdnet.evaluation.rerank import k_reciprocal_rerank
from abdnet.evaluation.verification import (
    OperatingPoint,
    VerificationResult,
    evaluate_verification,
)

__all__ = [
    "METRICS",
    "JUNK_PID",
    "is_junk",
    "RankResult",
    "RankEvaluator",
    "evaluate_rank",
    "evaluate_features",
    "pairwise_distance",
    "k_reciprocal_rerank",
    "average_query_expansion",
    "flip_average",
    "FLIP_MODES",
    "OperatingPoint",
    "VerificationResult",
    "evaluate_verification",
]
