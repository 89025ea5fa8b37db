"""Gap filling: boxes on the straight line between the two ends, only for short gaps away
from the frame border; worked out by hand."""

import numpy as np
import pytest

from abdnet.tracking.interpolate import fill_gaps, touches_border

SIZE = (640, 360)


def test_a_gap_is_filled_on_the_line_between_its_ends():
    frames = np.array([1, 2, 6])
    boxes = np.array([[100, 100, 140, 200], [104, 100, 144, 200], [120, 110, 160, 220]], float)
    scores = np.array([0.9, 0.8, 0.6])
    f, b, s, filled = fill_gaps(frames, boxes, scores, max_gap=5, frame_size=SIZE)
    assert f.tolist() == [1, 2, 3, 4, 5, 6]
    assert filled.tolist() == [False, False, True, True, True, False]
    # frame 3 is a quarter of the way from frame 2's box to frame 6's
    np.testing.assert_allclose(b[2], [108, 102.5, 148, 205])
    np.testing.assert_allclose(b[4], [116, 107.5, 156, 215])
    assert s[2:5].tolist() == [0.6, 0.6, 0.6]  # the smaller end score
    np.testing.assert_array_equal(b[[0, 1, 5]], boxes)


def test_long_gaps_and_gaps_at_the_border_stay_open():
    frames = np.array([1, 10, 12, 20])
    boxes = np.array(
        [[100, 100, 140, 200], [100, 100, 140, 200], [0, 100, 40, 200], [100, 100, 140, 200]],
        float,
    )
    f, _, _, filled = fill_gaps(frames, boxes, np.ones(4), max_gap=5, frame_size=SIZE)
    # 1 -> 10: 8 missing frames > 5; 10 -> 12 and 12 -> 20: frame 12's box touches x = 0
    assert f.tolist() == [1, 10, 12, 20] and not filled.any()
    f, _, _, filled = fill_gaps(frames, boxes, np.ones(4), max_gap=8, frame_size=SIZE)
    assert f.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 20]
    assert filled.sum() == 8


def test_off_and_bad_input():
    frames, boxes = np.array([1, 5]), np.array([[10, 10, 50, 90], [30, 10, 70, 90]], float)
    f, _, _, filled = fill_gaps(frames, boxes, np.ones(2), max_gap=0, frame_size=SIZE)
    assert f.tolist() == [1, 5] and not filled.any()
    with pytest.raises(ValueError, match="strictly increasing"):
        fill_gaps(np.array([3, 3]), boxes, np.ones(2), max_gap=4, frame_size=SIZE)
    with pytest.raises(ValueError, match="2 frames, 2 boxes, 3 scores"):
        fill_gaps(frames, boxes, np.ones(3), max_gap=4, frame_size=SIZE)
    assert touches_border(np.array([[1, 50, 30, 90], [5, 5, 600, 358.5]]), SIZE).tolist() == [
        True,
        True,
    ]
    assert not touches_border(np.array([[5, 5, 600, 350]]), SIZE).any()


def _camera(tracklets):
    from pathlib import Path

    from abdnet.tracking.pipeline import CameraInput, CameraTracks

    return CameraTracks(
        camera=CameraInput("cam1", Path("unused")),
        tracklets=tracklets,
        frames=40,
        frame_rate=10.0,
        size=SIZE,
        detections=0,
    )


def test_result_rows_fill_one_identitys_gap_between_its_stitched_tracklets():
    from abdnet.tracking.pipeline import Identities, result_rows
    from abdnet.tracking.tracklets import Tracklet

    def tracklet(track, frames, x):
        f = np.asarray(frames)
        boxes = np.array([[x + 2 * k, 100, x + 2 * k + 40, 200] for k in f], float)
        return Tracklet("cam1", track, f, boxes, np.full(f.size, 0.9), f / 10.0)

    # one person behind someone from frame 6 to 9 (two tracklets), another person alone
    cam = _camera([tracklet(1, [1, 2, 3, 4, 5], 100), tracklet(2, [10, 11], 100)])
    cam.tracklets.append(tracklet(3, [1, 2], 300))
    labels = {"cam1/1": 1, "cam1/2": 1, "cam1/3": 2}
    ids = Identities(labels, {}, 0.5, {}, fill_gap=0.5)  # 0.5 s at 10 frames/s: 5 frames
    rows = result_rows(cam, ids)
    one = np.flatnonzero(rows.ids == 1)
    assert sorted(rows.frames[one].tolist()) == list(range(1, 12))
    # the boxes keep walking on the straight line: x0 = 100 + 2 * frame
    order = one[np.argsort(rows.frames[one])]
    np.testing.assert_allclose(rows.boxes[order, 0], 100 + 2 * np.arange(1, 12))
    assert sorted(rows.frames[rows.ids == 2].tolist()) == [1, 2]
    # 0.3 s (3 frames) is shorter than the 4-frame gap: nothing is filled
    assert len(result_rows(cam, ids, fill_gap=0.3)) == 9
