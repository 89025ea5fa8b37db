"""The training loop: two-step schedule, AMP, DDP, checkpoints, metrics, model selection.

``train(cfg, out_dir)`` runs the whole schedule of :mod:`abdnet.engine.schedule` into a run
folder (layout in :mod:`abdnet.layout`); ``train(None, out_dir, resume=True)`` continues it
from ``checkpoints/last`` and, in deterministic mode, ends with bit-identical weights to an
uninterrupted run: a checkpoint holds everything the next epoch depends on
(:class:`~abdnet.engine.state.TrainState`), and an epoch's batches are a function of the seed
and the epoch (:func:`abdnet.data.build_train_loader`).

Model selection (documented choice): with ``data.val_fraction > 0`` a validation
query/gallery split is carved from the *training* identities and the epoch with the highest
validation mAP is kept as ``checkpoints/best``; the test query/gallery is evaluated every
``train.eval_every`` epochs and at the end and only reported, never used to choose. With
``val_fraction = 0`` there is no honest way to choose an epoch, so no ``best`` is written and
the last epoch is the model (``load_model(RUN)`` then uses ``last``).

Safety: the run folder is locked while a process trains into it (a second training into the
same folder is refused); everything is checked (config, data set, batches) before the folder
is created; a folder holding another run is refused unless ``force``; ``resume`` refuses a
run whose ``checkpoints/last`` is missing its target instead of starting over. Only rank 0
writes. That policy is :mod:`abdnet.engine.run_folder`; the epochs' records and their log
are :mod:`abdnet.engine.metrics_log`, the run's data :mod:`abdnet.engine.train_data`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from abdnet.config import Config, OptimConfig
from abdnet.engine import distributed as D
from abdnet.engine.checkpoint import restore_checkpoint, save_checkpoint
from abdnet.engine.evaluate import evaluate_model
from abdnet.engine.metrics_log import EpochRecord, MetricsLog
from abdnet.engine.precision import Precision, resolve_device
from abdnet.engine.run_folder import (
    check_resumable,
    device_of,
    run_config,
    run_precision,
    start_run_folder,
)
from abdnet.engine.schedule import EpochPlan, TransferSchedule, apply_freeze, set_learning_rate
from abdnet.engine.state import TrainState, unwrap_model
from abdnet.engine.train_data import TrainData
from abdnet.files import FolderLock
from abdnet.layout import BEST, LAST, RunLayout
from abdnet.losses import LossTerms, build_objective
from abdnet.models import (
    ABDNet,
    OfficialABDNet,
    build_model_from_config,
    svd_restraint_,
    weight_decay_groups,
)

__all__ = ["TrainResult", "train", "train_step", "build_optimizer", "seed_everything"]

log = logging.getLogger(__name__)

_LOSS_KEYS = ("total", "xent", "triplet", "of", "ow")


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    epochs: int  # epochs completed
    best_epoch: int | None  # epoch (1-based) kept as checkpoints/best, None without validation
    final: dict[str, Any]  # the last metrics.jsonl record
    test: dict[str, float] | None  # test query/gallery metrics of the last model
    seconds: float  # wall time of this call
    history: list[dict[str, Any]] = field(default_factory=list)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed python/numpy/torch; in deterministic mode also forbid nondeterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this before its first use to be reproducible
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.backends.cudnn.benchmark = True


def build_optimizer(optim: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adam or SGD over the model's parameter groups (weight decay per
    ``optim.weight_decay_scope``); frozen parameters have no gradient and are skipped."""
    groups = weight_decay_groups(unwrap_model(model), optim.weight_decay, optim.weight_decay_scope)
    params = [p for g in groups for p in g["params"]]
    if optim.optimizer == "adam":
        # fused: one kernel over all parameters (CPU and CUDA), same update to float rounding
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
        return torch.optim.Adam(groups, lr=optim.lr, fused=fused)
    return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum)


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    pids: torch.Tensor,
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    precision: Precision,
    plan: EpochPlan,
    *,
    grad_clip: float = 0.0,
) -> LossTerms:
    """One optimizer step on one (per-rank) batch with the loss terms ``plan`` enables."""
    plain: Any = unwrap_model(model)  # the ABDNet / OfficialABDNet under the wrappers
    optimizer.zero_grad(set_to_none=True)
    with precision.autocast():
        out = model(images)
    terms = objective(
        out,
        pids,
        plain.ow_weights() if plan.use_ow else (),
        use_of=plan.use_of,
        use_ow=plan.use_ow,
        use_triplet=plan.use_triplet,
        of_factor=plan.of_factor,
        ow_factor=plan.ow_factor,
    )
    scaler.scale(terms.total).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_([p for p in plain.parameters() if p.requires_grad], grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return terms


# ---------------------------------------------------------------------------------------
# the run


def train(
    cfg: Config | None,
    out_dir: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = False,
    max_epochs: int | None = None,
) -> TrainResult:
    """Train ``cfg`` into the run folder ``out_dir`` (or continue it with ``resume``).

    ``force`` replaces a run already in ``out_dir``. ``max_epochs`` stops after that many
    epochs in total (the run can be resumed later); the schedule itself is the config's.
    """
    t_start = time.perf_counter()
    run = RunLayout(out_dir)
    ctx, device = D.init_distributed(resolve_device(device_of(cfg, run, resume=resume)))
    lock = FolderLock(run.root, what=f"run folder {run.root}") if ctx.is_main else None
    try:
        with lock or contextlib.nullcontext():
            cfg = run_config(cfg, run, resume=resume, force=force)
            session = _Session.prepare(cfg, run, ctx, device, resume=resume, progress=progress)
            trained = session.train(resume=resume, max_epochs=max_epochs)
    finally:
        D.cleanup(ctx)
    history = trained.history
    return TrainResult(
        run_dir=run.root,
        epochs=trained.end_epoch,
        best_epoch=trained.state.best_epoch,
        final=history[-1].to_json() if history else {},
        test=next((r.test for r in reversed(history) if r.test is not None), None),
        seconds=time.perf_counter() - t_start,
        history=[r.to_json() for r in history],
    )


@dataclass
class _Trained:
    """What ``_Session.train`` did: this call's epochs, the final state, the last epoch."""

    history: list[EpochRecord]
    state: TrainState
    end_epoch: int


@dataclass
class _Session:
    """One call of ``train``: what it trains (config, data, model, loss) and where."""

    cfg: Config
    run: RunLayout
    ctx: D.DistContext
    device: torch.device
    schedule: TransferSchedule
    data: TrainData
    model: ABDNet | OfficialABDNet
    objective: nn.Module
    progress: bool

    @classmethod
    def prepare(
        cls,
        cfg: Config,
        run: RunLayout,
        ctx: D.DistContext,
        device: torch.device,
        *,
        resume: bool,
        progress: bool,
    ) -> _Session:
        """Everything that can fail on bad input, before anything is written."""
        schedule = TransferSchedule(cfg.train, cfg.optim, cfg.loss)
        seed_everything(cfg.train.seed, cfg.train.deterministic)
        data = TrainData.build(cfg, ctx)
        model = build_model_from_config(cfg.model, data.num_classes).to(device)
        if cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        objective = build_objective(
            cfg, data.num_classes, feature_dim=getattr(model, "feature_dim", None)
        ).to(device)
        check_resumable(run, resume=resume)
        return cls(
            cfg=cfg, run=run, ctx=ctx, device=device, schedule=schedule, data=data,
            model=model, objective=objective, progress=progress,
        )  # fmt: skip

    def train(self, *, resume: bool, max_epochs: int | None) -> _Trained:
        """The run folder, the state (fresh or from the last checkpoint), then the epochs."""
        cfg, run, ctx = self.cfg, self.run, self.ctx
        start_run_folder(
            run, cfg, resume=resume, is_main=ctx.is_main, skipped=self.data.dataset.skipped
        )
        precision = run_precision(cfg, run, self.device, ctx, resume=resume)
        log.info("device %s, precision %s (%s)", self.device, precision.name, precision.reason)
        state = TrainState(
            self.model,
            build_optimizer(cfg.optim, self.model),
            precision.grad_scaler(),
            objective=self.objective,
        )
        if resume and run.checkpoint(LAST).exists():
            restore_checkpoint(run.checkpoint(LAST), state)
            log.info("resuming %s after epoch %d", run.root, state.epoch)
        elif resume:
            log.warning("%s: no checkpoint yet, starting from the first epoch", run.root)
        total = self.schedule.total_epochs
        end_epoch = total if max_epochs is None else min(total, max_epochs)
        metrics = MetricsLog(run, enabled=ctx.is_main, resume_epoch=state.epoch)
        try:
            history = self._epochs(state, precision, metrics, end_epoch)
        finally:
            metrics.close()
        return _Trained(history=history, state=state, end_epoch=end_epoch)

    def _epochs(
        self, state: TrainState, precision: Precision, metrics: MetricsLog, end_epoch: int
    ) -> list[EpochRecord]:
        cfg, ctx, model = self.cfg, self.ctx, self.model
        history: list[EpochRecord] = []
        wrapped: Any = None  # the model under DDP and/or torch.compile
        wrapped_stage = 0
        for epoch in range(state.epoch, end_epoch):
            plan = self.schedule.plan(epoch)
            if plan.reset_optimizer:
                state.optimizer = build_optimizer(cfg.optim, model)
                state.scaler = precision.grad_scaler()
            apply_freeze(model, model.backbone_parameters(), plan.freeze_backbone)
            set_learning_rate(state.optimizer, plan.lr)
            if cfg.model.svd_layer:
                svd_restraint_(model)
            if wrapped is None or wrapped_stage != plan.stage:
                # DDP is rebuilt when the set of trainable parameters changes
                wrapped = D.wrap_ddp(model, ctx, self.device)
                if cfg.train.compile:
                    wrapped = torch.compile(wrapped)
                wrapped_stage = plan.stage

            loader = self.data.loader(cfg, epoch, ctx, self.device)
            record = _train_epoch(
                wrapped, loader, cfg=cfg, objective=self.objective, state=state,
                precision=precision, plan=plan, ctx=ctx, device=self.device,
                progress=self.progress,
            )  # fmt: skip
            state.epoch = epoch + 1
            state.step += record.steps
            record.step = state.step

            do_ckpt = state.epoch == end_epoch or state.epoch % cfg.train.checkpoint_every == 0
            improved = self._evaluate(state, record, do_ckpt=do_ckpt)
            metrics.write(record)
            history.append(record)
            if ctx.is_main and (do_ckpt or improved):
                meta = record.checkpoint_meta()
                if do_ckpt:
                    save_checkpoint(self.run.root, LAST, state, cfg, meta)
                if improved:
                    save_checkpoint(self.run.root, BEST, state, cfg, meta)
            D.barrier(ctx)
        return history

    def _evaluate(self, state: TrainState, record: EpochRecord, *, do_ckpt: bool) -> bool:
        """Validation (when a checkpoint is written) and test (every ``eval_every`` epochs
        and at the end) metrics into ``record``; True when validation mAP improved."""
        cfg = self.cfg
        last = state.epoch == self.schedule.total_epochs
        do_test = last or (cfg.train.eval_every > 0 and state.epoch % cfg.train.eval_every == 0)
        improved = False
        if self.ctx.is_main and self.data.val_query and do_ckpt:
            val = evaluate_model(
                self.model,
                self.data.dataset,
                cfg.eval,
                cfg.data,
                self.device,
                query=self.data.val_query,
                gallery=self.data.val_gallery,
                verification=False,  # ranking metrics choose the model
            )
            record.val = val.metrics()
            if val.mAP > state.best_metric:
                state.best_metric, state.best_epoch, improved = val.mAP, state.epoch, True
        if self.ctx.is_main and do_test:
            test = evaluate_model(
                self.model, self.data.dataset, cfg.eval, cfg.data, self.device, verification=False
            )
            record.test = test.metrics()
        return improved


def _train_epoch(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    cfg: Config,
    objective: nn.Module,
    state: TrainState,
    precision: Precision,
    plan: EpochPlan,
    ctx: D.DistContext,
    device: torch.device,
    progress: bool,
) -> EpochRecord:
    """One epoch of steps; returns its record (losses averaged over steps)."""
    sums = dict.fromkeys(_LOSS_KEYS, 0.0)
    steps = images_seen = 0
    bar: Any = loader
    if progress and ctx.is_main:
        from tqdm.auto import tqdm  # lazy: only for interactive runs

        bar = tqdm(
            loader,
            desc=f"epoch {plan.epoch + 1} (step {plan.stage})",
            leave=False,
            dynamic_ncols=True,
        )
    t0 = time.perf_counter()
    for images, pids, *_ in bar:
        images = images.to(device, non_blocking=True)
        if cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        terms = train_step(
            model,
            images,
            pids.to(device, non_blocking=True),
            objective,
            state.optimizer,
            state.scaler,
            precision,
            plan,
            grad_clip=cfg.train.grad_clip,
        )
        losses = terms.as_floats()  # one host sync per step
        if not math.isfinite(losses["total"]):
            raise FloatingPointError(
                f"epoch {plan.epoch + 1}: the loss is not finite ({losses}); lower optim.lr or "
                "set train.grad_clip"
            )
        steps += 1
        images_seen += images.shape[0] * ctx.world_size
        for k in sums:
            sums[k] += losses[k]
        if bar is not loader:
            rate = images_seen / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(
                loss=f"{losses['total']:.3f}",
                of=f"{losses['of']:.2e}",
                ow=f"{losses['ow']:.2e}",
                img_s=f"{rate:.1f}",
            )
    seconds = time.perf_counter() - t0
    loss = {k: v / max(steps, 1) for k, v in sums.items()}
    if ctx.enabled:
        mean = D.all_reduce_mean(torch.tensor(list(loss.values()), dtype=torch.float64), ctx)
        loss = dict(zip(loss, mean.tolist()))
    record = EpochRecord(
        epoch=plan.epoch + 1,
        stage=plan.stage,
        lr=plan.lr,
        of_factor=plan.of_factor,
        ow_factor=plan.ow_factor,
        loss=loss,
        steps=steps,
        images_per_s=images_seen / max(seconds, 1e-9),
        seconds=seconds,
        use_of=plan.use_of,
        use_ow=plan.use_ow,
    )
    log.info(
        "epoch %d (step %d): loss %.4f  xent %.4f  triplet %.4f  of %.3g  ow %.3g  %.1f img/s",
        plan.epoch + 1,
        plan.stage,
        loss["total"],
        loss["xent"],
        loss["triplet"],
        loss["of"],
        loss["ow"],
        record.images_per_s,
    )
    return record
