"""abdnet gallery add under torchrun: 2 gloo processes build exactly the gallery one process
builds, embed only what is not enrolled yet, and a failing rank fails the run with nothing
added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from abdnet.cli.main import main
from abdnet.gallery import Gallery
from abdnet.retrieval import FeatureExtractor, collect_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BAD = "9999_c1s1_000001_00.jpg"  # sorts last: in rank 1's share of 2
COPY = "0050_c1s1_000001_00.jpg"  # the bytes of another new image under another name


@pytest.fixture(scope="module")
def images(synth_root, tmp_path_factory) -> Path:
    """The synthetic gallery crops, one of them twice under two names, and one file that is
    not an image."""
    folder = tmp_path_factory.mktemp("sharded_enrol") / "images"
    shutil.copytree(synth_root / "bounding_box_test", folder)
    shutil.copyfile(sorted(folder.iterdir())[10], folder / COPY)
    (folder / BAD).write_bytes(b"not a jpeg")
    return folder


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "abdnet.cli.main", "gallery", "add", "--no-progress", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _entries(path: Path) -> dict[str, dict]:
    """Every entry of a gallery by id, without the time it was enrolled."""
    with Gallery.open(path) as g:
        items = g.page(limit=1000).items
    out = {}
    for e in items:
        d = e.to_dict()
        del d["enrolled"]
        out[e.id] = d
    return out


def _distances(path: Path, queries: np.ndarray) -> list[dict[str, float]]:
    """For each query, the distance to every entry, by id (exhaustive search)."""
    with Gallery.open(path) as g:
        hits = g.search(queries, g.size())
    return [{h.entry.id: h.distance for h in row} for row in hits]


def _first(images: Path, n: int) -> list[str]:
    return [str(p) for p in sorted(images.iterdir())[:n]]


@pytest.mark.slow
def test_torchrun_gallery_add_equals_single_process(tiny_checkpoint, images, tmp_path, capsys):
    single, multi = tmp_path / "single.db", tmp_path / "multi.db"
    model = ["--checkpoint", str(tiny_checkpoint)]
    # both galleries already hold the first 4 images: they are not embedded again
    for g in (single, multi):
        assert main(["gallery", "add", "--gallery", str(g), *model, "--images",
                     *_first(images, 4), "--no-progress"]) == 0  # fmt: skip
    add = [*model, "--images", str(images), "--skip-bad", "--label-from-name"]
    capsys.readouterr()
    assert main(["gallery", "add", "--gallery", str(single), *add, "--no-progress"]) == 1
    single_out = capsys.readouterr()
    proc = _torchrun("--gallery", str(multi), *add, "--batch-size", "3")
    # an unreadable image with --skip-bad: listed, and the run exits 1, like one process
    assert proc.returncode != 0, proc.stderr
    # only rank 0 exits 1 (it reports); rank 1 succeeded
    assert "<NO_OTHER_FAILURES>" in proc.stderr and "rank      : 0" in proc.stderr, proc.stderr
    files = len(list(images.iterdir()))
    new = files - 4 - 1  # the copy's bytes are enrolled once, from the first name
    assert f"rank 0/2: {new // 2} images" in proc.stderr
    assert f"rank 1/2: {new - new // 2} images" in proc.stderr
    assert f"skipped {images / BAD}" in proc.stderr
    summary = f"added {files - 4 - 2}, already enrolled 5, unreadable 1; {files - 2} entries"
    assert summary in single_out.out and summary in proc.stdout, (single_out.out, proc.stdout)

    ref, got = _entries(single), _entries(multi)
    assert len(got) == files - 2 and got == ref
    crops = {p.name for p in (tmp_path / "multi.crops").rglob("*") if p.is_file()}
    assert crops == {p.name for p in (tmp_path / "single.crops").rglob("*") if p.is_file()}
    assert len(crops) == files - 2
    good = collect_images([images])[:-1]
    assert good[-1] != str(images / BAD)
    queries = FeatureExtractor(tiny_checkpoint, device="cpu")(good).numpy()
    for a, b in zip(_distances(single, queries), _distances(multi, queries)):
        assert a.keys() == b.keys()
        np.testing.assert_allclose([b[k] for k in a], [a[k] for k in a], atol=1e-5, rtol=0)
    # each image is its own nearest entry at distance 0: the stored embeddings are its own
    for row in _distances(multi, queries):
        assert min(row.values()) < 1e-5


@pytest.mark.slow
def test_torchrun_gallery_add_fails_when_a_rank_fails(tiny_checkpoint, images, tmp_path, capsys):
    g = tmp_path / "g.db"
    model = ["--checkpoint", str(tiny_checkpoint)]
    assert main(["gallery", "add", "--gallery", str(g), *model, "--images",
                 *_first(images, 4), "--no-progress"]) == 0  # fmt: skip
    before = _entries(g)
    proc = _torchrun("--gallery", str(g), *model, "--images", str(images))
    assert proc.returncode != 0
    # rank 1 names the image it could not read; rank 0 names the failed rank
    assert f"{images / BAD}: cannot read the image" in proc.stderr, proc.stderr
    assert "rank(s) 1 of 2 failed" in proc.stderr and "nothing enrolled" in proc.stderr
    assert _entries(g) == before
    assert len(list((tmp_path / "g.crops").rglob("*.jpg"))) == 4
