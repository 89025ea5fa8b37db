"""Footage to identities on small synthetic footage: tracker, pipeline, outputs, bad input."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from abdnet.config import Config, DataConfig
from abdnet.retrieval import FeatureExtractor
from abdnet.tracking import (
    DEFAULT_TRACKER,
    CameraInput,
    Detections,
    RoboflowTracker,
    evaluate_tracking,
    identify,
    read_mot,
    track_camera,
    write_results,
)
from abdnet.tracking.footage import FootageConfig, plan_walks, write_footage

CFG = FootageConfig(people=6, frames=80, width=200, height=120, one_camera=0.34, seed=3)
COLOURS = np.array(
    [
        [230, 30, 30],
        [30, 200, 40],
        [40, 60, 230],
        [240, 220, 30],
        [200, 40, 220],
        [30, 210, 220],
        [250, 140, 20],
        [120, 120, 120],
    ],
    dtype=np.uint8,
)


def solid(pid, cam, k):
    """A person seen alike by every camera: one colour above, the next below."""
    img = np.empty((64, 24, 3), dtype=np.uint8)
    img[:32] = COLOURS[(pid - 1) % len(COLOURS)]
    img[32:] = COLOURS[pid % len(COLOURS)]
    return img


class Stripes(torch.nn.Module):
    """An embedding: the mean colour of six horizontal stripes, centred."""

    def forward(self, x):
        f = torch.stack([s.mean(dim=(2, 3)) for s in x.chunk(6, dim=2)], 1).flatten(1) - 0.4
        return SimpleNamespace(embedding=f)  # an abdnet network's output has .embedding


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    return write_footage(tmp_path_factory.mktemp("footage") / "root", CFG, appearance=solid)


@pytest.fixture(scope="module")
def extractor():
    return FeatureExtractor(Stripes(), config=Config(data=DataConfig(height=64, width=32)))


def test_a_tracker_keeps_one_id_per_person_in_a_known_scene():
    tracker = RoboflowTracker("bytetrack", frame_rate=25)
    starts = np.array([[10.0, 10, 30, 60], [100, 10, 120, 60], [200, 80, 220, 130]])
    seen: dict[int, set[int]] = {0: set(), 1: set(), 2: set()}
    for k in range(30):
        boxes = starts + np.array([2.0, 0.5, 2.0, 0.5]) * k * np.array([[1], [-1], [1]])
        out = tracker.update(Detections(boxes, np.full(3, 0.9)), None, time=k / 25)
        assert len(out) == (3 if k else 0)  # the library reports a track from its 2nd frame
        for tid, i in zip(out.ids.tolist(), out.index.tolist()):
            seen[i].add(tid)
    assert all(len(ids) == 1 for ids in seen.values())
    assert len(set.union(*seen.values())) == 3


def _track_fast_walker(tracker):
    """(track ids, frames reported) for a 19 px wide person moving 11 px a frame:
    consecutive boxes overlap by IoU 0.27."""
    ids, reported = set(), 0
    for k in range(20):
        box = np.array([[10.0 + 11 * k, 20, 29 + 11 * k, 70]])
        out = tracker.update(Detections(box, np.full(1, 0.9)), None, time=k / 25)
        ids |= set(out.ids.tolist())
        reported += len(out)
    return ids, reported


def test_sort_is_the_default_and_keeps_a_fast_walker_in_one_track():
    assert DEFAULT_TRACKER == "sort" and RoboflowTracker().name == "sort"
    ids, reported = _track_fast_walker(RoboflowTracker("sort", frame_rate=25))
    assert len(ids) == 1 and reported == 19  # every frame after the first
    # SORT's own IoU gate (0.3) loses the walker between frames: never one track
    strict = RoboflowTracker("sort", frame_rate=25, params={"minimum_iou_threshold": 0.3})
    ids, reported = _track_fast_walker(strict)
    assert reported < 10


def test_footage_plans_people_in_both_cameras_and_in_one():
    cams_of = {}
    for w in plan_walks(CFG):
        cams_of.setdefault(w.pid, set()).add(w.camera)
    assert any(len(c) == 2 for c in cams_of.values())
    assert any(len(c) == 1 for c in cams_of.values())


def _tracklet(camera, track, first, last, embedding, x):
    from abdnet.tracking import Tracklet

    frames = np.arange(first, last + 1)
    boxes = np.tile([x, 20.0, x + 20.0, 80.0], (len(frames), 1))
    e = np.asarray(embedding, dtype=np.float64)
    return Tracklet(camera, track, frames, boxes, np.ones(len(frames)), (frames - 1) / 25.0,
                    embedding=e / np.linalg.norm(e))  # fmt: skip


def test_a_camera_without_impostor_pairs_stitches_at_the_cameras_pooled_impostor_quantile(
    extractor,
):
    from pathlib import Path

    from abdnet.tracking import CameraTracks

    def cam(name, ts):
        return CameraTracks(CameraInput(name, Path(name)), ts, 200, 25.0, (320, 180), 0)

    axis = np.eye(8)
    # cam1: two look-alikes one after the other (2 - 2 cos = 0.33), never seen at once
    a = _tracklet("cam1", 1, 1, 50, axis[0] + 0.3 * axis[6], 10)
    b = _tracklet("cam1", 2, 60, 110, axis[0] - 0.3 * axis[6], 200)
    # cam2: five people at once, closer to each other than a and b are (0.118)
    crowd = [_tracklet("cam2", k, 1, 100, axis[0] + 0.25 * axis[k], 40 * k) for k in range(1, 6)]
    e = np.stack([t.embedding for t in crowd])
    pooled = np.sort((2 - 2 * e @ e.T)[np.triu_indices(5, 1)])[0]  # 10 pairs: the smallest
    ids = identify([cam("cam1", [a, b]), cam("cam2", crowd)], embedder=extractor,
                   threshold=1.0, far=1e-2)  # fmt: skip
    assert ids.stitch_thresholds["cam1"] == pytest.approx(pooled, abs=1e-6)
    assert ids.stitch_thresholds["cam2"] == pytest.approx(pooled, abs=1e-6)
    assert ids.groups[a.key] != ids.groups[b.key]
    # with no impostor evidence anywhere, the link threshold is all there is
    alone = identify([cam("cam1", [a, b]), cam("cam2", crowd[:1])], embedder=extractor,
                     threshold=1.0, far=1e-2)  # fmt: skip
    assert alone.stitch_thresholds["cam1"] == 1.0
    assert alone.groups[a.key] == alone.groups[b.key]
    # the calibration's stricter stitching point caps it too
    strict = identify([cam("cam1", [a, b]), cam("cam2", crowd[:1])], embedder=extractor,
                      threshold=1.0, stitch_threshold=0.3, far=1e-2)  # fmt: skip
    assert strict.stitch_thresholds["cam1"] == 0.3
    assert strict.groups[a.key] != strict.groups[b.key]


def test_photo_appearance_shows_each_person_by_their_own_camera_photos(tmp_path):
    from PIL import Image

    from abdnet.data.dataset import ImageRecord
    from abdnet.tracking.footage import photo_appearance

    def photo(name, value):
        path = tmp_path / name
        Image.fromarray(np.full((16, 8, 3), value, dtype=np.uint8)).save(path)
        return ImageRecord(str(path), *map(int, name[:-4].split("_")[:2]))

    # pid_camid_k.png; person 9 has photos of camera 1 only, junk (-1) is left out
    records = [
        photo("7_0_a.png", 10), photo("7_0_b.png", 20), photo("7_1_a.png", 30),
        photo("9_1_a.png", 40), photo("-1_0_a.png", 250),
    ]  # fmt: skip
    look, pids = photo_appearance(reversed(records))
    assert pids == [7, 9]
    assert [int(look(1, 0, k)[0, 0, 0]) for k in range(3)] == [10, 20, 10]
    assert int(look(1, 1, 5)[0, 0, 0]) == 30
    assert int(look(2, 0, 0)[0, 0, 0]) == 40  # no camera-0 photo: their first camera's
    assert look(2, 1, 0).shape == (16, 8, 3)
    with pytest.raises(ValueError, match="no records"):
        photo_appearance(records[-1:])


def test_footage_to_identities_links_cameras_and_scores_high(footage, extractor, tmp_path):
    tracks = [track_camera(CameraInput(c.name, c), input_height=64) for c in footage]
    ids = identify(tracks, embedder=extractor, threshold=0.05)
    out = tmp_path / "out"
    out.mkdir()
    write_results(out, tracks, ids)
    gt = {c.name: c / "gt" / "gt.txt" for c in footage}
    pred = {c.name: out / f"{c.name}.txt" for c in footage}
    score = evaluate_tracking(gt=gt, pred=pred)
    unlinked_ids = identify(tracks, embedder=extractor, threshold=0.05, link=False)
    for c in footage:
        (out / f"{c.name}.txt").unlink()
    write_results(out, tracks, unlinked_ids)
    unlinked = evaluate_tracking(gt=gt, pred=pred)
    assert score.multi_camera_idf1 > 0.8
    assert score.multi_camera_idf1 > unlinked.multi_camera_idf1 + 0.1
    doc = json.loads((out / "identities.json").read_text())
    assert doc["format"] == "abdnet-identities"
    assert (out / "contact_sheet.png").stat().st_size > 0
    # every tracklet's true person (by box overlap with the ground truth); an identity seen
    # by two cameras is one true person, and people of one camera only are never linked
    cams_of = {}
    for w in plan_walks(CFG):
        cams_of.setdefault(w.pid, set()).add(w.camera)
    people_of = {}
    for cam in tracks:
        g = read_mot(gt[cam.camera.name])
        for t in cam.tracklets:
            people_of.setdefault(ids.labels[t.key], set()).add(_true_person(t, g))
    spanning = [p for p, t_keys in _cameras_of(ids).items() if len(t_keys) > 1]
    assert spanning
    for p in spanning:
        assert len(people_of[p]) == 1
        assert len(cams_of[next(iter(people_of[p]))]) == 2


def _cameras_of(ids):
    out = {}
    for key, p in ids.labels.items():
        out.setdefault(p, set()).add(key.split("/")[0])
    return out


def _true_person(t, g):
    votes = {}
    for f, b in zip(t.frames, t.boxes):
        rows = np.flatnonzero(g.frames == f)
        if not rows.size:
            continue
        gb = g.boxes[rows]
        x0 = np.maximum(b[0], gb[:, 0])
        x1 = np.minimum(b[2], gb[:, 0] + gb[:, 2])
        y0 = np.maximum(b[1], gb[:, 1])
        y1 = np.minimum(b[3], gb[:, 1] + gb[:, 3])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        union = (b[2] - b[0]) * (b[3] - b[1]) + gb[:, 2] * gb[:, 3] - inter
        best = int(np.argmax(inter / union))
        votes[int(g.ids[rows[best]])] = votes.get(int(g.ids[rows[best]]), 0) + 1
    return max(votes, key=votes.get)


def test_outputs_parse_as_motchallenge_results(footage, extractor, tmp_path):
    tracks = [track_camera(CameraInput(c.name, c), input_height=64) for c in footage[:1]]
    write_results(tmp_path, tracks, identify(tracks, embedder=extractor, threshold=0.05))
    for line in (tmp_path / "cam1.txt").read_text().splitlines():
        f = line.split(",")
        assert len(f) == 10 and f[7:] == ["-1", "-1", "-1"]
        assert int(f[0]) >= 1 and int(f[1]) >= 1 and float(f[4]) > 0 and float(f[5]) > 0


def test_a_camera_without_detections_gives_an_empty_output(footage, extractor, tmp_path):
    empty = tmp_path / "det.txt"
    empty.write_text("")
    cam = track_camera(CameraInput("quiet", footage[0], empty), input_height=64)
    assert cam.tracklets == [] and cam.frames == CFG.frames
    ids = identify([cam], embedder=extractor, threshold=0.05)
    write_results(tmp_path, [cam], ids)
    assert (tmp_path / "quiet.txt").read_text() == ""


def test_detections_past_the_last_frame_are_counted(footage, tmp_path, caplog):
    det = tmp_path / "det.txt"
    det.write_text(f"{CFG.frames + 5},-1,10,10,20,40,0.9\n")
    cam = track_camera(CameraInput("c", footage[0], det), input_height=64)
    assert cam.past_end == 1
    assert "frames that" in caplog.text


def test_a_detection_file_without_scores_is_tracked_as_if_every_score_were_one(
    footage, tmp_path, caplog
):
    rows = (footage[0] / "det" / "det.txt").read_text().splitlines()
    det = tmp_path / "det.txt"
    det.write_text(
        "".join(",".join(r.split(",")[:6] + ["-1", "-1", "-1", "-1"]) + "\n" for r in rows)
    )
    ones = tmp_path / "ones.txt"
    ones.write_text("".join(",".join(r.split(",")[:6] + ["1"]) + "\n" for r in rows))
    got = track_camera(CameraInput("c", footage[0], det), input_height=64)
    assert "every detection has confidence -1: taken as 1" in caplog.text
    want = track_camera(CameraInput("c", footage[0], ones), input_height=64)
    assert len(got.tracklets) == len(want.tracklets) > 0
    for a, b in zip(got.tracklets, want.tracklets):
        np.testing.assert_array_equal(a.frames, b.frames)
        assert len(a.crops) == len(b.crops) > 0


def _video(path, frames=30):
    import av

    with av.open(str(path), "w") as out:
        s = out.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for k in range(frames):
            img = np.full((48, 64, 3), (k * 8) % 255, dtype=np.uint8)
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    return path


def test_a_video_is_decoded_by_pyav_and_tracked(tmp_path):
    video = _video(tmp_path / "cam.mp4")
    det = tmp_path / "det.txt"
    det.write_text("".join(f"{k},-1,{5 + k},10,10,20,0.9\n" for k in range(1, 31)))
    cam = track_camera(CameraInput("v", video, det), input_height=64)
    assert cam.frames == 30 and cam.size == (64, 48)
    assert len(cam.tracklets) == 1 and len(cam.tracklets[0]) == 30


def test_a_truncated_video_is_a_one_line_error(tmp_path):
    video = _video(tmp_path / "cam.mp4")
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 3])
    det = tmp_path / "det.txt"
    det.write_text("1,-1,5,10,10,20,0.9\n")
    with pytest.raises(ValueError) as info:
        track_camera(CameraInput("v", video, det), input_height=64)
    assert str(info.value).startswith(str(video)) and "\n" not in str(info.value)


def test_a_video_needs_its_detections(tmp_path):
    video = _video(tmp_path / "cam.mp4", frames=3)
    with pytest.raises(ValueError, match="--detections v=det.txt"):
        track_camera(CameraInput("v", video), input_height=64)
