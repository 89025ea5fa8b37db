"""Model fingerprints and threshold files."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
import torch

from abdnet.gallery import (
    ModelMismatchError,
    Threshold,
    describe_extractor,
    load_threshold,
    save_threshold,
)
from abdnet.models.io import load_model
from abdnet.retrieval import FeatureExtractor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def info(tiny_checkpoint):
    return describe_extractor(FeatureExtractor(tiny_checkpoint, device="cpu"), source="x")


def test_fingerprint_follows_weights_transform_and_flip(tiny_checkpoint, info):
    loaded = load_model(tiny_checkpoint)
    same = describe_extractor(FeatureExtractor(loaded, device="cpu"))
    assert same.fingerprint == info.fingerprint and same.dim == 32
    flipped = describe_extractor(FeatureExtractor(loaded, device="cpu", flip=True))
    assert flipped.weights == info.weights and flipped.fingerprint != info.fingerprint
    cfg = dataclasses.replace(
        loaded.config, data=dataclasses.replace(loaded.config.data, height=96)
    )
    resized = describe_extractor(FeatureExtractor(loaded.model, device="cpu", config=cfg))
    assert resized.fingerprint != info.fingerprint
    with pytest.raises(ModelMismatchError, match="input 96x32 instead of 64x32"):
        info.check_same(resized, "gallery g.db")
    with torch.no_grad():
        next(loaded.model.parameters()).add_(1e-3)
    changed = describe_extractor(FeatureExtractor(loaded.model, device="cpu"))
    assert changed.weights != info.weights


def test_an_onnx_style_model_is_fingerprinted_by_its_file(tmp_path, tiny_checkpoint):
    loaded = load_model(tiny_checkpoint)

    class FileModel:  # what FeatureExtractor sees of abdnet.export.OnnxEmbedder
        def __init__(self, path):
            self.path, self.config, self.feature_dim = path, loaded.config, 32

        def __call__(self, x):
            return torch.zeros(x.shape[0], 32)

    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    a.write_bytes(b"graph one")
    b.write_bytes(b"graph two")
    fa = describe_extractor(FeatureExtractor(FileModel(a)))
    fb = describe_extractor(FeatureExtractor(FileModel(b)))
    assert fa.weights == hashlib.sha256(b"graph one").hexdigest() and fa.weights != fb.weights


def test_threshold_round_trip_and_errors(tmp_path, info):
    t = Threshold(
        threshold=0.8, far=1e-3, far_achieved=9e-4, tar=0.7, eer=0.05, model=info, data="d"
    )
    path = save_threshold(tmp_path / "t.json", t)
    back = load_threshold(path)
    assert back == t and back.matches(0.8) and not back.matches(0.80001)
    d = json.loads(path.read_text())
    del d["threshold"]
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="bad.json: missing key 'threshold'"):
        load_threshold(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="not an abdnet threshold file"):
        load_threshold(tmp_path / "other.json")
    with pytest.raises(FileNotFoundError):
        load_threshold(tmp_path / "none.json")


def test_the_stitch_threshold_is_the_far_over_ten_point_of_the_calibration(info):
    from abdnet.gallery import STITCH_FAR_RATIO, Threshold, calibration_fars

    assert STITCH_FAR_RATIO == 10
    assert calibration_fars(0.1) == [0.1, 0.01, 0.001]
    assert calibration_fars(0.01) == [0.01, 0.001]
    assert calibration_fars(0.001) == [0.01, 0.001, 0.0001]
    points = [{"far_target": 0.01, "threshold": 0.5}, {"far_target": 0.001, "threshold": 0.3}]
    t = Threshold(0.5, 0.01, 0.009, 0.4, 0.1, info, extra={"operating_points": points})
    assert t.threshold_at(0.001) == 0.3 and t.threshold_at(0.01) == 0.5
    assert t.threshold_at(0.05) is None
    assert t.stitch_threshold == 0.3
    # a file without that point (older calibrations at 1e-3) stitches at its threshold
    old = Threshold(0.3, 0.001, 0.001, 0.2, 0.1, info, extra={"operating_points": points})
    assert old.stitch_threshold == 0.3
    odd = Threshold(0.2, 0.01, 0.009, 0.4, 0.1, info, extra={"operating_points": points})
    assert odd.stitch_threshold == 0.2  # never looser than the threshold
