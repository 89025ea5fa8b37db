"""MOTChallenge text formats: parsing, errors naming file and line, clipping, writing."""

import numpy as np
import pytest

from abdnet.tracking import (
    MotRows,
    SequenceInfo,
    clip_rows,
    confidences_in_unit_range,
    read_mot,
    read_seqinfo,
    write_mot,
    write_seqinfo,
)


def test_detections_parse_with_and_without_confidence(tmp_path):
    p = tmp_path / "det.txt"
    p.write_text("1,-1,10,20,30,40,0.9,-1,-1,-1\n\n2,-1,11.5,21,30,40\n")
    rows = read_mot(p)
    assert rows.frames.tolist() == [1, 2]
    assert rows.ids.tolist() == [-1, -1]
    np.testing.assert_allclose(rows.boxes, [[10, 20, 30, 40], [11.5, 21, 30, 40]])
    np.testing.assert_allclose(rows.scores, [0.9, 1.0])
    assert rows.lines.tolist() == [1, 3]


@pytest.mark.parametrize(
    "row, field",
    [
        ("1,-1,10,20,30", "at least 6"),
        ("1,-1,10,abc,30,40,1", "y 'abc' is not a number"),
        ("0,-1,10,20,30,40,1", "frame '0'"),
        ("1,-1,10,20,-3,40,1", "width and height"),
        ("1,-1,10,20,30,nan,1", "not finite"),
    ],
)
def test_a_malformed_row_names_the_file_and_line(tmp_path, row, field):
    p = tmp_path / "det.txt"
    p.write_text("1,-1,10,20,30,40,0.9\n" + row + "\n")
    with pytest.raises(ValueError) as info:
        read_mot(p)
    msg = str(info.value)
    assert msg.startswith(f"{p}:2: ") and field in msg and "\n" not in msg


def test_an_empty_detection_file_has_no_rows(tmp_path):
    p = tmp_path / "det.txt"
    p.write_text("")
    assert len(read_mot(p)) == 0


def test_results_round_trip_in_the_result_format(tmp_path):
    rows = MotRows.from_arrays(
        frames=[2, 1, 1],
        ids=[5, 7, 5],
        boxes=[[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]],
        scores=[0.5, 1, 0.25],
    )
    p = write_mot(tmp_path / "cam.txt", rows)
    lines = p.read_text().splitlines()
    assert lines[0] == "1,5,9.00,10.00,11.00,12.00,0.25,-1,-1,-1"
    assert [line.split(",")[:2] for line in lines] == [["1", "5"], ["1", "7"], ["2", "5"]]
    back = read_mot(p)
    assert back.frames.tolist() == [1, 1, 2] and back.ids.tolist() == [5, 7, 5]


def test_boxes_outside_the_frame_are_clipped_and_counted():
    rows = MotRows.from_arrays(
        frames=[1, 1, 1, 2],
        ids=[-1] * 4,
        boxes=[[-10, 5, 30, 40], [10, 10, 20, 20], [200, 10, 20, 20], [90, 90, 20, 20]],
    )
    out, report = clip_rows(rows, width=100, height=100)
    assert report.clipped == 2 and report.dropped == 1 and report.first_line == 1
    np.testing.assert_allclose(out.boxes, [[0, 5, 20, 40], [10, 10, 20, 20], [90, 90, 10, 10]])
    assert "2 box(es) clipped" in report.message("det.txt")


def test_seqinfo_round_trip_and_errors(tmp_path):
    info = SequenceInfo("cam1", 25.0, 120, 640, 360)
    write_seqinfo(tmp_path / "seqinfo.ini", info)
    assert read_seqinfo(tmp_path) == info
    (tmp_path / "seqinfo.ini").write_text("[Sequence]\nframeRate=x\n")
    with pytest.raises(ValueError, match="frameRate = 'x' is not a number"):
        read_seqinfo(tmp_path)


def test_confidences_come_to_the_unit_range_only_when_they_are_off_it():
    def rows(scores):
        n = len(scores)
        return MotRows.from_arrays(
            frames=np.arange(1, n + 1), ids=-np.ones(n), boxes=np.ones((n, 4)), scores=scores
        )

    for fine in ([0.2, 0.9, 0.5], [0.0, 1.0], [0.7, 0.7], [1.0]):
        out, note = confidences_in_unit_range(rows(fine))
        assert note == "" and out.scores.tolist() == fine
    out, note = confidences_in_unit_range(rows([-1.0, -1.0, -1.0]))
    assert out.scores.tolist() == [1.0, 1.0, 1.0] and "confidence -1: taken as 1" in note
    out, note = confidences_in_unit_range(rows([0.0, 0.0]))
    assert out.scores.tolist() == [1.0, 1.0]
    out, note = confidences_in_unit_range(rows([-0.5, 1.5, 0.5, 3.5]))
    np.testing.assert_allclose(out.scores, [0.0, 0.5, 0.25, 1.0])
    assert "[-0.5, 3.5]" in note
    empty, note = confidences_in_unit_range(MotRows.empty())
    assert len(empty) == 0 and note == ""
