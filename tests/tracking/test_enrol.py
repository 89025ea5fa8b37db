"""Tracked identities into the gallery: the crops the pipeline embedded, with their own
embeddings, camera, time, frame and label; the camera numbering; ``abdnet track --gallery``
refusing a gallery of another model."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from PIL import Image

from abdnet.cli.main import main
from abdnet.gallery import Gallery, describe_extractor, enrol_files, load_threshold
from abdnet.layout import THRESHOLD_FILE
from abdnet.retrieval import FeatureExtractor
from abdnet.tracking import (
    CameraInput,
    camera_numbers,
    default_label_prefix,
    enrol_identities,
    identify,
    read_seqinfo,
    track_camera,
)
from abdnet.tracking.enrol import check_label_prefix

pytestmark = pytest.mark.usefixtures("one_torch_thread")

START = datetime(2026, 1, 2, 10, 0, tzinfo=timezone.utc)


def test_camera_numbers_come_from_the_names_or_their_order():
    assert camera_numbers(["cam2", "cam1"]) == {"cam2": 2, "cam1": 1}
    assert camera_numbers(["c7", "hall12"]) == {"c7": 7, "hall12": 12}
    # not every name ends in a number, two end in the same one, or one ends in 0: the order
    assert camera_numbers(["door", "cam2"]) == {"door": 1, "cam2": 2}
    assert camera_numbers(["a1", "b1"]) == {"a1": 1, "b1": 2}
    assert camera_numbers(["cam0", "cam1"]) == {"cam0": 1, "cam1": 2}


def test_the_default_label_prefix_is_unique_to_the_run_and_labels_must_fit():
    assert default_label_prefix("/data/out", START) == "out@20260102T100000Z"
    later = default_label_prefix("/data/out", START + timedelta(seconds=1))
    assert later != default_label_prefix("/data/out", START)
    check_label_prefix("x" * 250, 99999)  # "x...x/99999": 256 bytes
    with pytest.raises(ValueError, match="--label-prefix"):
        check_label_prefix("x" * 250, 100000)
    with pytest.raises(ValueError, match="--label-prefix"):
        check_label_prefix("", 1)


def test_every_embedded_crop_is_enrolled_with_its_own_embedding_and_its_place(
    calibrated_run, coloured_footage, tmp_path
):
    extractor = FeatureExtractor(calibrated_run, device="cpu")
    model = describe_extractor(extractor)
    cams = [
        CameraInput(c.name, c, start=START + timedelta(seconds=30 * i))
        for i, c in enumerate(coloured_footage)
    ]
    cams[1] = CameraInput(cams[1].name, cams[1].path)  # no start: frames only
    tracks = [track_camera(c, input_height=extractor.config.data.height) for c in cams]
    threshold = load_threshold(calibrated_run / THRESHOLD_FILE)
    ids = identify(tracks, embedder=extractor, threshold=threshold.threshold, far=threshold.far)
    with Gallery.open(tmp_path / "g.db", model=model, create=True) as g:
        report = enrol_identities(g, tracks, ids, model=model, label_prefix="walk")
        crops = [(cam, t, c) for cam in tracks for t in cam.tracklets for c in t.crops]
        embedded = [x for x in crops if x[2].embedding is not None]
        assert report.added == len(embedded) > 0 and not report.failed
        rows = {r["id"]: r for r in g.get_rows(list(report.ids.values()))}
        entries = {e.id: e for e in g.get(list(report.ids.values()))}
        assert len(rows) == len(embedded)
        rate = {c.name: read_seqinfo(c / "seqinfo.ini").frame_rate for c in coloured_footage}
        for cam, t, c in embedded:
            name = f"walk/{cam.camera.name}/{c.frame:06d}-{t.track}.png"
            i = report.ids[name]
            # the pipeline's own embedding, not a second one
            np.testing.assert_array_equal(np.asarray(rows[i]["embedding"], np.float32), c.embedding)
            e = entries[i]
            assert e.camera == int(cam.camera.name[-1]) and e.frame == c.frame
            assert e.label == f"walk/{ids.labels[t.key]}"
            if cam.camera.start is None:
                assert e.timestamp is None
            else:
                expect = cam.camera.start + timedelta(seconds=(c.frame - 1) / rate[cam.camera.name])
                assert abs((e.timestamp - expect).total_seconds()) <= 1e-3
            # the stored crop is the embedded pixels, losslessly
            stored = np.asarray(Image.open(io.BytesIO(g.crop_bytes(e))).convert("RGB"))
            np.testing.assert_array_equal(stored, c.image)
        # enrolling again changes nothing
        again = enrol_identities(g, tracks, ids, model=model, label_prefix="walk")
        assert (again.added, again.skipped) == (0, len(embedded))
        assert g.size() == len(embedded)


def test_a_gallery_of_another_model_is_refused_before_any_work(
    calibrated_run, coloured_footage, tiny_checkpoint, tmp_path, capsys
):
    uri = tmp_path / "other.db"
    other = FeatureExtractor(tiny_checkpoint, device="cpu")
    with Gallery.open(uri, model=describe_extractor(other), create=True) as g:
        crop = tmp_path / "0001_c1s1_000001_00.png"
        Image.new("RGB", (32, 64), (200, 10, 10)).save(crop)
        enrol_files(g, other, [crop])
    out = tmp_path / "out"
    args = ["track", "--checkpoint", str(calibrated_run), "--out", str(out), "--no-progress"]
    args += [f"--camera={c.name}={c}" for c in coloured_footage]
    code = main([*args, "--gallery", str(uri)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"gallery {uri}" in err[0] and "model" in err[0]
    assert not out.exists()
    with Gallery.open(uri) as g:
        assert g.size() == 1
    # the gallery options need --gallery
    assert main([*args, "--label-prefix", "x"]) == 2
    assert "--label-prefix needs --gallery" in capsys.readouterr().err
