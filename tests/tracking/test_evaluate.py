"""Tracking metrics on small cases worked out by hand."""

import pytest

from abdnet.tracking import evaluate_tracking


def _write(path, rows):
    path.write_text("".join(f"{f},{i},{x},10,20,40,1,1,1\n" for f, i, x in rows))
    return path


A, B = 10, 100  # x of person A and person B (far apart: IoU 0)


def _gt(path, frames=4):
    return _write(path, [(f, p, x) for f in range(1, frames + 1) for p, x in ((1, A), (2, B))])


def test_perfect_tracking_scores_one(tmp_path):
    gt = _gt(tmp_path / "gt.txt")
    pred = _write(
        tmp_path / "cam.txt", [(f, 7 if x == A else 9, x) for f in range(1, 5) for x in (A, B)]
    )
    s = evaluate_tracking(gt={"cam": gt}, pred={"cam": pred})
    c = s.cameras[0]
    assert (c.idf1, c.mota, c.id_switches) == (1.0, 1.0, 0)
    assert c.hota == pytest.approx(1.0)
    assert s.multi_camera_idf1 == 1.0


def test_a_swap_halfway_halves_idf1(tmp_path):
    # ids swap after frame 2: each true person gets 2 of 4 boxes under its best id
    # IDTP = 4 of 8, IDF1 = 2*4 / (8 + 8) = 0.5; MOTA = 1 - 2 switches / 8 = 0.75
    gt = _gt(tmp_path / "gt.txt")
    rows = [
        (f, (1 if x == A else 2) if f <= 2 else (2 if x == A else 1), x)
        for f in range(1, 5)
        for x in (A, B)
    ]
    pred = _write(tmp_path / "cam.txt", rows)
    c = evaluate_tracking(gt={"cam": gt}, pred={"cam": pred}).cameras[0]
    assert c.idf1 == pytest.approx(0.5)
    assert c.mota == pytest.approx(0.75) and c.id_switches == 2


def test_multi_camera_idf1_counts_a_person_split_across_cameras(tmp_path):
    # one person, 4 boxes per camera, tracked perfectly in each camera but with id 1 in cam1
    # and id 2 in cam2: per camera IDF1 1; over both cameras the person matches one id,
    # IDTP 4, IDFN 4, IDFP 4 -> IDF1 = 8 / 16 = 0.5
    g1 = _write(tmp_path / "g1.txt", [(f, 5, A) for f in range(1, 5)])
    g2 = _write(tmp_path / "g2.txt", [(f, 5, A) for f in range(1, 5)])
    p1 = _write(tmp_path / "cam1.txt", [(f, 1, A) for f in range(1, 5)])
    p2 = _write(tmp_path / "cam2.txt", [(f, 2, A) for f in range(1, 5)])
    s = evaluate_tracking(gt={"cam1": g1, "cam2": g2}, pred={"cam1": p1, "cam2": p2})
    assert [c.idf1 for c in s.cameras] == [1.0, 1.0]
    assert s.multi_camera_idf1 == pytest.approx(0.5)
    same = _write(tmp_path / "cam2.txt", [(f, 1, A) for f in range(1, 5)])
    s = evaluate_tracking(gt={"cam1": g1, "cam2": g2}, pred={"cam1": p1, "cam2": same})
    assert s.multi_camera_idf1 == 1.0


def test_an_empty_result_scores_zero_and_cameras_must_match(tmp_path):
    gt = _gt(tmp_path / "gt.txt")
    empty = tmp_path / "cam.txt"
    empty.write_text("")
    c = evaluate_tracking(gt={"cam": gt}, pred={"cam": empty}).cameras[0]
    assert (c.idf1, c.mota, c.gt_boxes, c.pred_boxes) == (0.0, 0.0, 8, 0)
    with pytest.raises(ValueError, match="cameras differ"):
        evaluate_tracking(gt={"cam": gt}, pred={"other": empty})
