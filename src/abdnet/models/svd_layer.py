"""The "SVD layer" of Table 1 (g): an SVDNet-style eigenlayer (Sun et al., ICCV 2017).

A bias-free fully connected layer whose weight vectors are periodically decorrelated
("restraint"): with the weight vectors as columns, Wᵀ = U S Vᵀ is replaced by U S. The new
outputs are Vᵀ times the old ones - an orthogonal map - so Euclidean distances between the
layer's outputs are unchanged by a restraint step while its weight vectors become orthogonal.
SVDNet alternates restraint and relaxation (ordinary training); the engine calls
``svd_restraint_(model)`` at the start of each epoch.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EigenLayer", "svd_restraint_"]


class EigenLayer(nn.Linear):
    """Bias-free ``Linear(dim, dim)`` whose weight SVD-restraint makes row-orthogonal."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim, dim, bias=False)

    @torch.no_grad()
    def restrain_(self) -> None:
        """Replace Wᵀ = U S Vᵀ by U S (weight (out, in) becomes S Uᵀ), in place, in fp32."""
        w = self.weight.float()  # (out, in); columns of wᵀ are the weight vectors
        u, s, _vh = torch.linalg.svd(w.t(), full_matrices=False)  # wᵀ = u diag(s) vh
        self.weight.copy_((u * s).t().to(self.weight.dtype))  # (out, in) = S Uᵀ


def svd_restraint_(model: nn.Module) -> int:
    """Apply the restraint step to every ``EigenLayer`` in ``model``; returns how many.

    Call it between optimizer steps (e.g. at each epoch start). The optimizer's moment
    estimates for these weights refer to the old basis; resetting them is the caller's choice.
    """
    n = 0
    for m in model.modules():
        if isinstance(m, EigenLayer):
            m.restrain_()
            n += 1
    return n
