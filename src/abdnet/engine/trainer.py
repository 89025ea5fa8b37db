"""The training loop: two-step schedule, AMP, DDP, checkpoints, metrics, model selection.

``train(cfg, out_dir)`` runs the whole schedule of :mod:`abdnet.engine.schedule`;
``train(cfg, out_dir, resume=True)`` continues a run from ``RUN/checkpoints/last`` and, in
deterministic mode, ends with bit-identical weights to an uninterrupted run: checkpoints are
taken at epoch ends and hold everything the next epoch depends on (weights incl. BN
statistics, optimizer state, RNG states; the sampler and the learning rate are functions of
the epoch).

Model selection (documented choice): with ``data.val_fraction > 0`` a validation
query/gallery split is carved from the *training* identities and the epoch with the highest
validation mAP is kept as ``checkpoints/best``; the test query/gallery is evaluated every
``train.eval_every`` epochs and at the end and only reported, never used to choose. With
``val_fraction = 0`` there is no honest way to choose an epoch, so no ``best`` is written and
the last epoch is the model (``load_model(RUN)`` then uses ``last``).

Run folder: ``config.yaml`` (resolved config), ``metrics.jsonl`` (one line per epoch),
``tb/`` (TensorBoard events), ``checkpoints/{last,best}/``. Only rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
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

from abdnet.config import Config, dump_config, load_config
from abdnet.engine import distributed as D
from abdnet.engine.checkpoint import (
    capture_rng_state,
    checkpoint_path,
    load_checkpoint,
    load_model_weights,
    restore_rng_state,
    save_checkpoint,
    unwrap_model,
)
from abdnet.engine.evaluate import EvalReport, evaluate_model
from abdnet.engine.precision import Precision, choose_precision, resolve_device
from abdnet.engine.schedule import EpochPlan, TransferSchedule, apply_freeze, set_learning_rate

__all__ = ["TrainResult", "StepLosses", "train", "train_step", "build_optimizer", "seed_everything"]

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
PRECISION_FILE = "precision.json"  # the precision "auto" resolved to, reused on resume
METRICS_FILE = "metrics.jsonl"


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


@dataclass
class StepLosses:
    """Loss terms of eq. (6) of one step, as floats."""

    total: float
    xent: float
    triplet: float
    of: float
    ow: float


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


def build_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    """Adam or SGD over all parameters (frozen ones have no gradient and are skipped)."""
    params = list(unwrap_model(model).parameters())
    o = cfg.optim
    if o.optimizer == "adam":
        # fused: one kernel over all parameters (CPU and CUDA); same update to float rounding,
        # 4x faster than the for-loop step on CPU (48.7 M params: 0.133 -> 0.035 s, 1 thread)
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay, fused=fused)
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum)
    raise ValueError(f"optim.optimizer: expected 'adam' or 'sgd', got {o.optimizer!r}")


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
) -> StepLosses:
    """One optimizer step on one (per-rank) batch with the loss terms ``plan`` enables."""
    plain = unwrap_model(model)
    optimizer.zero_grad(set_to_none=True)
    with precision.autocast():
        out = model(images)
    # The SVDO terms compute in fp32 themselves; logits are cast for a stable softmax.
    terms = objective(
        [z.float() for z in out.logits],
        [f.float() for f in out.triplet_features],
        pids,
        of_maps=out.of_maps,
        ow_weights=plain.ow_weights() if plan.use_ow else [],
        use_of=plan.use_of,
        use_ow=plan.use_ow,
        use_triplet=plan.use_triplet,
    )
    # (a non-finite loss is reported after the step: checking first would cost a host sync)
    scaler.scale(terms.total).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_([p for p in plain.parameters() if p.requires_grad], grad_clip)
    scaler.step(optimizer)
    scaler.update()
    values = terms.detached()  # one host sync
    if not math.isfinite(values["total"]):
        raise FloatingPointError(f"epoch {plan.epoch + 1}: non-finite loss {values}")
    return StepLosses(**values)


# ---------------------------------------------------------------------------------------
# data


# Training sets up to this many images keep their decoded images in memory (in the main
# process): the synthetic set renders each image in ~6 ms, which otherwise costs more than
# the training step of a small network. Augmentation still runs on every read.
_CACHE_IMAGES = 5000


@dataclass
class _Data:
    dataset: Any
    train: list[Any]  # training records (val identities removed)
    num_classes: int
    val_query: list[Any]
    val_gallery: list[Any]
    reader: Any = None  # record -> PIL image (cached for small sets)


def _build_data(cfg: Config) -> _Data:
    from abdnet.data import build_dataset, split_validation

    dataset = build_dataset(cfg.data)
    if cfg.data.val_fraction > 0:
        train, vq, vg = split_validation(dataset, cfg.data.val_fraction, cfg.train.seed)
    else:
        train, vq, vg = list(dataset.train), [], []
    if not train:
        raise ValueError(f"data set {dataset.name}: no training images")
    num_classes = max(r.pid for r in train) + 1
    reader = dataset.read_image
    if len(train) <= _CACHE_IMAGES:
        reader = functools.lru_cache(maxsize=None)(reader)
    return _Data(dataset, list(train), num_classes, list(vq), list(vg), reader)


def _train_loader(
    cfg: Config, data: _Data, epoch: int, ctx: D.DistContext, device: torch.device
) -> Iterable[Any]:
    """This rank's batches of ``epoch``: P identities x K images, augmented.

    The sampler is seeded by (seed, epoch) and the loader's worker seeds come from a
    generator seeded the same way, so an epoch's batches do not depend on what ran before
    (resume, worker count).
    """
    from torch.utils.data import DataLoader

    from abdnet.data import (
        ImageDataset,
        RandomIdentitySampler,
        build_train_transform,
        resolve_workers,
    )

    per_rank = cfg.data.batch_size // ctx.world_size
    if per_rank * ctx.world_size != cfg.data.batch_size or per_rank % cfg.data.num_instances:
        raise ValueError(
            f"data.batch_size: {cfg.data.batch_size} must split into {ctx.world_size} "
            f"process batches that are multiples of data.num_instances={cfg.data.num_instances}"
        )
    sampler = RandomIdentitySampler(
        [r.pid for r in data.train],
        per_rank,
        cfg.data.num_instances,
        seed=cfg.train.seed,
        rank=ctx.rank,
        world_size=ctx.world_size,
    )
    sampler.set_epoch(epoch)
    gen = torch.Generator().manual_seed(cfg.train.seed * 100_003 + epoch)
    workers = resolve_workers(cfg.data.workers)
    return DataLoader(
        ImageDataset(data.train, data.reader, build_train_transform(cfg.data)),
        batch_size=per_rank,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        generator=gen,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )


# ---------------------------------------------------------------------------------------
# logging


class _MetricsLog:
    """``metrics.jsonl`` + TensorBoard scalars (rank 0 only)."""

    def __init__(self, run_dir: Path, enabled: bool, resume_epoch: int) -> None:
        self.enabled = enabled
        self.path = run_dir / METRICS_FILE
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
            self.path.write_text("".join(line + "\n" for line in keep))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=resume_epoch + 1)
        except ImportError:  # pragma: no cover - tensorboard is a dependency
            log.warning("tensorboard not installed: no event files")

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
        if self.writer is not None:
            step = record["epoch"]
            for key, value in _flatten(record).items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, step)
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


def _report_dict(report: EvalReport) -> dict[str, float]:
    d = report.to_dict()
    return {k: float(d[k]) for k in ("mAP", "mINP", "rank1", "rank5", "rank10")}


# ---------------------------------------------------------------------------------------
# the run


def _resolve_config(cfg: Config | None, out_dir: Path, resume: bool) -> Config:
    """The run's config: the given one, or (resume) the one saved in the run folder."""
    config_file = out_dir / CONFIG_FILE
    if resume:
        if not config_file.is_file():
            raise FileNotFoundError(f"--resume {out_dir}: no {CONFIG_FILE} (not a run folder)")
        saved = load_config(config_file)
        if cfg is not None and cfg != saved:
            raise ValueError(
                f"--resume {out_dir}: the given config differs from the run's {CONFIG_FILE}; "
                "resume with the run's own config"
            )
        return saved
    if cfg is None:
        raise ValueError("train: a config is needed unless resuming")
    if checkpoint_path(out_dir, "last").exists():
        raise ValueError(
            f"--out {out_dir}: already holds a run with checkpoints; use --resume {out_dir} "
            "or another folder"
        )
    return cfg


