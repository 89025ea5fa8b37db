"""The Milvus gallery, each test on a Milvus Lite file and on a real Milvus server: add,
search, filters, paging, delete, persistence, model checks; one process at a time (Lite)."""

from __future__ import annotations

import dataclasses
import io
import logging
import socket
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from PIL import Image

from abdnet.gallery import (
    CropImage,
    Enrolment,
    Gallery,
    GalleryError,
    ModelInfo,
    ModelMismatchError,
    SearchFilter,
    decode_crop,
)

DIM = 8
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def _model(**changes) -> ModelInfo:
    info = ModelInfo(
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
    return dataclasses.replace(info, **changes)


def _crop(i: int) -> CropImage:
    rng = np.random.default_rng(i)
    img = Image.fromarray(rng.integers(0, 255, (16, 8, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return decode_crop(buf.getvalue(), f"crop{i}.png")


def _unit(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def filled(gallery_target):
    """40 entries: cameras 1..4, times T0 + i minutes for even i, frames 100 i for i % 4 == 1,
    labels p0..p4 for i % 3 == 0."""
    n = 40
    feats = _unit(n)
    enrol = [
        Enrolment(
            crop=_crop(i),
            camera=i % 4 + 1,
            timestamp=T0 + timedelta(minutes=i) if i % 2 == 0 else None,
            frame=100 * i if i % 4 == 1 else None,
            label=f'p"{i % 5}' if i % 3 == 0 else None,
        )
        for i in range(n)
    ]
    g = gallery_target.open(model=_model(), create=True)
    added = g.add(enrol, feats)
    yield g, enrol, feats, [a.id for a in added]
    g.close()


def _brute(q, feats, mask, k):
    d = ((q[None, :] - feats) ** 2).sum(1)
    d = np.where(mask, d, np.inf)
    order = np.argsort(d, kind="stable")[:k]
    return [int(i) for i in order if np.isfinite(d[i])], d


def test_search_equals_brute_force_with_filters(filled):
    g, enrol, feats, ids = filled
    q = _unit(3, seed=9)
    cams = np.array([e.camera for e in enrol])
    times = [e.timestamp for e in enrol]
    labels = [e.label for e in enrol]
    after, before = T0 + timedelta(minutes=6), T0 + timedelta(minutes=30)
    cases = [
        (SearchFilter(), np.ones(40, bool)),
        (SearchFilter(exclude_camera=1), cams != 1),
        (
            SearchFilter(after=after, before=before),
            np.array([t is not None and after <= t <= before for t in times]),
        ),
        (SearchFilter(before=before), np.array([t is not None and t <= before for t in times])),
        (SearchFilter(label='p"0'), np.array([lab == 'p"0' for lab in labels])),
    ]
    for filt, mask in cases:
        hits = g.search(q, 10, [filt] * 3)
        for qi in range(3):
            expect, d = _brute(q[qi], feats, mask, 10)
            assert [h.entry.id for h in hits[qi]] == [ids[i] for i in expect], filt
            np.testing.assert_allclose([h.distance for h in hits[qi]], d[expect], atol=1e-5)
            np.testing.assert_allclose(
                [h.score for h in hits[qi]], feats[expect] @ q[qi], atol=1e-5
            )


def test_mixed_filters_in_one_call(filled):
    g, enrol, feats, ids = filled
    q = _unit(4, seed=3)
    filters = [SearchFilter(exclude_camera=c) for c in (1, 2, 1, None)]
    hits = g.search(q, 5, filters)
    for qi, f in enumerate(filters):
        single = g.search(q[qi : qi + 1], 5, [f])[0]
        assert [h.entry.id for h in hits[qi]] == [h.entry.id for h in single]


def test_a_crowding_camera_falls_back_to_filtering_in_milvus(gallery_target):
    # 60 entries of camera 1 right around the query, 10 of camera 2 far away: the shared
    # unfiltered call (2k + 16 = 36 nearest) holds no camera-2 entry at all.
    q = _unit(1, seed=5)
    near = q + 0.05 * _unit(60, seed=6)
    far = -q + 0.05 * _unit(10, seed=7)
    feats = np.concatenate([near, far]).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    cams = [1] * 60 + [2] * 10
    with gallery_target.open(model=_model(), create=True) as g:
        added = g.add([Enrolment(_crop(i), camera=c) for i, c in enumerate(cams)], feats)
        ids = [a.id for a in added]
        both = g.search(
            np.concatenate([q, q]), 10, [SearchFilter(exclude_camera=1), SearchFilter()]
        )
        expect, _ = _brute(q[0], feats, np.array(cams) != 1, 10)
        assert [h.entry.id for h in both[0]] == [ids[i] for i in expect]
        expect_all, _ = _brute(q[0], feats, np.ones(70, bool), 10)
        assert [h.entry.id for h in both[1]] == [ids[i] for i in expect_all]


def test_entries_round_trip(filled):
    g, enrol, _, ids = filled
    (e,) = g.get([ids[2]])
    assert (e.camera, e.timestamp, e.frame, e.label) == (3, T0 + timedelta(minutes=2), None, None)
    assert e.sha256 == enrol[2].crop.sha256 and e.source == "crop2.png"
    (e3,) = g.get([ids[3]])
    assert e3.timestamp is None and e3.label == 'p"3'
    (e5,) = g.get([ids[5]])  # a frame and no time: the JSON shows the frame, no date
    assert (e5.camera, e5.frame, e5.timestamp) == (2, 500, None)
    assert e5.to_dict()["frame"] == 500 and e5.to_dict()["timestamp"] is None
    assert g.get(["0" * 16, "not-an-id"]) == []
    path = g.crop_path(e)
    assert path is not None and path.read_bytes() == enrol[2].crop.data


def test_adding_again_changes_nothing(filled):
    g, enrol, feats, ids = filled
    again = g.add(enrol[:5], feats[:5] * -1)  # other embeddings: still skipped by content
    assert [a.id for a in again] == ids[:5] and not any(a.created for a in again)
    assert g.size() == 40
    assert g.find([enrol[0].crop.sha256, "0" * 64]) == {enrol[0].crop.sha256: ids[0]}


def test_a_forged_id_collision_is_refused(filled):
    g, enrol, feats, ids = filled
    c = enrol[0].crop
    forged = dataclasses.replace(c, sha256=c.sha256[:16] + "0" * 48, data=b"x")
    with pytest.raises(GalleryError, match="other bytes"):
        g.add([Enrolment(crop=forged)], feats[:1])


def test_paging_covers_everything_once(filled):
    g, enrol, _, ids = filled
    seen = []
    for off in range(0, 40, 7):
        page = g.page(offset=off, limit=7)
        assert page.total == 40
        seen += [e.id for e in page.items]
    assert sorted(seen) == sorted(ids)
    cam2 = g.page(camera=2, limit=100)
    assert cam2.total == 10 and {e.camera for e in cam2.items} == {2}
    assert g.page(camera=0, limit=100).total == 0  # no camera 0: they count from 1
    assert g.page(label='p"0', limit=100).total == sum(e.label == 'p"0' for e in enrol)
    assert g.page(offset=40, limit=5).items == []


def test_delete_removes_entry_and_crop(filled):
    g, enrol, feats, ids = filled
    path = g.crop_path(g.get([ids[0]])[0])
    assert g.delete([ids[0], "0" * 16]) == [ids[0]]
    assert g.size() == 39 and g.get([ids[0]]) == [] and not path.exists()
    hits = g.search(feats[:1], 40)[0]
    assert ids[0] not in [h.entry.id for h in hits]


def test_reopen_keeps_entries_and_checks_the_model(gallery_target, tmp_path):
    with gallery_target.open(model=_model(), create=True) as g:
        g.add([Enrolment(crop=_crop(1))], _unit(1))
    with gallery_target.open() as g:  # no model: read-only use
        assert g.size() == 1 and g.model == _model()
    with pytest.raises(ModelMismatchError, match="other weights"):
        gallery_target.open(model=_model(fingerprint="a" * 64, weights="b" * 64))
    with pytest.raises(ModelMismatchError, match="flip averaging on"):
        gallery_target.open(model=_model(fingerprint="c" * 64, flip=True))
    if gallery_target.kind == "server":
        with pytest.raises(GalleryError, match=f"{gallery_target.uri}: has no collection"):
            Gallery.open(gallery_target.uri, collection="nothing_here")
        return
    with pytest.raises(GalleryError, match="not found"):
        Gallery.open(tmp_path / "other.db")
    with pytest.raises(GalleryError, match="PATH.db|ending in .db"):
        Gallery.open(tmp_path / "x.sqlite", model=_model(), create=True)


def test_wrong_dimension_is_an_error(filled):
    g = filled[0]
    with pytest.raises(ValueError, match="8-d"):
        g.search(np.zeros((1, 5), np.float32), 3)


def test_one_process_at_a_time(tmp_path):
    # The folder lock is an OS file lock: a second open conflicts even in the same process.
    uri = tmp_path / "g.db"
    with Gallery.open(uri, model=_model(), create=True):
        with pytest.raises(GalleryError, match=r"g\.db: in use by another abdnet process"):
            Gallery.open(uri)
    with Gallery.open(uri) as g:  # released on close
        assert g.size() == 0


def test_index_choice_is_checked(tmp_path):
    # HNSW needs a Milvus server: the embedded engine (Milvus Lite 2.5, the C++ engine of the
    # servers) keeps exact FLAT search only, and says so instead of degrading silently
    with pytest.raises(GalleryError, match="HNSW.*local mode only support FLAT"):
        Gallery.open(tmp_path / "g.db", model=_model(), create=True, index="hnsw")
    with pytest.raises(GalleryError, match="index 'ivf'"):
        Gallery.open(tmp_path / "h.db", model=_model(), create=True, index="ivf")


def test_cameras_count_from_one(tmp_path):
    with Gallery.open(tmp_path / "g.db", model=_model(), create=True) as g:
        with pytest.raises(ValueError, match=r"crop0.png: camera must be >= 1 .*got 0"):
            g.add([Enrolment(_crop(0), camera=0)], _unit(1))
        assert g.size() == 0
        (added,) = g.add([Enrolment(_crop(0), camera=1, frame=0)], _unit(1))
        (e,) = g.get([added.id])
        assert (e.camera, e.frame, e.timestamp) == (1, 0, None)


def test_a_format_1_gallery_is_refused_with_what_to_do(tmp_path, monkeypatch):
    import abdnet.gallery.collection as gallery_module

    monkeypatch.setattr(gallery_module, "_VERSION", 1)  # as an older abdnet wrote it
    Gallery.open(tmp_path / "old.db", model=_model(), create=True).close()
    monkeypatch.undo()
    with pytest.raises(GalleryError, match=r"old.db: gallery format 1 .*enrol the crops again"):
        Gallery.open(tmp_path / "old.db", model=_model())


def test_an_unreachable_server_is_one_error_naming_it(caplog):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(GalleryError, match=f"gallery {uri}: cannot connect to Milvus within 2 s"):
        Gallery.open(uri, timeout=2)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
