"""The training objective of ABD-Net, eq. (6) of the paper:

    L = L_xent + beta_tr * L_triplet + beta_OF * L_OF + beta_OW * L_OW

- L_xent: label-smoothed cross-entropy, *averaged* over the model's classifiers (the
  authors' code averages: ``sum(...) / len(inputs)`` in its ``CrossEntropyLoss``).
- L_triplet: batch-hard triplet loss, averaged over the triplet features (same in the code).
- L_OF: SVDO on the feature maps the model returns (``svdo.of_penalty``), summed over maps.
- L_OW: SVDO on the conv weights the model returns (``svdo.ow_penalty``), summed over layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from abdnet.config import Config, GramNorm, SVDOForm

from .metric import CrossEntropyLabelSmooth, TripletLoss
from .svdo import of_penalty, ow_penalty

if TYPE_CHECKING:  # the type only: losses do not depend on the models package
    from abdnet.models.output import ModelOutput

__all__ = ["LossTerms", "ABDObjective", "build_objective"]

_TERMS = ("total", "xent", "triplet", "of", "ow")


@dataclass(frozen=True)
class LossTerms:
    """The terms of eq. (6) *as they enter the total* (each already multiplied by its beta),
    so ``total == xent + triplet + of + ow``. A term that is off is a zero tensor. The one
    type for loss terms: the trainer sums ``as_floats()`` over an epoch for its logs.
    """

    total: Tensor
    xent: Tensor
    triplet: Tensor
    of: Tensor
    ow: Tensor

    def as_floats(self) -> dict[str, float]:
        """Plain floats for logging (one host sync)."""
        values = torch.stack([getattr(self, k) for k in _TERMS]).detach()
        return dict(zip(_TERMS, values.float().cpu().tolist()))


class ABDObjective(nn.Module):
    """Eq. (6). Has no parameters.

    Call as ``objective(output, targets, ow_weights, use_of=..., use_ow=..., use_triplet=...)``
    with the model's :class:`~abdnet.models.output.ModelOutput` (cross-entropy on each of its
    logits, triplet on each triplet feature, O.F. on its maps at ``of_positions``) and
    ``model.ow_weights()``. The ``use_*`` switches implement the schedule (step 1 of the
    two-step training: no O.F./O.W.); ``beta_tr = 0`` disables the triplet term for good.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        label_smooth: float = 0.1,
        beta_tr: float = 0.1,
        margin: float = 1.2,
        beta_of: float = 1e-6,
        beta_ow: float = 1e-3,
        power_iters: int = 2,
        svdo_form: SVDOForm = "paper",
        of_gram_norm: GramNorm = "spatial",
        of_positions: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.beta_tr, self.beta_of, self.beta_ow = beta_tr, beta_of, beta_ow
        self.power_iters = power_iters
        self.svdo_form, self.of_gram_norm = svdo_form, of_gram_norm
        self.of_positions = tuple(of_positions)
        self.xent = CrossEntropyLabelSmooth(num_classes, label_smooth)
        self.triplet = TripletLoss(margin)

    def forward(
        self,
        output: ModelOutput,
        targets: Tensor,
        ow_weights: Sequence[Tensor] = (),
        *,
        use_of: bool = True,
        use_ow: bool = True,
        use_triplet: bool = True,
    ) -> LossTerms:
        # Logits and features are cast to fp32 for a stable softmax and distances; the SVDO
        # terms compute in fp32 themselves.
        logits = [x.float() for x in output.logits]
        feats = [f.float() for f in output.triplet_features]
        if not logits:
            raise ValueError("output.logits: expected at least one (B, num_classes) tensor")
        zero = logits[0].new_zeros((), dtype=torch.float32)

        xent = torch.stack([self.xent(x, targets) for x in logits]).mean()

        triplet = zero
        if use_triplet and self.beta_tr > 0:
            if not feats:
                raise ValueError(
                    "output.triplet_features: empty, but beta_tr > 0 needs a (B, d) tensor"
                )
            triplet = self.beta_tr * torch.stack([self.triplet(f, targets) for f in feats]).mean()

        of = zero
        if use_of and self.beta_of > 0 and self.of_positions:
            maps = output.features.of_terms(self.of_positions)
            of = self.beta_of * of_penalty(
                maps, iters=self.power_iters, form=self.svdo_form, gram_norm=self.of_gram_norm
            ).to(zero.device)

        ow = zero
        if use_ow and self.beta_ow > 0 and len(ow_weights) > 0:
            ow = self.beta_ow * ow_penalty(
                ow_weights, iters=self.power_iters, form=self.svdo_form
            ).to(zero.device)

        total = xent + triplet + of + ow
        return LossTerms(total=total, xent=xent, triplet=triplet, of=of, ow=ow)


def build_objective(cfg: Config, num_classes: int) -> ABDObjective:
    """Eq. (6) as ``cfg.loss`` sets it, with O.F. at ``cfg.model.of_positions``."""
    loss = cfg.loss
    return ABDObjective(
        num_classes,
        label_smooth=loss.label_smooth,
        beta_tr=loss.beta_tr,
        margin=loss.margin,
        beta_of=loss.beta_of,
        beta_ow=loss.beta_ow,
        power_iters=loss.power_iters,
        svdo_form=loss.svdo_form,
        of_gram_norm=loss.of_gram_norm,
        of_positions=cfg.model.of_positions,
    )
