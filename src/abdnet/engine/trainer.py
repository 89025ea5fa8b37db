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
writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from abdnet.config import Config, OptimConfig, dump_config, load_config
from abdnet.data import (
    ImageRecord,
    ReIDDataset,
    build_dataset,
    build_train_loader,
    caching_reader,
    split_validation,
)
from abdnet.engine import distributed as D
from abdnet.engine.checkpoint import restore_checkpoint, save_checkpoint
from abdnet.engine.evaluate import evaluate_model
from abdnet.engine.precision import Precision, choose_precision, resolve_device
from abdnet.engine.schedule import EpochPlan, TransferSchedule, apply_freeze, set_learning_rate
from abdnet.engine.state import TrainState, unwrap_model
from abdnet.files import FolderLock, atomic_write, check_output
from abdnet.layout import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    METRICS_FILE,
    PRECISION_FILE,
    SKIPPED_FILE,
    RunLayout,
)
from abdnet.losses import LossTerms, build_objective
from abdnet.models import build_model_from_config, svd_restraint_, weight_decay_groups

__all__ = ["TrainResult", "train", "train_step", "build_optimizer", "seed_everything"]

log = logging.getLogger(__name__)

_METRIC_KEYS = ("mAP", "mINP", "rank1", "rank5", "rank10")
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
    ctx, device = D.init_distributed(resolve_device(_device_of(cfg, run, resume)))
    lock = FolderLock(run.root, what=f"run folder {run.root}") if ctx.is_main else None
    try:
        with lock or contextlib.nullcontext():
            cfg = _run_config(cfg, run, resume, force)
            return _train(cfg, run, ctx, device, resume, progress, max_epochs, t_start)
    finally:
        D.cleanup(ctx)


