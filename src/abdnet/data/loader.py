"""``ImageDataset`` and the train / test ``DataLoader`` builders."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from abdnet.config import DataConfig

from .dataset import ImageRecord
from .sampler import RandomIdentitySampler
from .transforms import build_test_transform, build_train_transform

__all__ = ["ImageDataset", "resolve_workers", "build_train_loader", "build_test_loader"]


class ImageDataset(Dataset[tuple[Tensor, int, int, int]]):
    """Records -> ``(image_tensor, pid, camid, index)``; ``reader`` is e.g. ``ReIDDataset.read_image``."""

    def __init__(
        self,
        records: Sequence[ImageRecord],
        reader: Callable[[ImageRecord], Image.Image],
        transform: Callable[[Image.Image], Tensor],
    ) -> None:
        self.records = list(records)
        self.reader = reader
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Tensor, int, int, int]:
        r = self.records[index]
        return self.transform(self.reader(r)), r.pid, r.camid, index


def resolve_workers(workers: int) -> int:
    """``data.workers``: -1 picks ``min(8, cpu_count - 1)`` (at least 0)."""
    if workers < -1:
        raise ValueError(f"data.workers: expected -1 (auto) or >= 0, got {workers}")
    if workers == -1:
        return max(0, min(8, (os.cpu_count() or 1) - 1))
    return workers


def _seed_worker(worker_id: int) -> None:
    # torch gives each worker the seed base_seed + worker_id, base_seed drawn from the
    # loader's generator; numpy and random follow it so any augmentation is reproducible.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _loader_kwargs(workers: int) -> dict:
    n = resolve_workers(workers)
    kw: dict = {"num_workers": n, "pin_memory": torch.cuda.is_available()}
    if n > 0:
        kw.update(persistent_workers=True, worker_init_fn=_seed_worker, prefetch_factor=2)
    return kw


def build_train_loader(
    dataset_records: Sequence[ImageRecord],
    reader: Callable[[ImageRecord], Image.Image],
    cfg: DataConfig,
    *,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """P x K training loader: ``RandomIdentitySampler`` + ``build_train_transform(cfg)``.

    ``cfg.batch_size`` is the global batch (paper: 64 = 16 ids x 4); with ``world_size``
    processes each gets ``batch_size // world_size`` images, which must be a multiple of
    ``cfg.num_instances``. Call ``loader.sampler.set_epoch(epoch)`` every epoch. Records
    must carry training labels (0..N-1). Augmentation randomness comes from a generator
    seeded with ``seed + rank`` (worker processes) or the global torch RNG (``workers == 0``).
    """
    per_rank = cfg.batch_size // world_size
    if per_rank * world_size != cfg.batch_size or per_rank % cfg.num_instances:
        raise ValueError(
            f"data.batch_size={cfg.batch_size} must split into {world_size} process batches that are "
            f"multiples of data.num_instances={cfg.num_instances}"
        )
    sampler = RandomIdentitySampler(
        [r.pid for r in dataset_records], per_rank, cfg.num_instances, seed, rank, world_size
    )
    generator = torch.Generator()
    generator.manual_seed(seed + rank)
    return DataLoader(
        ImageDataset(dataset_records, reader, build_train_transform(cfg)),
        batch_size=per_rank,
        sampler=sampler,
        drop_last=True,
        generator=generator,
        **_loader_kwargs(cfg.workers),
    )


def build_test_loader(
    records: Sequence[ImageRecord],
    reader: Callable[[ImageRecord], Image.Image],
    cfg: DataConfig,
    batch_size: int = 128,
) -> DataLoader:
    """In-order loader with ``build_test_transform(cfg)`` (no shuffling, keeps the last batch)."""
    if batch_size < 1:
        raise ValueError(f"eval.batch_size: must be >= 1, got {batch_size}")
    generator = torch.Generator()
    generator.manual_seed(0)
    return DataLoader(
        ImageDataset(records, reader, build_test_transform(cfg)),
        batch_size=batch_size,
        shuffle=False,
        generator=generator,
        **_loader_kwargs(cfg.workers),
    )
