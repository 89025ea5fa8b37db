"""The annotated video: decoded back with PyAV, it has the footage's frames and size, and
the pixels of the drawn boxes differ from the footage while the rest does not."""

import av
import numpy as np
import pytest

from abdnet.tracking import (
    CameraInput,
    Identities,
    identity_colour,
    track_camera,
    write_annotated_video,
)
from abdnet.tracking.annotate import video_codec
from abdnet.tracking.footage import FootageConfig, write_footage
from abdnet.tracking.pipeline import result_rows
from abdnet.tracking.video import open_source


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    cfg = FootageConfig(people=6, frames=60, width=200, height=120, seed=3)
    seq, _ = write_footage(tmp_path_factory.mktemp("annotate") / "root", cfg)
    cam = track_camera(CameraInput("cam1", seq), input_height=64)
    ids = Identities(
        labels={t.key: i + 1 for i, t in enumerate(cam.tracklets)},
        groups={},
        threshold=0.0,
        stitch_thresholds={},
    )
    return cam, ids


def _decode(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


def _outline(box, shape):
    """Mask of the 2-px outline of an ``x, y, w, h`` box (what draw_boxes strokes)."""
    x, y, w, h = (int(round(v)) for v in box)
    m = np.zeros(shape[:2], dtype=bool)
    m[y : y + h, x : x + w] = True
    m[y + 2 : y + h - 2, x + 2 : x + w - 2] = False
    return m


@pytest.mark.parametrize("codec", [None, "mpeg4"])
def test_the_annotated_video_has_the_footages_frames_with_boxes_drawn(tracked, tmp_path, codec):
    cam, ids = tracked
    assert cam.tracklets
    out = write_annotated_video(tmp_path / "cam1.mp4", cam, ids, codec=codec)
    assert not [p for p in tmp_path.iterdir() if p.name != "cam1.mp4"]  # no temporaries left
    frames = _decode(out)
    source = [f.image for f in open_source(cam.camera.path)]
    assert len(frames) == cam.frames == len(source)
    assert frames[0].shape == source[0].shape == (120, 200, 3)
    rows = result_rows(cam, ids)
    per_frame = rows.by_frame()
    checked = 0
    for k, (got, src) in enumerate(zip(frames, source), start=1):
        idx = per_frame.get(k)
        if idx is None:
            continue
        drawn = np.zeros(src.shape[:2], dtype=bool)
        for i in idx:
            drawn |= _outline(rows.boxes[i], src.shape)
        diff = np.abs(got.astype(np.int16) - src.astype(np.int16)).mean(axis=2)
        near = np.zeros_like(drawn)
        for i in idx:  # boxes and their labels, widened: compression smears them
            x, y, w, h = rows.boxes[i]
            near[max(0, int(y) - 16) : int(y + h) + 4, max(0, int(x) - 4) : int(x + w) + 4] = True
        assert diff[drawn].mean() > 20, k
        assert diff[~near].mean() < 8, k
        assert diff[drawn].mean() > 4 * diff[~near].mean(), k
        checked += 1
    assert checked >= 10


def test_an_odd_frame_size_is_padded_to_even(tmp_path):
    cfg = FootageConfig(people=2, frames=6, width=81, height=47, seed=1)
    seq, _ = write_footage(tmp_path / "root", cfg)
    cam = track_camera(CameraInput("c", seq), input_height=64)
    ids = Identities({t.key: 1 for t in cam.tracklets}, {}, 0.0, {})
    frames = _decode(write_annotated_video(tmp_path / "c.mp4", cam, ids))
    assert len(frames) == 6 and frames[0].shape == (48, 82, 3)


def test_identities_get_distinct_colours():
    colours = [identity_colour(i) for i in range(1, 21)]
    assert len(set(colours)) == 20
    a, b = np.asarray(colours[0]), np.asarray(colours[1])
    assert np.abs(a - b).sum() > 100  # neighbouring ids are far apart
    assert video_codec() in ("libx264", "mpeg4")
