"""The two-step transfer schedule of section 4.2 (ref. [53]) and the learning rate.

Epochs are counted globally from 0: epochs ``0 .. frozen_epochs-1`` are step 1, epochs
``frozen_epochs .. frozen_epochs+epochs-1`` are step 2.

* Step 1: backbone frozen, only the new layers (reductions, attention modules incl. the
  shallow CAM's gamma, classifiers) train, with cross entropy + triplet only (O.F./O.W. off).
* Step 2: all layers train with the full eq. (6); O.F. switches on at step-2 epoch
  ``of_start_epoch`` and O.W. at ``ow_start_epoch`` (the official recipe starts O.F. at 23).
* Learning rate: ``lr`` throughout step 1; in step 2 multiplied by ``gamma`` at each step-2
  epoch listed in ``milestones`` (paper: 3e-4 -> 3e-5 after 30 -> 3e-6 after 40), or with
  ``lr_schedule="cosine"`` following half a cosine from ``lr`` at the first step-2 epoch to
  ``lr * gamma`` at the last. ``warmup_epochs > 0`` multiplies the first step-2 epochs by
  ``(e + 1) / (warmup_epochs + 1)`` (e = step-2 epoch): a linear ramp that spares a network
  trained from scratch the full learning rate on its random weights. The rate is constant
  within an epoch.
* O.F. / O.W. strength: ``loss.of_schedule`` / ``loss.ow_schedule`` multiply beta_OF /
  beta_OW by a per-epoch factor (:meth:`TransferSchedule.ortho_factor`), from the term's
  start epoch to the last epoch.

"Frozen" (documented choice, as the official code does): frozen parameters get
``requires_grad=False`` and every module whose own parameters are all frozen is put in eval
mode, so its BatchNorm layers use and keep their (ImageNet) running statistics instead of
re-estimating them from re-ID batches while their affine parameters cannot adapt.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from abdnet.config import LossConfig, OptimConfig, TrainConfig

__all__ = ["EpochPlan", "TransferSchedule", "apply_freeze", "set_learning_rate"]


@dataclass(frozen=True)
class EpochPlan:
    """What one epoch does."""

    epoch: int  # global epoch index, 0-based
    stage: int  # 1 (frozen backbone) or 2 (all layers)
    stage_epoch: int  # 0-based epoch within the stage
    lr: float
    freeze_backbone: bool
    use_triplet: bool
    use_of: bool
    use_ow: bool
    reset_optimizer: bool  # build a fresh optimizer before this epoch (step boundary)
    of_factor: float = 1.0  # multiplies beta_OF (loss.of_schedule)
    ow_factor: float = 1.0  # multiplies beta_OW (loss.ow_schedule)


class TransferSchedule:
    """Epoch -> :class:`EpochPlan` for the configured two-step schedule."""

    def __init__(self, train: TrainConfig, optim: OptimConfig, loss: LossConfig) -> None:
        # The values were checked when the config was built (abdnet.config).
        self.train = train
        self.optim = optim
        self.loss = loss

    @property
    def total_epochs(self) -> int:
        return self.train.frozen_epochs + self.train.epochs

    def lr(self, epoch: int) -> float:
        if epoch < self.train.frozen_epochs:
            return self.optim.lr
        o = self.optim
        stage_epoch = epoch - self.train.frozen_epochs
        if o.lr_schedule == "cosine":
            progress = stage_epoch / max(1, self.train.epochs - 1)  # 0 .. 1
            lr = o.lr * (o.gamma + (1.0 - o.gamma) * 0.5 * (1.0 + math.cos(math.pi * progress)))
        else:
            lr = o.lr * o.gamma ** sum(1 for m in o.milestones if stage_epoch >= m)
        if stage_epoch < o.warmup_epochs:
            lr *= (stage_epoch + 1) / (o.warmup_epochs + 1)
        return lr

    def ortho_factor(self, kind: str, stage_epoch: int, start: int) -> float:
        """The factor of beta_OF / beta_OW at ``stage_epoch`` for a term on from ``start``
        to the last step-2 epoch: "constant" 1; "ramp_up" (k + 1) / n; "ramp_down"
        1 - k / n; "cosine_down" (1 + cos(pi k / n)) / 2 (k = stage_epoch - start, n = the
        term's number of epochs)."""
        n = max(1, self.train.epochs - start)
        k = min(max(stage_epoch - start, 0), n - 1)
        if kind == "ramp_up":
            return (k + 1) / n
        if kind == "ramp_down":
            return 1.0 - k / n
        if kind == "cosine_down":
            return 0.5 * (1.0 + math.cos(math.pi * k / n))
        return 1.0

    def plan(self, epoch: int) -> EpochPlan:
        if not 0 <= epoch < self.total_epochs:
            raise IndexError(f"epoch {epoch} outside 0..{self.total_epochs - 1}")
        frozen = epoch < self.train.frozen_epochs
        stage_epoch = epoch if frozen else epoch - self.train.frozen_epochs
        return EpochPlan(
            epoch=epoch,
            stage=1 if frozen else 2,
            stage_epoch=stage_epoch,
            lr=self.lr(epoch),
            freeze_backbone=frozen,
            use_triplet=self.loss.beta_tr > 0,
            use_of=not frozen and stage_epoch >= self.train.of_start_epoch,
            use_ow=not frozen and stage_epoch >= self.train.ow_start_epoch,
            # only at a real boundary: a run without step 1 keeps its first optimizer
            reset_optimizer=(
                self.train.reset_optimizer
                and self.train.frozen_epochs > 0
                and not frozen
                and stage_epoch == 0
            ),
            of_factor=self.ortho_factor(
                self.loss.of_schedule, stage_epoch, self.train.of_start_epoch
            ),
            ow_factor=self.ortho_factor(
                self.loss.ow_schedule, stage_epoch, self.train.ow_start_epoch
            ),
        )

    def __iter__(self) -> Iterable[EpochPlan]:
        return (self.plan(e) for e in range(self.total_epochs))


def apply_freeze(
    model: nn.Module, backbone_parameters: Iterable[nn.Parameter], frozen: bool
) -> None:
    """Put ``model`` in train mode with the backbone frozen (step 1) or free (step 2).

    Call at the start of every epoch (it also sets train mode). Frozen: backbone parameters
    get ``requires_grad=False`` and every module whose own parameters are all frozen
    (BatchNorm included) is switched to eval mode.
    """
    backbone = {id(p) for p in backbone_parameters}
    for p in model.parameters():
        p.requires_grad_(not (frozen and id(p) in backbone))
    model.train()
    if not frozen:
        return
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if own and all(not p.requires_grad for p in own):
            module.eval()


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