def _run_precision(
    cfg: Config, out_dir: Path, device: torch.device, ctx: D.DistContext, resume: bool
) -> Precision:
    """The run's precision, fixed once: "auto" may measure, and a resumed run or another
    rank must not decide differently (the weights would no longer be reproducible)."""
    record = out_dir / PRECISION_FILE
    if resume and record.is_file():
        saved = json.loads(record.read_text())["precision"]
        return choose_precision(device, saved)
    chosen = choose_precision(device, cfg.train.precision) if ctx.is_main else None
    choice = [chosen.name if chosen else None, chosen.reason if chosen else None]
    if ctx.enabled:
        torch.distributed.broadcast_object_list(choice, src=0)
    precision = dataclasses.replace(choose_precision(device, choice[0]), reason=choice[1])
    if ctx.is_main:
        record.write_text(
            json.dumps({"precision": precision.name, "requested": cfg.train.precision})
        )
    return precision


def train(
    cfg: Config | None,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    max_epochs: int | None = None,
) -> TrainResult:
    """Train ``cfg`` into the run folder ``out_dir`` (or continue it with ``resume``).

    ``max_epochs`` stops after that many epochs in total (the run can be resumed later);
    the schedule itself is always the config's.
    """
    from abdnet.losses import ABDObjective
    from abdnet.models import build_model_from_config, svd_restraint_

    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    cfg = _resolve_config(cfg, out_dir, resume)
    ctx, device = D.init_distributed(resolve_device(cfg.train.device))
    try:
        if ctx.is_main and not resume:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / CONFIG_FILE).write_text(dump_config(cfg))
        precision = _run_precision(cfg, out_dir, device, ctx, resume)
        log.info("device %s, precision %s (%s)", device, precision.name, precision.reason)
        seed_everything(cfg.train.seed, cfg.train.deterministic)
        schedule = TransferSchedule(cfg.train, cfg.optim, cfg.loss)
        data = _build_data(cfg)
        model = build_model_from_config(cfg.model, data.num_classes).to(device)
        if cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        objective = ABDObjective(cfg.loss, data.num_classes).to(device)
        optimizer = build_optimizer(cfg, model)
        scaler = precision.grad_scaler()

        start_epoch, global_step, best_metric, best_epoch = 0, 0, -math.inf, None
        last_file = checkpoint_path(out_dir, "last")
        if resume and last_file.exists():
            ckpt = load_checkpoint(last_file)
            load_model_weights(model, ckpt.model_file)
            optimizer.load_state_dict(ckpt.state["optimizer"])
            scaler.load_state_dict(ckpt.state["scaler"])
            restore_rng_state(ckpt.state["rng"])
            start_epoch = ckpt.epoch
            global_step = int(ckpt.state["step"])
            best_metric = float(ckpt.state.get("best_metric", -math.inf))
            best_epoch = ckpt.state.get("best_epoch")
            log.info("resuming %s after epoch %d", out_dir, start_epoch)
        elif resume:
            log.warning("%s: no checkpoint yet, starting from scratch", out_dir)
        metrics = _MetricsLog(out_dir, ctx.is_main, start_epoch)

        end_epoch = schedule.total_epochs
        if max_epochs is not None:
            end_epoch = min(end_epoch, max_epochs)
        history: list[dict[str, Any]] = []
        test_metrics: dict[str, float] | None = None
        wrapped: nn.Module | None = None
        wrapped_stage = 0
        for epoch in range(start_epoch, end_epoch):
            plan = schedule.plan(epoch)
            if plan.reset_optimizer:
                optimizer = build_optimizer(cfg, model)
                scaler = precision.grad_scaler()
            plain = unwrap_model(model)
            apply_freeze(plain, plain.backbone_parameters(), plan.freeze_backbone)
            set_learning_rate(optimizer, plan.lr)
            if cfg.model.svd_layer:
                svd_restraint_(plain)
            if wrapped is None or wrapped_stage != plan.stage:
                # DDP must be rebuilt when the set of trainable parameters changes
                wrapped = D.wrap_ddp(model, ctx, device)
                if cfg.train.compile:
                    wrapped = torch.compile(wrapped)
                wrapped_stage = plan.stage
            record = _train_epoch(
                cfg,
                wrapped,
                objective,
                optimizer,
                scaler,
                precision,
                plan,
                data,
                ctx,
                device,
                progress,
            )
            global_step += record["steps"]
            record["step"] = global_step
            last = epoch + 1 == schedule.total_epochs
            stop = epoch + 1 == end_epoch
            do_ckpt = stop or (epoch + 1) % max(1, cfg.train.checkpoint_every) == 0
            do_test = last or (cfg.train.eval_every > 0 and (epoch + 1) % cfg.train.eval_every == 0)
            improved = False
            if data.val_query and do_ckpt and ctx.is_main:
                val = evaluate_model(
                    plain, data.dataset, cfg.eval, cfg.data, device,
                    query=data.val_query, gallery=data.val_gallery, precision=precision,
                )  # fmt: skip
                record["val"] = _report_dict(val)
                if val.mAP > best_metric:
                    best_metric, best_epoch, improved = val.mAP, epoch + 1, True
            if do_test and ctx.is_main:
                test = evaluate_model(
                    plain, data.dataset, cfg.eval, cfg.data, device, precision=precision,
                    progress=progress,
                )  # fmt: skip
                test_metrics = record["test"] = _report_dict(test)
            metrics.write(record)
            history.append(record)
            if ctx.is_main and (do_ckpt or improved):
                state = {
                    "epoch": epoch + 1,
                    "step": record["step"],
                    "optimizer": optimizer.state_dict(),
                    "scheduler": {"epoch": epoch + 1, "lr": plan.lr, "stage": plan.stage},
                    "scaler": scaler.state_dict(),
                    "sampler": {"seed": cfg.train.seed, "epoch": epoch + 1},
                    "rng": capture_rng_state(),
                    "best_metric": best_metric,
                    "best_epoch": best_epoch,
                }
                meta = {k: record[k] for k in ("epoch", "stage", "lr", "loss") if k in record}
                meta.update({k: record[k] for k in ("val", "test") if k in record})
                if do_ckpt:
                    save_checkpoint(
                        out_dir, "last", model=model, config=cfg, state=state, meta=meta
                    )
                if improved:
                    save_checkpoint(
                        out_dir, "best", model=model, config=cfg, state=state, meta=meta
                    )
            D.barrier(ctx)
        metrics.close()
        return TrainResult(
            run_dir=out_dir,
            epochs=end_epoch,
            best_epoch=best_epoch,
            final=history[-1] if history else {},
            test=test_metrics,
            seconds=time.perf_counter() - t_start,
            history=history,
        )
    finally:
        D.cleanup(ctx)


