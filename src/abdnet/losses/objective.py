"""The training objective of ABD-Net, eq. (6) of the paper:

    L = L_xent + beta_tr * L_triplet + beta_OF * L_OF + beta_OW * L_OW

- L_xent: label-smoothed cross-entropy, *averaged* over the model's classifiers (the
  authors' code averages: ``sum(...) / len(inputs)`` in its ``CrossEntropyLoss``).
- L_triplet: batch-hard triplet loss, averaged over the triplet features (same in the code).
- L_OF: SVDO on the feature maps the model returns (``svdo.of_penalty``), summed over maps.
- L_OW: SVDO on the conv weights the model returns (``svdo.ow_penalty``), summed over layers.

Two tricks, off by default (``losses/tricks.py``): ArcFace's angular margin on the target
logit of cosine classifiers (``arc_margin``) and the center loss on the triplet features
(``beta_center * L_center``, counted in the ``triplet`` term of :class:`LossTerms`: both
are metric terms on the same features). ``forward``'s ``of_factor`` / ``ow_factor``
multiply beta_OF / beta_OW (their schedules, ``engine/schedule.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from abdnet.config import Config, GramNorm, LossConfig, SVDOForm

from .metric import CrossEntropyLabelSmooth, TripletLoss
from .svdo import of_penalty, ow_penalty
from .tricks import CenterLoss, arcface_logits

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
    """Eq. (6). Has no parameters (the center loss's centers are buffers).

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
        of_gram_norm: GramNorm = "relative",
        of_paper_scale: float = LossConfig.of_paper_scale,
        of_positions: Sequence[str] = (),
        arc_margin: float = 0.0,
        head_scale: float = 30.0,
        beta_center: float = 0.0,
        center_alpha: float = 0.5,
        feature_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.beta_tr, self.beta_of, self.beta_ow = beta_tr, beta_of, beta_ow
        self.power_iters = power_iters
        self.svdo_form, self.of_gram_norm = svdo_form, of_gram_norm
        self.of_paper_scale = of_paper_scale
        self.of_positions = tuple(of_positions)
        self.xent = CrossEntropyLabelSmooth(num_classes, label_smooth)
        self.triplet = TripletLoss(margin)
        self.arc_margin, self.head_scale = arc_margin, head_scale
        self.beta_center = beta_center
        self.center: CenterLoss | None = None
        if beta_center > 0:
            if feature_dim is None:
                raise ValueError("loss.beta_center > 0 needs the triplet features' feature_dim")
            self.center = CenterLoss(num_classes, feature_dim, center_alpha)

    def forward(
        self,
        output: ModelOutput,
        targets: Tensor,
        ow_weights: Sequence[Tensor] = (),
        *,
        use_of: bool = True,
        use_ow: bool = True,
        use_triplet: bool = True,
        of_factor: float = 1.0,
        ow_factor: float = 1.0,
    ) -> LossTerms:
        # Logits and features are cast to fp32 for a stable softmax and distances; the SVDO
        # terms compute in fp32 themselves.
        logits = [x.float() for x in output.logits]
        feats = [f.float() for f in output.triplet_features]
        if not logits:
            raise ValueError("output.logits: expected at least one (B, num_classes) tensor")
        zero = logits[0].new_zeros((), dtype=torch.float32)

        if self.arc_margin > 0:
            logits = [
                arcface_logits(x, targets, scale=self.head_scale, margin=self.arc_margin)
                for x in logits
            ]
        xent = torch.stack([self.xent(x, targets) for x in logits]).mean()

        triplet = zero
        if use_triplet and self.beta_tr > 0:
            if not feats:
                raise ValueError(
                    "output.triplet_features: empty, but beta_tr > 0 needs a (B, d) tensor"
                )
            triplet = self.beta_tr * torch.stack([self.triplet(f, targets) for f in feats]).mean()
        if self.center is not None:
            joined = feats[0] if len(feats) == 1 else torch.cat(feats, dim=1)
            triplet = triplet + self.beta_center * self.center(joined, targets)

        of = zero
        if use_of and self.beta_of * of_factor > 0 and self.of_positions:
            maps = output.features.of_terms(self.of_positions)
            of = (
                self.beta_of
                * of_factor
                * of_penalty(
                    maps,
                    iters=self.power_iters,
                    form=self.svdo_form,
                    gram_norm=self.of_gram_norm,
                    scale=self.of_paper_scale,
                ).to(zero.device)
            )

        ow = zero
        if use_ow and self.beta_ow * ow_factor > 0 and len(ow_weights) > 0:
            ow = (
                self.beta_ow
                * ow_factor
                * ow_penalty(ow_weights, iters=self.power_iters, form=self.svdo_form).to(
                    zero.device
                )
            )

        total = xent + triplet + of + ow
        return LossTerms(total=total, xent=xent, triplet=triplet, of=of, ow=ow)


def build_objective(
    cfg: Config, num_classes: int, *, feature_dim: int | None = None
) -> ABDObjective:
    """Eq. (6) as ``cfg.loss`` sets it, with O.F. at ``cfg.model.of_positions``;
    ``feature_dim`` (the joined triplet features' size) is needed by the center loss."""
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
        of_paper_scale=loss.of_paper_scale,
        of_positions=cfg.model.of_positions,
        arc_margin=loss.arc_margin,
        head_scale=cfg.model.head_scale,
        beta_center=loss.beta_center,
        center_alpha=loss.center_alpha,
        feature_dim=feature_dim,
    )
