"""The data of a training run: the data set, its training records, the validation split
carved from the training identities, and the loader of each epoch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from abdnet.config import Config
from abdnet.data import (
    ImageRecord,
    ReIDDataset,
    build_dataset,
    build_train_loader,
    caching_reader,
    split_validation,
)
from abdnet.engine import distributed as D

__all__ = ["TrainData"]


@dataclass
class TrainData:
    """The data set, its training records (validation identities removed) and the
    validation query/gallery carved from the training identities."""

    dataset: ReIDDataset
    train: list[ImageRecord]
    num_classes: int
    val_query: list[ImageRecord]
    val_gallery: list[ImageRecord]
    reader: Any  # record -> PIL image (cached for small sets)

    @classmethod
    def build(cls, cfg: Config, ctx: D.DistContext) -> TrainData:
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
