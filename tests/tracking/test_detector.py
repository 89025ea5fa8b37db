"""Person detectors: torchvision models (random weights, weights through abdnet.hub from a
local HTTP server), the optional ultralytics import, and detections fed to the tracker."""

import hashlib
import importlib.util
import io

import numpy as np
import pytest
import torch

from abdnet.hub import SourceError
from abdnet.tracking import (
    CameraInput,
    Detections,
    TorchvisionDetector,
    build_detector,
    read_mot,
    track_camera,
)
from abdnet.tracking.detector import torchvision_model
from abdnet.tracking.footage import FootageConfig, write_footage

NAME = "ssdlite320_mobilenet_v3_large"


def _frames(n=3, h=60, w=80, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def random_model():
    torch.manual_seed(0)
    return torchvision_model(NAME, score_threshold=0.0).eval()


def _state_bytes(model) -> bytes:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def test_a_torchvision_detector_keeps_the_person_label_and_the_score_cut(random_model):
    frames = _frames()
    with torch.no_grad():
        ref = random_model([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames])
    # random weights: take the label the model names most as "the person", so the filter
    # has boxes to keep and boxes to drop
    label = int(np.bincount(ref[0]["labels"].numpy()).argmax())
    cut = float(np.median(ref[0]["scores"].numpy()))
    det = TorchvisionDetector(random_model, score_threshold=cut, person_label=label, batch_size=2)
    got = det.detect(frames)
    assert len(got) == len(frames) and all(isinstance(d, Detections) for d in got)
    for d, r in zip(got, ref):
        keep = (r["labels"].numpy() == label) & (r["scores"].numpy() >= cut)
        assert 0 < keep.sum() < len(keep)
        np.testing.assert_allclose(d.boxes, r["boxes"].numpy()[keep], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(d.scores, r["scores"].numpy()[keep], rtol=1e-6)
        assert (d.boxes[:, 0] >= 0).all() and (d.boxes[:, 2] <= 80 + 1e-3).all()
    assert det.detect([]) == []


def test_weights_come_through_the_hub_cache_from_a_url(random_model, file_server, tmp_path):
    data = _state_bytes(random_model)
    digest = hashlib.sha256(data).hexdigest()
    file_server.put(f"/models/{NAME}-{digest[:8]}.pth", data)
    url = file_server.url(f"/models/{NAME}-{digest[:8]}.pth")
    det = build_detector(NAME, weights=f"{url}#sha256={digest}", cache_dir=tmp_path, progress=False)
    for k, v in random_model.state_dict().items():
        assert torch.equal(det.model.state_dict()[k], v), k
    assert list((tmp_path / "downloads").rglob(f"{NAME}-{digest[:8]}.pth"))
    # a second build is served by the cache: the server is not asked for the body again
    build_detector(NAME, weights=f"{url}#sha256={digest}", cache_dir=tmp_path, progress=False)
    assert file_server.bodies[f"/models/{NAME}-{digest[:8]}.pth"] == 1


def test_a_file_whose_name_hash_does_not_match_is_refused(random_model, file_server, tmp_path):
    file_server.put(f"/{NAME}-deadbeef.pth", _state_bytes(random_model))
    with pytest.raises(SourceError, match="deadbeef"):
        build_detector(NAME, weights=file_server.url(f"/{NAME}-deadbeef.pth"), cache_dir=tmp_path)


def test_default_weights_are_torchvisions_url_through_the_cache(tmp_path):
    # offline with an empty cache: the default spec is a URL the hub would download
    with pytest.raises(SourceError, match="offline"):
        build_detector(NAME, cache_dir=tmp_path, offline=True)


def test_weights_of_another_model_are_a_one_line_error(tmp_path):
    other = tmp_path / "other.pth"
    torch.save({"w": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="not weights of") as e:
        build_detector(NAME, weights=other)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="expected one of"):
        build_detector("resnet50", weights=other)


@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is not None, reason="installed")
def test_yolo_without_ultralytics_says_how_to_install_it():
    with pytest.raises(ValueError, match="pip install ultralytics"):
        build_detector("yolo", weights="yolo11n.pt")


class GroundTruthDetector:
    """A Detector reading the footage's own ground truth, frame by frame in call order
    (a detector whose answer is known); it records the batch sizes it was given."""

    def __init__(self, gt_path, batch_size):
        self.rows = read_mot(gt_path)
        self.per_frame = self.rows.by_frame()
        self.batch_size = batch_size
        self.next_frame = 1
        self.batches = []

    def detect(self, images):
        self.batches.append(len(images))
        out = []
        for _ in images:
            idx = self.per_frame.get(self.next_frame, np.zeros(0, dtype=np.int64))
            xywh = self.rows.boxes[idx]
            out.append(Detections(np.c_[xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], np.ones(len(idx))))
            self.next_frame += 1
        return out


def test_detector_boxes_reach_the_tracker_in_batches_like_a_file(tmp_path):
    cfg = FootageConfig(people=3, frames=23, width=160, height=100, seed=2)
    seq, _ = write_footage(tmp_path / "root", cfg)
    gt = seq / "gt" / "gt.txt"
    detector = GroundTruthDetector(gt, batch_size=5)
    by_detector = track_camera(
        CameraInput("c", seq), input_height=64, detector=detector, detector_name="gt"
    )
    # the same boxes given as a detections file (the gt rows with conf 1)
    det = tmp_path / "det.txt"
    rows = read_mot(gt)
    det.write_text(
        "".join(f"{f},-1,{x},{y},{w},{h},1\n" for f, (x, y, w, h) in zip(rows.frames, rows.boxes))
    )
    by_file = track_camera(CameraInput("c", seq, det), input_height=64)
    assert detector.batches == [5, 5, 5, 5, 3]
    assert by_detector.detector == "gt" and by_file.detector == ""
    assert by_detector.detections == by_file.detections == len(rows)
    assert [(t.track, t.frames.tolist()) for t in by_detector.tracklets] == [
        (t.track, t.frames.tolist()) for t in by_file.tracklets
    ]
    for a, b in zip(by_detector.tracklets, by_file.tracklets):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-6)
    assert set(by_detector.timings) == {"decode", "detect", "track", "crops"}
    assert by_file.timings["detect"] == 0.0


def test_a_real_detector_runs_in_the_pipeline(random_model, tmp_path):
    cfg = FootageConfig(people=2, frames=4, width=96, height=64, seed=1)
    seq, _ = write_footage(tmp_path / "root", cfg)
    with torch.no_grad():
        ref = random_model([torch.zeros(3, 64, 96)])[0]
    label = int(np.bincount(ref["labels"].numpy()).argmax())  # random weights' "person"
    det = TorchvisionDetector(random_model, score_threshold=0.0, person_label=label, batch_size=3)
    cam = track_camera(CameraInput("c", seq), input_height=64, detector=det)
    assert cam.frames == 4 and cam.detector == "TorchvisionDetector"
    assert cam.detections > 0  # (scores ~0.01: too low for ByteTrack to start tracks)
