"""abdnet.evaluation: Market-1501 CMC/mAP/mINP (exact, chunked), re-ranking, AQE, flip averaging.

Imports nothing else of abdnet.
"""

from abdnet.evaluation.rank import RankResult, evaluate_features, evaluate_rank, pairwise_distance

__all__ = ["RankResult", "evaluate_rank", "evaluate_features", "pairwise_distance"]
