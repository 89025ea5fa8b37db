"""Identity losses of eq. (6): label-smoothed cross-entropy and batch-hard triplet loss.

- ``CrossEntropyLabelSmooth``: Szegedy et al. (CVPR 2016) label smoothing, the target
  distribution is ``(1 - epsilon) * onehot + epsilon / K``.
- ``TripletLoss``: the batch-hard triplet loss of Hermans et al. ("In Defense of the Triplet
  Loss for Person Re-Identification", 2017) with margin alpha (paper: 1.2): for every anchor
  the farthest same-identity sample and the closest other-identity sample of the batch,
  ``mean_a relu(d(a, p_hard) - d(a, n_hard) + alpha)`` on Euclidean distances.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CrossEntropyLabelSmooth", "TripletLoss", "pairwise_euclidean"]

# Squared distances are clamped here before the square root: the gradient of sqrt at 0 is
# infinite, and clamp passes no gradient below its bound (an anchor's distance to itself or
# to an exact duplicate).
_MIN_SQ_DIST = 1e-12


class CrossEntropyLabelSmooth(nn.Module):
    """Cross-entropy with label smoothing, averaged over the batch.

    ``loss = mean_i sum_k -((1 - eps) [k == y_i] + eps / K) log softmax(x_i)_k``.
    """

    def __init__(self, num_classes: int, epsilon: float = 0.1) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
        if not 0.0 <= epsilon < 1.0:
            raise ValueError(f"label_smooth: expected 0 <= epsilon < 1, got {epsilon}")
        self.num_classes = num_classes
        self.epsilon = epsilon

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits: expected (B, {self.num_classes}), got {tuple(logits.shape)}")
        if targets.shape != logits.shape[:1]:
            raise ValueError(
                f"targets: expected shape ({logits.shape[0]},), got {tuple(targets.shape)}"
            )
        log_probs = F.log_softmax(logits.float(), dim=1)  # (B, K)
        nll = -log_probs.gather(1, targets.long().unsqueeze(1)).squeeze(1)  # (B,)
        uniform = -log_probs.mean(dim=1)  # (B,) = sum_k -(1/K) log p_k
        return ((1.0 - self.epsilon) * nll + self.epsilon * uniform).mean()


def pairwise_euclidean(x: Tensor) -> Tensor:
    """Euclidean distance matrix (B, B) of the rows of ``x`` (B, d), in float32.

    Uses ``|a|^2 + |b|^2 - 2 a.b`` (one matrix product) on centred features and a clamped
    square root (diagonal: sqrt(1e-12) = 1e-6, with no gradient).
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        # Distances are translation invariant; centring shrinks the norms and with them the
        # cancellation error of the expansion below.
        x = x.float()
        x = x - x.mean(dim=0, keepdim=True).detach()
        sq = (x * x).sum(dim=1)  # (B,)
        d2 = sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * (x @ x.t())  # (B, B)
        eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
        d2 = d2.masked_fill(eye, 0.0)  # exact zeros on the diagonal, not rounding noise
        return d2.clamp_min(_MIN_SQ_DIST).sqrt()


class TripletLoss(nn.Module):
    """Batch-hard triplet loss (Hermans et al. 2017), margin ``alpha`` (paper: 1.2).

    Positives of an anchor are the *other* samples with its label; negatives the samples with
    a different label. An anchor with no other positive or no negative in the batch forms no
    triplet and is left out of the mean (with P x K sampling, K >= 2, every anchor has both).
    If no anchor has a triplet the loss is a zero that still depends on ``features`` (so
    ``backward`` works and gives zero gradients). Computed in float32.
    """

    def __init__(self, margin: float = 1.2) -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"margin: expected >= 0, got {margin}")
        self.margin = margin

    def forward(self, features: Tensor, targets: Tensor) -> Tensor:
        if features.dim() != 2:
            raise ValueError(f"triplet features: expected (B, d), got {tuple(features.shape)}")
        if targets.shape != features.shape[:1]:
            raise ValueError(
                f"targets: expected shape ({features.shape[0]},), got {tuple(targets.shape)}"
            )
        dist = pairwise_euclidean(features)  # (B, B)
        same = targets.unsqueeze(0) == targets.unsqueeze(1)  # (B, B)
        eye = torch.eye(len(targets), dtype=torch.bool, device=features.device)
        pos = same & ~eye
        neg = ~same
        # Masked max / min: distances are >= 0, so -1 and +inf never win against a real one.
        d_ap = dist.masked_fill(~pos, -1.0).amax(dim=1)  # (B,) hardest positive
        d_an = dist.masked_fill(~neg, float("inf")).amin(dim=1)  # (B,) hardest negative
        valid = pos.any(dim=1) & neg.any(dim=1)  # (B,)
        hinge = F.relu(d_ap - d_an + self.margin)  # (B,)
        # torch.where rather than boolean indexing: no host sync, and the invalid anchors'
        # infinities get a zero gradient.
        hinge = torch.where(valid, hinge, torch.zeros_like(hinge))
        return hinge.sum() / valid.sum().clamp_min(1)
