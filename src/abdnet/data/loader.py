"""``ImageDataset`` and the train / test ``DataLoader`` builders."""

from __future__ import annotations

import functools
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
from .transforms import build_train_transform

__all__ = [
    "ImageDataset",
    "resolve_workers",
    "caching_reader",
    "build_train_loader",
    "build_test_loader",
]


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


# Training sets up to this many images keep their decoded images in memory: the synthetic
# set renders each image in a few milliseconds, which otherwise costs more than the training
# step of a small network. Augmentation still runs on every read.
CACHE_MAX_IMAGES = 5000


def caching_reader(
    reader: Callable[[ImageRecord], Image.Image], num_images: int
) -> Callable[[ImageRecord], Image.Image]:
    """``reader`` with a decoded-image cache when the set is small (``CACHE_MAX_IMAGES``)."""
    if num_images > CACHE_MAX_IMAGES:
        return reader
    return functools.lru_cache(maxsize=None)(reader)


def build_train_loader(
    records: Sequence[ImageRecord],
    reader: Callable[[ImageRecord], Image.Image],
    cfg: DataConfig,
    *,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """This process's P x K batches of one epoch, augmented by ``build_train_transform(cfg)``.

    ``cfg.batch_size`` is the global batch (paper: 64 = 16 ids x 4); with ``world_size``
    processes each gets ``batch_size // world_size`` images, a multiple of
    ``cfg.num_instances``. Records carry training labels (0..N-1). The sampler is seeded by
    ``(seed, epoch)`` and the worker processes' seeds come from a generator seeded the same
    way, so an epoch's batches are a function of ``(seed, epoch, rank)``, not of the epochs
    before it: a resumed run draws exactly what an uninterrupted one would. With
    ``cfg.workers == 0`` augmentation draws from the global torch RNG (restored on resume).
    """
    per_rank = cfg.batch_size // world_size
    if per_rank * world_size != cfg.batch_size or per_rank % cfg.num_instances:
        raise ValueError(
            f"data.batch_size={cfg.batch_size} must split into {world_size} process batches that "
            f"are multiples of data.num_instances={cfg.num_instances}"
        )
    sampler = RandomIdentitySampler(
        [r.pid for r in records], per_rank, cfg.num_instances, seed, rank, world_size
    )
    sampler.set_epoch(epoch)
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    workers = resolve_workers(cfg.workers)
    return DataLoader(
        ImageDataset(records, reader, build_train_transform(cfg)),
        batch_size=per_rank,
        sampler=sampler,
        drop_last=True,
        generator=generator,
        num_workers=workers,
        worker_init_fn=_seed_worker if workers > 0 else None,
        prefetch_factor=4 if workers > 0 else None,
        pin_memory=pin_memory,
    )


def build_test_loader(
    records: Sequence[ImageRecord],
    reader: Callable[[ImageRecord], Image.Image],
    transform: Callable[[Image.Image], Tensor],
    *,
    batch_size: int = 128,
    workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """In-order batches ``(images, pids, camids, indices)`` of ``records`` (no shuffling,
    the last batch kept) through ``transform`` (e.g. ``build_test_transform(cfg)``)."""
    if batch_size < 1:
        raise ValueError(f"eval.batch_size: must be >= 1, got {batch_size}")
    n = resolve_workers(workers)
    return DataLoader(
        ImageDataset(records, reader, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=n,
        worker_init_fn=_seed_worker if n > 0 else None,
        pin_memory=pin_memory,
    )
