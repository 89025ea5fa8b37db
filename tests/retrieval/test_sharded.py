"""abdnet extract under torchrun: 2 gloo processes write exactly the single-process file, and
a failing rank fails the whole run with nothing written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from abdnet.cli.main import main
from abdnet.engine import DistContext, shard

BAD = "9999_c1s1_000001_00.jpg"  # sorts last: in rank 1's share of 2


def test_shards_are_contiguous_cover_every_item_once_and_balance():
    for n in range(12):
        for world in range(1, 5):
            shares = [shard(n, DistContext(rank=r, world_size=world)) for r in range(world)]
            assert [i for s in shares for i in s] == list(range(n))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.fixture(scope="module")
def images(synth_root, tmp_path_factory) -> Path:
    """The synthetic gallery crops plus one file that is not an image, read by rank 1."""
    folder = tmp_path_factory.mktemp("sharded") / "images"
    shutil.copytree(synth_root / "bounding_box_test", folder)
    (folder / BAD).write_bytes(b"not a jpeg")
    return folder


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "abdnet.cli.main", "extract", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _load(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.slow
def test_torchrun_extract_equals_single_process(tiny_checkpoint, images, tmp_path, capsys):
    common = ["--checkpoint", str(tiny_checkpoint), "--images", str(images), "--skip-bad"]
    assert main(["extract", *common, "--out", str(tmp_path / "single.npz")]) == 0
    proc = _torchrun(*common, "--batch-size", "3", "--out", str(tmp_path / "multi.npz"))
    assert proc.returncode == 0, proc.stderr
    n = len(list(images.iterdir()))
    assert f"rank 0/2: {n // 2} images" in proc.stderr
    assert f"rank 1/2: {n - n // 2} images" in proc.stderr
    # rank 1 read the bad file; rank 0 reports it and the count, like one process does
    assert f"skipped {images / BAD}" in proc.stderr
    assert f"{n - 1} x 32 features, with pids/camids, skipped 1" in proc.stdout
    single, multi = _load(tmp_path / "single.npz"), _load(tmp_path / "multi.npz")
    assert sorted(multi) == sorted(single)
    for key in ("paths", "pids", "camids", "meta"):
        assert np.array_equal(multi[key], single[key]), key
    assert str(images / BAD) not in multi["paths"].tolist()
    np.testing.assert_allclose(multi["features"], single["features"], atol=1e-5, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multi.npz", "single.npz"]


@pytest.mark.slow
def test_torchrun_extract_fails_when_a_rank_fails(tiny_checkpoint, images, tmp_path):
    out = tmp_path / "feats.npz"
    proc = _torchrun(
        "--checkpoint", str(tiny_checkpoint), "--images", str(images), "--out", str(out)
    )
    assert proc.returncode != 0
    assert "rank(s) 1 of 2 failed" in proc.stderr and "nothing written" in proc.stderr
    assert f"{images / BAD}: cannot read image" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no output, no parts left behind
