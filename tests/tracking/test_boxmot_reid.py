"""ABD-Net as BoxMOT's appearance model: the get_features contract (no BoxMOT needed) and,
where BoxMOT is installed, its tracker running with it inside abdnet's pipeline."""

import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from abdnet.config import Config, DataConfig
from abdnet.retrieval import FeatureExtractor
from abdnet.tracking import AbdnetReID, BoxmotTracker, CameraInput, track_camera
from abdnet.tracking.footage import FootageConfig, write_footage


class Stripes(torch.nn.Module):
    """An embedding: the mean colour of six horizontal stripes, centred."""

    def forward(self, x):
        f = torch.stack([s.mean(dim=(2, 3)) for s in x.chunk(6, dim=2)], 1).flatten(1) - 0.4
        return SimpleNamespace(embedding=f)


@pytest.fixture(scope="module")
def extractor():
    return FeatureExtractor(Stripes(), config=Config(data=DataConfig(height=64, width=32)))


def test_get_features_embeds_each_box_of_the_bgr_image(extractor):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    boxes = np.array([[10, 5, 40, 70], [60.4, 20.2, 100.7, 88.9], [100, 50, 140, 120]])
    reid = AbdnetReID(extractor)
    got = reid.get_features(boxes, bgr)
    assert got.shape == (3, reid.dim) and got.dtype == np.float32
    # the reference: the RGB crops cut by hand (the last box clipped to the frame)
    crops = [rgb[5:70, 10:40], rgb[20:89, 60:101], rgb[50:90, 100:120]]
    ref = extractor(crops).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert not np.allclose(got[0], got[1])
    # a box wholly outside the frame still gets a row (BoxMOT needs one per box)
    out = reid.get_features(np.array([[200, 200, 260, 300]]), bgr)
    assert out.shape == (1, reid.dim) and np.isfinite(out).all()
    assert reid.get_features(np.zeros((0, 4)), bgr).shape == (0, reid.dim)
    with pytest.raises(ValueError, match="uint8 BGR"):
        reid.get_features(boxes, rgb.astype(np.float32))


@pytest.mark.skipif(importlib.util.find_spec("boxmot") is not None, reason="boxmot installed")
def test_a_boxmot_tracker_without_boxmot_says_how_to_install_it(extractor):
    with pytest.raises(ValueError, match="pip install boxmot"):
        BoxmotTracker("boxmot:botsort", frame_rate=25, embedder=extractor)


def test_boxmot_botsort_tracks_footage_with_abdnet_inside(extractor, tmp_path, monkeypatch):
    pytest.importorskip("boxmot")
    cfg = FootageConfig(people=3, frames=100, width=160, height=96, seed=3)
    seq, _ = write_footage(tmp_path / "root", cfg)
    calls = []
    reid_of = AbdnetReID.get_features

    class Counting(AbdnetReID):
        def get_features(self, boxes, image):
            calls.append(len(boxes))
            return reid_of(self, boxes, image)

    # count the calls BoxMOT makes into the real adapter
    monkeypatch.setattr("abdnet.tracking.boxmot_reid.AbdnetReID", Counting)
    cam = track_camera(
        CameraInput("c", seq), input_height=64, tracker="boxmot:botsort", embedder=extractor
    )
    assert sum(calls) > 0  # BoxMOT asked ABD-Net for appearance features
    assert cam.tracklets and max(len(t) for t in cam.tracklets) >= 10
    frames = np.concatenate([t.frames for t in cam.tracklets])
    assert frames.min() >= 1 and frames.max() <= cfg.frames
