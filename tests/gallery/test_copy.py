"""abdnet gallery copy: a Milvus Lite gallery moved to the Milvus server and an fsspec crop
store, verified, resumed after an interruption without duplicates, refused into a gallery of
another model."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from abdnet.cli.main import main
from abdnet.gallery import Enrolment, Gallery, ModelInfo, decode_crop
from abdnet.gallery.copy import copy_gallery

DIM = 8
MODEL = ModelInfo(
    fingerprint="f" * 64,
    weights="w" * 64,
    dim=DIM,
    height=64,
    width=32,
    mean=(0.5, 0.5, 0.5),
    std=(0.2, 0.2, 0.2),
    flip=False,
    source="test",
)


def _crop(i: int):
    img = Image.fromarray(np.random.default_rng(i).integers(0, 255, (16, 8, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return decode_crop(buf.getvalue(), f"crop{i}.png")


@pytest.fixture
def source(tmp_path):
    """30 entries in a Milvus Lite file, crops beside it."""
    x = np.random.default_rng(0).standard_normal((30, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    enrol = [Enrolment(crop=_crop(i), camera=1 + i % 3, label=f"p{i % 4}") for i in range(30)]
    with Gallery.open(tmp_path / "src.db", model=MODEL, create=True) as g:
        ids = [a.id for a in g.add(enrol, x)]
    return tmp_path / "src.db", dict(zip(ids, x)), {a: e.crop.data for a, e in zip(ids, enrol)}


def test_copy_lite_to_server_verified_and_resumable(source, milvus_server, tmp_path, capsys):
    src, feats, crops = source
    coll, to_crops = milvus_server.collection(), (tmp_path / "dst-crops").as_uri()
    dst = ["--to-collection", coll, "--to-crops", to_crops]

    # interrupted after its first batch of 10 rows
    with (
        Gallery.open(src) as s,
        Gallery.open(
            milvus_server.uri, model=MODEL, create=True, collection=coll, crops=to_crops
        ) as d,
    ):

        def stop(n: int) -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            copy_gallery(s, d, batch_size=10, progress=stop)
        assert d.count() == 10

    assert main(["gallery", "copy", str(src), milvus_server.uri, *dst, "--batch-size", "7"]) == 0
    out = capsys.readouterr().out
    assert "copied 20, already there 10" in out and "verified 30 entries" in out

    with Gallery.open(milvus_server.uri, collection=coll, crops=to_crops) as d:
        assert d.count() == 30 and d.model == MODEL
        rows = {r["id"]: r for r in d.get_rows(list(feats))}
        assert set(rows) == set(feats)
        for i, f in feats.items():  # bit-equal embeddings, the same crops
            assert np.asarray(rows[i]["embedding"], np.float32).tobytes() == f.tobytes()
            (entry,) = d.get([i])
            assert d.crop_bytes(entry) == crops[i]
        hits = d.search(np.stack([feats[i] for i in list(feats)[:3]]), 1)
        assert [h[0].entry.id for h in hits] == list(feats)[:3]

    # again: nothing to copy, nothing duplicated
    assert main(["gallery", "copy", str(src), milvus_server.uri, *dst]) == 0
    assert "copied 0, already there 30" in capsys.readouterr().out


def test_copy_into_another_models_gallery_is_refused(source, tmp_path, capsys):
    src, _, _ = source
    other = dataclasses.replace(MODEL, fingerprint="a" * 64, weights="b" * 64)
    with Gallery.open(tmp_path / "dst.db", model=other, create=True):
        pass
    assert main(["gallery", "copy", str(src), str(tmp_path / "dst.db")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dst.db" in err[0] and "other weights" in err[0]
    with Gallery.open(tmp_path / "dst.db") as d:
        assert d.count() == 0


def test_copy_server_to_server_verified(source, milvus_server, tmp_path, capsys):
    """Two collections on the one server, each with its own fsspec crop store: the copy is
    verified, and a crop altered in the copy's store afterwards fails the verification."""
    src, feats, crops = source
    a, b = milvus_server.collection(), milvus_server.collection()
    a_crops, b_crops = (tmp_path / "a-crops").as_uri(), (tmp_path / "b-crops").as_uri()
    with (
        Gallery.open(src) as s,
        Gallery.open(milvus_server.uri, model=MODEL, create=True, collection=a, crops=a_crops) as d,
    ):
        assert copy_gallery(s, d).verified == 30
    args = ["gallery", "copy", milvus_server.uri, milvus_server.uri, "--collection", a]
    args += ["--crops", a_crops, "--to-collection", b, "--to-crops", b_crops, "--batch-size", "8"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "copied 30, already there 0" in out and "verified 30 entries" in out

    with Gallery.open(milvus_server.uri, collection=b, crops=b_crops) as d:
        assert d.count() == 30 and d.model == MODEL
        rows = {r["id"]: r for r in d.get_rows(list(feats))}
        assert set(rows) == set(feats)
        for i, f in feats.items():
            assert np.asarray(rows[i]["embedding"], np.float32).tobytes() == f.tobytes()
            (entry,) = d.get([i])
            assert d.crop_bytes(entry) == crops[i]
        victim = rows[next(iter(feats))]
    with Gallery.open(milvus_server.uri, collection=a) as s:
        assert s.count() == 30  # the source is left as it was

    # the verification pass reads every crop back: an altered one is reported
    (path,) = (tmp_path / "b-crops").rglob(f"{victim['sha256']}.{victim['extension']}")
    path.write_bytes(b"not the crop")
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and victim["sha256"] in err[0]