def _train(
    cfg: Config,
    run: RunLayout,
    ctx: D.DistContext,
    device: torch.device,
    resume: bool,
    progress: bool,
    max_epochs: int | None,
    t_start: float,
) -> TrainResult:
    # 1. Everything that can fail on bad input, before anything is written.
    schedule = TransferSchedule(cfg.train, cfg.optim, cfg.loss)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    data = _TrainData.build(cfg, ctx)
    model = build_model_from_config(cfg.model, data.num_classes).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    objective = build_objective(cfg, data.num_classes).to(device)
    if resume and run.checkpoint("last").is_symlink() and not run.checkpoint("last").exists():
        raise FileNotFoundError(
            f"--resume {run.root}: checkpoints/last points to a missing folder "
            f"({run.checkpoint('last').readlink()}); refusing to start over and overwrite the "
            "run's history"
        )

    # 2. The run folder.
    if ctx.is_main and not resume:
        _clear_run(run)  # a run --force replaces; _run_config refused one otherwise
        run.root.mkdir(parents=True, exist_ok=True)
        atomic_write(run.config, dump_config(cfg))
    if ctx.is_main and data.dataset.skipped:
        atomic_write(run.skipped, "".join(f"{p}\t{why}\n" for p, why in data.dataset.skipped))
    precision = _run_precision(cfg, run, device, ctx, resume)
    log.info("device %s, precision %s (%s)", device, precision.name, precision.reason)

    # 3. The state, fresh or from the last checkpoint.
    state = TrainState(model, build_optimizer(cfg.optim, model), precision.grad_scaler())
    if resume and run.checkpoint("last").exists():
        restore_checkpoint(run.checkpoint("last"), state)
        log.info("resuming %s after epoch %d", run.root, state.epoch)
    elif resume:
        log.warning("%s: no checkpoint yet, starting from the first epoch", run.root)
    metrics = _MetricsLog(run, ctx.is_main, state.epoch)

    # 4. The epochs.
    end_epoch = (
        schedule.total_epochs if max_epochs is None else min(schedule.total_epochs, max_epochs)
    )
    history: list[dict[str, Any]] = []
    test_metrics: dict[str, float] | None = None
    wrapped: Any = None  # the model under DDP and/or torch.compile
    wrapped_stage = 0
    try:
        for epoch in range(state.epoch, end_epoch):
            plan = schedule.plan(epoch)
            if plan.reset_optimizer:
                state.optimizer = build_optimizer(cfg.optim, model)
                state.scaler = precision.grad_scaler()
            apply_freeze(model, model.backbone_parameters(), plan.freeze_backbone)
            set_learning_rate(state.optimizer, plan.lr)
            if cfg.model.svd_layer:
                svd_restraint_(model)
            if wrapped is None or wrapped_stage != plan.stage:
                # DDP is rebuilt when the set of trainable parameters changes
                wrapped = D.wrap_ddp(model, ctx, device)
                if cfg.train.compile:
                    wrapped = torch.compile(wrapped)
                wrapped_stage = plan.stage

            loader = data.loader(cfg, epoch, ctx, device)
            record = _train_epoch(
                wrapped, loader, cfg=cfg, objective=objective, state=state, precision=precision,
                plan=plan, ctx=ctx, device=device, progress=progress,
            )  # fmt: skip
            state.epoch = epoch + 1
            state.step += record["steps"]
            record["step"] = state.step

            last = state.epoch == schedule.total_epochs
            do_ckpt = state.epoch == end_epoch or state.epoch % cfg.train.checkpoint_every == 0
            do_test = last or (cfg.train.eval_every > 0 and state.epoch % cfg.train.eval_every == 0)
            improved = False
            if ctx.is_main and data.val_query and do_ckpt:
                val = evaluate_model(
                    model,
                    data.dataset,
                    cfg.eval,
                    cfg.data,
                    device,
                    query=data.val_query,
                    gallery=data.val_gallery,
                    verification=False,  # ranking metrics choose the model
                )
                record["val"] = _metrics(val.to_dict())
                if val.mAP > state.best_metric:
                    state.best_metric, state.best_epoch, improved = val.mAP, state.epoch, True
            if ctx.is_main and do_test:
                test = evaluate_model(
                    model, data.dataset, cfg.eval, cfg.data, device, verification=False
                )
                test_metrics = record["test"] = _metrics(test.to_dict())
            metrics.write(record)
            history.append(record)
            if ctx.is_main and (do_ckpt or improved):
                meta: dict[str, Any] = {
                    k: record[k]
                    for k in ("epoch", "stage", "lr", "loss", "val", "test")
                    if k in record
                }
                if do_ckpt:
                    save_checkpoint(run.root, "last", state, cfg, meta)
                if improved:
                    save_checkpoint(run.root, "best", state, cfg, meta)
            D.barrier(ctx)
    finally:
        metrics.close()
    return TrainResult(
        run_dir=run.root,
        epochs=end_epoch,
        best_epoch=state.best_epoch,
        final=history[-1] if history else {},
        test=test_metrics,
        seconds=time.perf_counter() - t_start,
        history=history,
    )


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
) -> dict[str, Any]:
    """One epoch of steps; returns its metrics.jsonl record (losses averaged over steps)."""
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
    record = {
        "epoch": plan.epoch + 1,
        "stage": plan.stage,
        "lr": plan.lr,
        "loss": loss,
        "steps": steps,
        "images_per_s": images_seen / max(seconds, 1e-9),
        "seconds": seconds,
        "use_of": plan.use_of,
        "use_ow": plan.use_ow,
    }
    log.info(
        "epoch %d (step %d): loss %.4f  xent %.4f  triplet %.4f  of %.3g  ow %.3g  %.1f img/s",
        plan.epoch + 1,
        plan.stage,
        loss["total"],
        loss["xent"],
        loss["triplet"],
        loss["of"],
        loss["ow"],
        record["images_per_s"],
    )
    return record  # fmt: skip


# ---------------------------------------------------------------------------------------
# pieces of a run


@dataclass
class _TrainData:
    """The data set, its training records (validation identities removed) and the
    validation query/gallery carved from the training identities."""

    dataset: ReIDDataset
    train: list[ImageRecord]
    num_classes: int
    val_query: list[ImageRecord]
    val_gallery: list[ImageRecord]
    reader: Any  # record -> PIL image (cached for small sets)

    @classmethod
    def build(cls, cfg: Config, ctx: D.DistContext) -> _TrainData:
        dataset = build_dataset(cfg.data)
        if cfg.data.val_fraction > 0:
            train, vq, vg = split_validation(dataset, cfg.data.val_fraction, cfg.train.seed)
        else:
            train, vq, vg = list(dataset.train), [], []
        if not train:
            raise ValueError(f"data set {dataset.name}: no training images")
        reader = caching_reader(dataset.read_image, len(train))
        data = cls(dataset, list(train), max(r.pid for r in train) + 1, list(vq), list(vg), reader)
        if len(data.loader(cfg, 0, ctx, torch.device("cpu"))) == 0:
            raise ValueError(
                f"data.batch_size {cfg.data.batch_size} / data.num_instances "
                f"{cfg.data.num_instances}: no complete batch can be drawn from the "
                f"{len(train)} training images of {len({r.pid for r in train})} identities"
            )
        return data

    def loader(self, cfg: Config, epoch: int, ctx: D.DistContext, device: torch.device):
        return build_train_loader(
            self.train,
            self.reader,
            cfg.data,
            seed=cfg.train.seed,
            epoch=epoch,
            rank=ctx.rank,
            world_size=ctx.world_size,
            pin_memory=device.type == "cuda",
        )


