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

import torch
from torch import Tensor, nn

from abdnet.config import ConfigError, LossConfig

from .metric import CrossEntropyLabelSmooth, TripletLoss
from .svdo import GRAM_NORMS, SVDO_FORMS, of_penalty, ow_penalty

__all__ = ["LossTerms", "ABDObjective"]


@dataclass(frozen=True)
class LossTerms:
    """The terms of eq. (6) *as they enter the total* (each already multiplied by its beta),
    so ``total == xent + triplet + of + ow``. A term that is off is a zero tensor.
    """

    total: Tensor
    xent: Tensor
    triplet: Tensor
    of: Tensor
    ow: Tensor

    def detached(self) -> dict[str, float]:
        """Plain floats for logging (one host sync)."""
        values = torch.stack([self.total, self.xent, self.triplet, self.of, self.ow]).detach()
        return dict(zip(("total", "xent", "triplet", "of", "ow"), values.float().cpu().tolist()))


def _check_loss_config(cfg: LossConfig) -> None:
    if cfg.svdo_form not in SVDO_FORMS:
        raise ConfigError(f"loss.svdo_form: expected one of {SVDO_FORMS}, got {cfg.svdo_form!r}")
    if cfg.of_gram_norm not in GRAM_NORMS:
        raise ConfigError(
            f"loss.of_gram_norm: expected one of {GRAM_NORMS}, got {cfg.of_gram_norm!r}"
        )
    if not cfg.of_paper_scale >= 0:
        raise ConfigError(f"loss.of_paper_scale: expected >= 0, got {cfg.of_paper_scale}")
    if cfg.power_iters < 1:
        raise ConfigError(f"loss.power_iters: expected >= 1, got {cfg.power_iters}")
    for key in ("beta_tr", "beta_of", "beta_ow", "margin"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"loss.{key}: expected >= 0, got {getattr(cfg, key)}")
    if not 0.0 <= cfg.label_smooth < 1.0:
        raise ConfigError(f"loss.label_smooth: expected 0 <= value < 1, got {cfg.label_smooth}")


class ABDObjective(nn.Module):
    """Eq. (6). Built from a ``LossConfig``; has no parameters.

    Call as ``objective(logits, triplet_features, targets, of_maps=..., ow_weights=...,
    use_of=..., use_ow=..., use_triplet=...)`` with the fields of the model's ``ModelOutput``
    and ``model.ow_weights()``. The ``use_*`` switches implement the schedule (step 1 of the
    two-step training: no O.F./O.W.); ``beta_tr = 0`` disables the triplet term for good.
    """

    def __init__(self, cfg: LossConfig, num_classes: int) -> None:
        super().__init__()
        _check_loss_config(cfg)
        self.cfg = cfg
        self.xent = CrossEntropyLabelSmooth(num_classes, cfg.label_smooth)
        self.triplet = TripletLoss(cfg.margin)

    def forward(
        self,
        logits: Tensor | Sequence[Tensor],
        triplet_features: Tensor | Sequence[Tensor],
        targets: Tensor,
        *,
        of_maps: Sequence[tuple[str, Tensor, float]] = (),
        ow_weights: Sequence[Tensor] = (),
        use_of: bool = True,
        use_ow: bool = True,
        use_triplet: bool = True,
    ) -> LossTerms:
        cfg = self.cfg
        logits = [logits] if isinstance(logits, Tensor) else list(logits)
        feats = (
            [triplet_features] if isinstance(triplet_features, Tensor) else list(triplet_features)
        )
        if not logits:
            raise ValueError("logits: expected at least one (B, num_classes) tensor, got none")
        zero = logits[0].new_zeros((), dtype=torch.float32)

        xent = torch.stack([self.xent(x, targets) for x in logits]).mean()

        triplet = zero
        if use_triplet and cfg.beta_tr > 0:
            if not feats:
                raise ValueError(
                    "triplet_features: empty, but loss.beta_tr > 0 needs at least one (B, d) tensor"
                )
            triplet = cfg.beta_tr * torch.stack([self.triplet(f, targets) for f in feats]).mean()

        of = zero
        if use_of and cfg.beta_of > 0 and len(of_maps) > 0:
            of = cfg.beta_of * of_penalty(
                of_maps,
                iters=cfg.power_iters,
                form=cfg.svdo_form,
                gram_norm=cfg.of_gram_norm,
                scale=cfg.of_paper_scale,
            ).to(zero.device)

        ow = zero
        if use_ow and cfg.beta_ow > 0 and len(ow_weights) > 0:
            ow = cfg.beta_ow * ow_penalty(ow_weights, iters=cfg.power_iters, form=cfg.svdo_form).to(
                zero.device
            )

        total = xent + triplet + of + ow
        return LossTerms(total=total, xent=xent, triplet=triplet, of=of, ow=ow)
