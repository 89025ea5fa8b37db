"""RandomIdentitySampler: P x K structure, determinism, DDP shares, small identities."""

from __future__ import annotations

from collections import Counter

import pytest

from abdnet.data import RandomIdentitySampler

# 12 identities with 2..13 images each (identity i has i + 2 images)
PIDS = [pid for pid in range(12) for _ in range(pid + 2)]


def check_pk(batches, pids, p, k):
    for batch in batches:
        counts = Counter(pids[i] for i in batch)
        assert len(batch) == p * k
        assert len(counts) == p and set(counts.values()) == {k}


def test_pk_structure_and_no_repeats_when_enough_images():
    s = RandomIdentitySampler(PIDS, batch_size=8, num_instances=4, seed=0)
    batches = s.batches()
    check_pk(batches, PIDS, p=2, k=4)
    flat = list(s)
    assert flat == [i for b in batches for i in b] and len(s) == len(flat)
    # identities with >= K images are never sampled twice in one epoch (no replacement)
    big = [i for i in flat if PIDS.count(PIDS[i]) >= 4]
    assert len(big) == len(set(big))
    # brute-force bound: each identity contributes at most floor(max(n, K) / K) groups
    per_pid = Counter(PIDS[i] for i in flat)
    for pid, n in Counter(PIDS).items():
        assert per_pid[pid] <= (max(n, 4) // 4) * 4


def test_identity_with_fewer_than_k_images_is_resampled():
    pids = [0, 0, 1, 1, 1, 1, 2]  # id 0: 2 images, id 2: 1 image, K = 4
    s = RandomIdentitySampler(pids, batch_size=12, num_instances=4, seed=1)
    (batch,) = s.batches()
    check_pk([batch], pids, p=3, k=4)
    assert [i for i in batch if pids[i] == 2] == [6, 6, 6, 6]
    assert {i for i in batch if pids[i] == 0} <= {0, 1}


def test_deterministic_from_seed_and_epoch():
    a = RandomIdentitySampler(PIDS, 8, 4, seed=5)
    b = RandomIdentitySampler(PIDS, 8, 4, seed=5)
    c = RandomIdentitySampler(PIDS, 8, 4, seed=6)
    assert list(a) == list(b)
    assert list(a) != list(c)
    first = list(a)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b) != first
    a.set_epoch(0)
    assert list(a) == first


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_shares_are_disjoint_equal_and_cover_the_trimmed_epoch(world_size):
    full = RandomIdentitySampler(PIDS, 8, 4, seed=2).batches()
    shares = [
        RandomIdentitySampler(PIDS, 8, 4, seed=2, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    lengths = {len(s) for s in shares}
    assert len(lengths) == 1 and lengths.pop() > 0
    batches = [tuple(b) for s in shares for b in s.batches()]
    assert len(batches) == len(set(batches))  # no batch on two ranks
    index_sets = [set(s) for s in shares]
    for i in range(world_size):
        for j in range(i + 1, world_size):
            assert not index_sets[i] & index_sets[j]
    kept = len(full) - len(full) % world_size
    assert sorted(batches) == sorted(tuple(b) for b in full[:kept])
    for s in shares:
        check_pk(s.batches(), PIDS, 2, 4)


def test_errors_are_clear():
    with pytest.raises(
        ValueError, match=r"batch_size=10 must be a positive multiple of data.num_instances=4"
    ):
        RandomIdentitySampler(PIDS, 10, 4)
    with pytest.raises(ValueError, match=r"needs P=4 identities .* only 3"):
        RandomIdentitySampler([0, 1, 2], 16, 4)
    with pytest.raises(ValueError, match="rank"):
        RandomIdentitySampler(PIDS, 8, 4, rank=2, world_size=2)
