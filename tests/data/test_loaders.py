"""ImageDataset and the loader builders on the tiny synthetic set."""

from __future__ import annotations

import os
from collections import Counter

import pytest
import torch

from abdnet.config import DataConfig, SyntheticConfig
from abdnet.data import (
    ImageDataset,
    build_test_loader,
    build_test_transform,
    build_train_loader,
    caching_reader,
    open_dataset,
    resolve_workers,
)

SYN = SyntheticConfig(ids=8, cams=2, per_id=4, height=32, width=16, seed=0)
CFG = DataConfig(height=32, width=16, batch_size=4, num_instances=2, workers=0)


@pytest.fixture(scope="module")
def ds():
    return open_dataset("synthetic", config=SYN)


def test_image_dataset_item(ds):
    item = ImageDataset(ds.query, ds.read_image, build_test_transform(CFG))[3]
    assert item[0].shape == (3, 32, 16)
    assert item[1:] == (ds.query[3].pid, ds.query[3].camid, 3)


def test_test_loader_keeps_order_and_last_batch(ds):
    loader = build_test_loader(ds.gallery, ds.read_image, build_test_transform(CFG), batch_size=5)
    seen = []
    for x, pid, camid, index in loader:
        assert x.shape[1:] == (3, 32, 16)
        seen += list(zip(index.tolist(), pid.tolist(), camid.tolist(), strict=True))
    assert seen == [(i, r.pid, r.camid) for i, r in enumerate(ds.gallery)]


def test_train_loader_pk_batches(ds):
    loader = build_train_loader(ds.train, ds.read_image, CFG, seed=0, epoch=0)
    batches = list(loader)
    assert len(batches) == len(loader) > 0
    for x, pid, _, index in batches:
        assert x.shape == (4, 3, 32, 16)
        assert sorted(Counter(pid.tolist()).values()) == [2, 2]
        assert pid.tolist() == [ds.train[i].pid for i in index.tolist()]


def test_train_loader_splits_the_global_batch_over_ranks(ds):
    cfg = DataConfig(height=32, width=16, batch_size=8, num_instances=2, workers=0)
    loaders = [
        build_train_loader(ds.train, ds.read_image, cfg, seed=0, epoch=0, rank=r, world_size=2)
        for r in range(2)
    ]
    assert len(loaders[0]) == len(loaders[1]) > 0
    seen = [set(ix for _, _, _, index in loader for ix in index.tolist()) for loader in loaders]
    assert not seen[0] & seen[1]
    for _, pid, _, _ in loaders[0]:
        assert len(pid) == 4 and sorted(Counter(pid.tolist()).values()) == [2, 2]
    with pytest.raises(ValueError, match=r"data.batch_size=6 must split into 2 process batches"):
        build_train_loader(
            ds.train,
            ds.read_image,
            DataConfig(batch_size=6, num_instances=2),
            seed=0,
            epoch=0,
            world_size=2,
        )


def test_train_loader_worker_seeding_is_deterministic(ds):
    cfg = DataConfig(height=32, width=16, batch_size=4, num_instances=2, workers=1)

    def first_batch(epoch):
        loader = build_train_loader(ds.train, ds.read_image, cfg, seed=7, epoch=epoch)
        x, pid, *_ = next(iter(loader))
        return x, pid

    a, b = first_batch(3), first_batch(3)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # an epoch's batches are a function of (seed, epoch), not of the epochs run before
    c = first_batch(4)
    assert not torch.equal(a[1], c[1]) or not torch.equal(a[0], c[0])


def test_caching_reader_decodes_each_small_set_image_once(ds):
    calls = []

    def reader(record):
        calls.append(record.path)
        return ds.read_image(record)

    cached = caching_reader(reader, len(ds.train))
    for _ in range(2):
        for r in ds.train[:5]:
            cached(r)
    assert len(calls) == 5
    assert caching_reader(reader, 10**6) is reader  # big sets are not held in memory


def test_resolve_workers():
    assert resolve_workers(0) == 0 and resolve_workers(3) == 3
    assert resolve_workers(-1) == max(0, min(8, (os.cpu_count() or 1) - 1))
    with pytest.raises(ValueError, match="data.workers"):
        resolve_workers(-2)
