"""abdnet.evaluation: Market-1501 CMC/mAP/mINP (exact, chunked), re-ranking, AQE, flip averaging,
verification (ROC, TAR@FAR, EER).

Imports nothing else of abdnet.
"""

from abdnet.evaluation.flip import FLIP_MODES, flip_average
from abdnet.evaluation.query_expansion import average_query_expansion
from abdnet.evaluation.rank import RankResult, evaluate_features, evaluate_rank, pairwise_distance
from abdnet.evaluation.rerank import k_reciprocal_rerank
from abdnet.evaluation.verification import (
    OperatingPoint,
    VerificationResult,
    evaluate_verification,
)

__all__ = [
    "RankResult",
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
