"""DistributedDataParallel helpers for runs launched by ``torchrun``.

``torchrun --nproc_per_node N -m abdnet.cli.main train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and ``MASTER_ADDR/PORT``; :func:`init_distributed` reads them and joins the
process group (NCCL on CUDA, gloo on CPU). Without them everything runs single-process.

Each rank gets its own share of every batch from the sampler (``rank``/``world_size``), the
gradients are averaged by DDP, and only rank 0 writes metrics, TensorBoard events and
checkpoints. BatchNorm statistics are per rank (plain DDP, no SyncBatchNorm): the paper
trained on 2 GPUs with 32 images per GPU this way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistContext",
    "init_distributed",
    "wrap_ddp",
    "all_reduce_mean",
    "barrier",
    "broadcast_object",
    "cleanup",
    "failed_ranks",
    "gather_objects",
    "shard",
]


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the torchrun process group if the environment names one.

    Returns the context and the device this rank uses (``cuda:LOCAL_RANK`` on GPUs).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(), device
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank=rank, world_size=world, local_rank=local), device


def wrap_ddp(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """DDP-wrap ``model`` (no-op single-process).

    DDP registers the parameters that require grad *when it is built*, so the trainer
    re-wraps at the step-1/step-2 boundary, after changing which parameters are frozen.
    """
    if not ctx.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def all_reduce_mean(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Mean of ``value`` over ranks (a copy; unchanged single-process)."""
    if not ctx.enabled:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / ctx.world_size


def shard(n: int, ctx: DistContext) -> range:
    """This rank's contiguous share of ``n`` items: ``[r*n//W, (r+1)*n//W)``; the shares of
    ranks 0..W-1 are in order, cover every item once and differ in size by at most one."""
    return range(ctx.rank * n // ctx.world_size, (ctx.rank + 1) * n // ctx.world_size)


def failed_ranks(ok: bool, ctx: DistContext) -> list[int]:
    """The ranks that report ``ok=False`` (every rank must call it; a collective)."""
    if not ctx.enabled:
        return [] if ok else [0]
    flags = torch.zeros(ctx.world_size, dtype=torch.int64)
    flags[ctx.rank] = 0 if ok else 1
    dist.all_reduce(flags, op=dist.ReduceOp.SUM)
    return [r for r, failed in enumerate(flags.tolist()) if failed]


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank (pickled; every rank must call it; a collective)."""
    if not ctx.enabled:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any, ctx: DistContext) -> list[Any] | None:
    """Every rank's ``obj`` in rank order on rank 0, None on the other ranks (pickled; every
    rank must call it; a collective)."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def cleanup(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