def _train_epoch(
    cfg: Config,
    model: nn.Module,
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    precision: Precision,
    plan: EpochPlan,
    data: _Data,
    ctx: D.DistContext,
    device: torch.device,
    progress: bool,
) -> dict[str, Any]:
    loader = _train_loader(cfg, data, plan.epoch, ctx, device)
    sums = {"total": 0.0, "xent": 0.0, "triplet": 0.0, "of": 0.0, "ow": 0.0}
    steps = images_seen = 0
    bar: Any = loader
    if progress and ctx.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(
            loader,
            desc=f"epoch {plan.epoch + 1} (step {plan.stage})",
            leave=False,
            dynamic_ncols=True,
        )
    t0 = time.perf_counter()
    for batch in bar:
        images, pids = batch[0], batch[1]
        images = images.to(device, non_blocking=True)
        if cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        pids = pids.to(device, non_blocking=True)
        losses = train_step(
            model, images, pids, objective, optimizer, scaler, precision, plan,
            grad_clip=cfg.train.grad_clip,
        )  # fmt: skip
        steps += 1
        images_seen += images.shape[0] * ctx.world_size
        for k in sums:
            sums[k] += getattr(losses, k)
        if bar is not loader:
            rate = images_seen / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(
                loss=f"{losses.total:.3f}", xent=f"{losses.xent:.3f}", tri=f"{losses.triplet:.3f}",
                of=f"{losses.of:.2e}", ow=f"{losses.ow:.2e}", img_s=f"{rate:.1f}",
            )  # fmt: skip
    if steps == 0:
        raise ValueError(
            f"data.batch_size {cfg.data.batch_size} / data.num_instances {cfg.data.num_instances}: "
            f"no complete batch can be drawn from {len(data.train)} training images"
        )
    seconds = time.perf_counter() - t0
    loss = {k: v / steps for k, v in sums.items()}
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
        plan.epoch + 1, plan.stage, loss["total"], loss["xent"], loss["triplet"], loss["of"],
        loss["ow"], record["images_per_s"],
    )  # fmt: skip
    return record