def _device_of(cfg: Config | None, run: RunLayout, resume: bool) -> str:
    if cfg is not None:
        return cfg.train.device
    if resume and run.config.is_file():
        return load_config(run.config).train.device
    return "auto"


def _run_config(cfg: Config | None, run: RunLayout, resume: bool, force: bool) -> Config:
    """The run's config: the given one, or (resume) the one saved in the run folder."""
    if resume:
        if not run.config.is_file():
            raise FileNotFoundError(f"--resume {run.root}: no {run.config.name} (not a run folder)")
        saved = load_config(run.config)
        if cfg is not None and cfg != saved:
            raise ValueError(
                f"--resume {run.root}: the given config differs from the run's "
                f"{run.config.name}; resume with the run's own config"
            )
        return saved
    if cfg is None:
        raise ValueError("train: a config is needed unless resuming")
    # the files of a run; anything else in the folder (a scheduler's log) is not ours
    check_output(
        run.root,
        force=force,
        folder=True,
        members=(CONFIG_FILE, CHECKPOINTS_DIR, METRICS_FILE, PRECISION_FILE, SKIPPED_FILE),
        hint=f"use --resume {run.root} to continue it, another folder",
    )
    return cfg


def _clear_run(run: RunLayout) -> None:
    """Remove the files of a run ``--force`` replaces (after every check has passed)."""
    for p in (run.config, run.metrics, run.precision, run.skipped):
        p.unlink(missing_ok=True)
    shutil.rmtree(run.checkpoints, ignore_errors=True)
    shutil.rmtree(run.tb, ignore_errors=True)


def _run_precision(
    cfg: Config, run: RunLayout, device: torch.device, ctx: D.DistContext, resume: bool
) -> Precision:
    """The run's precision, fixed once: "auto" may measure, and a resumed run or another
    rank must not decide differently (the weights would no longer be reproducible)."""
    if resume and run.precision.is_file():
        saved = json.loads(run.precision.read_text())["precision"]
        return choose_precision(device, saved)
    chosen = choose_precision(device, cfg.train.precision) if ctx.is_main else None
    choice = [chosen.name if chosen else None, chosen.reason if chosen else None]
    if ctx.enabled:
        torch.distributed.broadcast_object_list(choice, src=0)
    name, reason = choice  # set on every rank: chosen on rank 0, broadcast to the others
    assert name is not None and reason is not None
    precision = dataclasses.replace(choose_precision(device, name), reason=reason)
    if ctx.is_main:
        atomic_write(
            run.precision,
            json.dumps({"precision": precision.name, "requested": cfg.train.precision}),
        )
    return precision


def _metrics(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(d[k]) for k in _METRIC_KEYS}


class _MetricsLog:
    """``metrics.jsonl`` + TensorBoard scalars (rank 0 only)."""

    def __init__(self, run: RunLayout, enabled: bool, resume_epoch: int) -> None:
        self.enabled = enabled
        self.path = run.metrics
        self.writer = None
        if not enabled:
            return
        if self.path.exists():
            # a killed run may have logged epochs after its last checkpoint: drop them
            keep = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["epoch"] <= resume_epoch
            ]
            atomic_write(self.path, "".join(line + "\n" for line in keep))
        from torch.utils.tensorboard import SummaryWriter  # lazy: heavy (tensorboard)

        self.writer = SummaryWriter(str(run.tb), purge_step=resume_epoch + 1)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self.writer is not None:
            for key, value in _flatten(record).items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}/{k}" if prefix else k
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out
