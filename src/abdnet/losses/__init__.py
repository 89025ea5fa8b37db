"""abdnet.losses: the loss of eq. (6) and its parts (SVDO of eqs. 4-5, CE-LS, batch-hard triplet).

Imports nothing from ``abdnet.models``: the objective takes plain tensors.
"""

from .metric import CrossEntropyLabelSmooth, TripletLoss, pairwise_euclidean
from .objective import ABDObjective, LossTerms, build_objective
from .svdo import (
    GRAM_NORMS,
    SVDO_FORMS,
    ExtremeEigs,
    gram_extreme_eigs,
    of_penalty,
    official_extreme_eigs,
    ow_penalty,
    power_iteration,
    power_iteration_eigs,
    svdo_penalty,
)
from .tricks import CenterLoss, arcface_logits

__all__ = [
    "ABDObjective",
    "LossTerms",
    "build_objective",
    "CenterLoss",
    "arcface_logits",
    "CrossEntropyLabelSmooth",
    "TripletLoss",
    "pairwise_euclidean",
    "ExtremeEigs",
    "power_iteration",
    "power_iteration_eigs",
    "gram_extreme_eigs",
    "official_extreme_eigs",
    "svdo_penalty",
    "of_penalty",
    "ow_penalty",
    "SVDO_FORMS",
    "GRAM_NORMS",
]
