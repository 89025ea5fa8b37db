"""Where and when: hits grouped by label with every entry of the label per camera in time
spans; the grouping on hand-made entries, and ``Gallery.sightings`` on a real gallery (a
Milvus Lite file and the Milvus server)."""

from __future__ import annotations

import dataclasses
import io
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from PIL import Image

from abdnet.gallery import (
    Enrolment,
    GalleryEntry,
    Hit,
    ModelInfo,
    SearchFilter,
    camera_spans,
    decode_crop,
    enrol_embedded,
    group_sightings,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
DIM = 8


def _entry(i: int, camera, seconds=None, frame=None, label=None) -> GalleryEntry:
    return GalleryEntry(
        id=f"{i:016x}",
        camera=camera,
        timestamp=None if seconds is None else T0 + timedelta(seconds=seconds),
        frame=frame,
        label=label,
        sha256=f"{i:064x}",
        extension="png",
        source=f"e{i}.png",
        enrolled=T0,
    )


def _hit(e: GalleryEntry, d: float) -> Hit:
    return Hit(entry=e, distance=d, score=1 - d / 2)


def test_one_span_per_camera_unless_a_gap_splits_it_and_untimed_sightings_apart():
    es = [
        _entry(1, 1, 10, 251),
        _entry(2, 1, 0, 1),
        _entry(3, 1, 100, 2501),
        _entry(4, 1, None, 7),
        _entry(5, 1, None, 3),
    ]
    (timed, untimed) = camera_spans(es)
    assert (timed.first, timed.last) == (T0, T0 + timedelta(seconds=100))
    assert (timed.first_frame, timed.last_frame, timed.sightings) == (1, 2501, 3)
    assert (untimed.first, untimed.last, untimed.first_frame, untimed.last_frame) == (
        None,
        None,
        3,
        7,
    )
    assert untimed.sightings == 2
    a, b, _ = camera_spans(es, gap=50)  # 0, 10 | 100
    assert (a.sightings, b.sightings) == (2, 1)
    assert (a.last, b.first) == (T0 + timedelta(seconds=10), T0 + timedelta(seconds=100))
    # a gap exactly equal to the distance does not split
    assert len(camera_spans(es[:2], gap=10)) == 1
    # a span with a sighting of unknown frame has no frame range
    (s,) = camera_spans([_entry(1, 2, 5, None), _entry(2, 2, 6, 9)])
    assert (s.first_frame, s.last_frame, s.sightings) == (None, None, 2)
    with pytest.raises(ValueError, match="gap"):
        camera_spans(es, gap=0)


def test_hits_are_grouped_by_label_with_all_their_entries_nearest_first():
    a = [_entry(i, 1 + i % 2, 10 * i, 25 * i, "run/1") for i in range(1, 6)]
    b = [_entry(10 + i, 2, 30 + i, None, "run/2") for i in range(3)]
    lone = _entry(99, None, None, None, None)
    hits = [_hit(b[0], 0.1), _hit(a[2], 0.2), _hit(lone, 0.3), _hit(b[1], 0.4)]
    groups = group_sightings(hits, a + b + [_entry(50, 1, 0, 0, "run/3")])
    assert [g.label for g in groups] == ["run/2", "run/1", None]
    g2, g1, g0 = groups
    assert [h.entry.id for h in g2.hits] == [b[0].id, b[1].id] and g2.distance == 0.1
    # every entry of the label, not only the hits: run/1 has 5, in cameras 1 and 2
    assert g1.sightings == 5 and [c.camera for c in g1.cameras] == [1, 2]
    cam1, cam2 = g1.cameras
    assert cam1.sightings == 2 and cam2.sightings == 3  # i = 2, 4 | 1, 3, 5
    (s1,) = cam1.spans
    assert (s1.first, s1.last) == (T0 + timedelta(seconds=20), T0 + timedelta(seconds=40))
    (s2,) = cam2.spans
    assert (s2.first_frame, s2.last_frame) == (25, 125)
    # an unlabelled hit is an identity of its own, its camera unknown
    assert g0.sightings == 1 and [c.camera for c in g0.cameras] == [None]
    assert g0.cameras[0].spans[0].first is None
    # a hit the entries lack is still counted (entries read under another filter)
    (only,) = group_sightings([_hit(a[0], 0.0)], [])
    assert only.sightings == 1 and only.label == "run/1"


def _model() -> ModelInfo:
    return ModelInfo(
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
    rng = np.random.default_rng(i)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (16, 8, 3), dtype=np.uint8)).save(buf, format="PNG")
    return decode_crop(buf.getvalue(), f"crop{i}.png")


def test_gallery_sightings_cover_every_entry_of_the_labels_under_the_filter(gallery_target):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((2, DIM))
    items = []
    truth = {}  # label -> camera -> seconds
    for i in range(12):
        person = i % 2
        label, camera, seconds = f"run/{person + 1}", 1 + (i // 2) % 3, 7 * i
        f = centres[person] + 0.05 * rng.standard_normal(DIM)
        f = (f / np.linalg.norm(f)).astype(np.float32)
        e = Enrolment(
            _crop(i), camera=camera, timestamp=T0 + timedelta(seconds=seconds), label=label
        )
        items.append((e, f))
        truth.setdefault(label, {}).setdefault(camera, []).append(seconds)
    with gallery_target.open(model=_model(), create=True) as g:
        report = enrol_embedded(g, items, model=_model(), commit_every=5)
        assert report.added == 12
        # the stored embeddings are those given (no second embedding)
        rows = {
            r["id"]: np.asarray(r["embedding"], np.float32)
            for r in g.get_rows(list(report.ids.values()))
        }
        for e, f in items:
            np.testing.assert_allclose(rows[report.ids[e.crop.name]], f, atol=1e-6)
        q = items[0][1][None]
        (hits,) = g.search(q, 1)
        (first,) = g.sightings(hits)
        assert first.label == "run/1" and first.sightings == 6 and first.complete
        got = {c.camera: c for c in first.cameras}
        assert set(got) == set(truth["run/1"])
        for cam, secs in truth["run/1"].items():
            (span,) = got[cam].spans
            assert span.first == T0 + timedelta(seconds=min(secs))
            assert span.last == T0 + timedelta(seconds=max(secs))
            assert got[cam].sightings == len(secs)
        # the query's filter applies to the sightings too
        filt = SearchFilter(exclude_camera=1, before=T0 + timedelta(seconds=50))
        (hits,) = g.search(q, 3, [filt])
        groups = g.sightings(hits, filter=filt)
        for s in groups:
            expect = {
                c: [t for t in secs if t <= 50]
                for c, secs in truth[s.label].items()
                if c != 1 and any(t <= 50 for t in secs)
            }
            assert {c.camera: c.sightings for c in s.cameras} == {
                c: len(v) for c, v in expect.items()
            }
        # another model's embeddings are refused, naming the gallery
        other = dataclasses.replace(_model(), fingerprint="0" * 64, weights="1" * 64)
        with pytest.raises(ValueError, match=f"gallery {g.uri}"):
            enrol_embedded(g, items[:1], model=other)
