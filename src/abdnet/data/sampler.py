"""P x K identity-balanced sampling for the batch-hard triplet loss (paper: 16 ids x 4 images)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["RandomIdentitySampler"]


class RandomIdentitySampler(Sampler[int]):
    """Yields dataset indices in batches of ``P = batch_size // num_instances`` distinct
    identities x ``K = num_instances`` images each; use with ``DataLoader(batch_size=
    batch_size, drop_last=True)``.

    One epoch: each identity's images are shuffled and cut into groups of K (an identity
    with fewer than K images is resampled with replacement up to K; a last incomplete group
    is dropped); batches take one group from each of P randomly chosen identities that still
    have groups, until fewer than P remain. The order depends only on ``seed`` and the epoch
    set by ``set_epoch`` (call it every epoch).

    DDP: every rank builds the same global list of batches and takes every
    ``world_size``-th batch starting at ``rank`` (after trimming the list to a multiple of
    ``world_size``), so the shares are disjoint and equally long. ``batch_size`` is the
    per-process batch.
    """

    def __init__(
        self,
        pids: Sequence[int],
        batch_size: int,
        num_instances: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_instances < 1:
            raise ValueError(f"data.num_instances: must be >= 1, got {num_instances}")
        if batch_size < num_instances or batch_size % num_instances != 0:
            raise ValueError(
                f"data.batch_size={batch_size} must be a positive multiple of data.num_instances={num_instances} "
                "(a batch is P identities x K instances)"
            )
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"RandomIdentitySampler: need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        self.index_by_pid: dict[int, list[int]] = defaultdict(list)
        for i, pid in enumerate(pids):
            self.index_by_pid[int(pid)].append(i)
        self.batch_size, self.num_instances = batch_size, num_instances
        self.num_pids_per_batch = batch_size // num_instances
        if len(self.index_by_pid) < self.num_pids_per_batch:
            raise ValueError(
                f"RandomIdentitySampler: a batch needs P={self.num_pids_per_batch} identities "
                f"(batch_size {batch_size} / num_instances {num_instances}) but the data has only "
                f"{len(self.index_by_pid)}"
            )
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _global_batches(self) -> list[list[int]]:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, self.epoch])
        k = self.num_instances
        groups: dict[int, list[list[int]]] = {}
        for pid in sorted(self.index_by_pid):
            idx = np.array(self.index_by_pid[pid])
            if len(idx) < k:
                idx = rng.choice(idx, size=k, replace=True)
            else:
                idx = rng.permutation(idx)
            groups[pid] = [idx[j : j + k].tolist() for j in range(0, len(idx) - k + 1, k)]
        batches: list[list[int]] = []
        available = [pid for pid in sorted(groups) if groups[pid]]
        while len(available) >= self.num_pids_per_batch:
            chosen = rng.choice(len(available), size=self.num_pids_per_batch, replace=False)
            batch: list[int] = []
            for j in chosen:
                batch += groups[available[j]].pop()
            batches.append(batch)
            available = [pid for pid in available if groups[pid]]
        batches = batches[: len(batches) - len(batches) % self.world_size]
        if not batches:
            raise ValueError(
                f"RandomIdentitySampler: the data give fewer full P x K batches than world_size={self.world_size}"
            )
        self._cache = (self.epoch, batches)
        return batches

    def batches(self) -> list[list[int]]:
        """This rank's batches of the current epoch (lists of ``batch_size`` indices)."""
        return self._global_batches()[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches():
            yield from batch

    def __len__(self) -> int:
        return len(self.batches()) * self.batch_size
