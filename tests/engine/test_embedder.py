"""The Embedder contract: its space, its input kinds (crops of frames among them), its
skip-bad policy, against a manual forward pass and numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from abdnet.config import Config, DataConfig, model_config
from abdnet.data import ImageReadError, build_test_transform
from abdnet.engine import (
    Embedder,
    EmbeddingSpace,
    Extraction,
    ModelEmbedder,
    SpaceMismatchError,
    crop_frame,
)
from abdnet.models import build_model_from_config, weights_digest
from abdnet.retrieval import FeatureExtractor

H, W = 64, 32


@pytest.fixture(scope="module")
def net():
    cfg = Config(
        model=model_config(
            "paper", backbone="resnet18", global_dim=8, attentive_dim=8, reduction_dim=8
        ),
        data=DataConfig(height=H, width=W),
    )
    torch.manual_seed(0)
    return build_model_from_config(cfg.model, 3).eval(), cfg


@pytest.fixture(scope="module")
def frame():
    return np.random.default_rng(1).integers(0, 256, size=(120, 90, 3), dtype=np.uint8)


def _manual(model, cfg, images):
    tf = build_test_transform(cfg.data)
    with torch.no_grad():
        raw = model(torch.stack([tf(Image.fromarray(a)) for a in images])).embedding
    return raw, F.normalize(raw, dim=1)


def test_feature_extractor_is_the_embedder(net):
    model, cfg = net
    ext = FeatureExtractor(model, device="cpu", config=cfg)
    assert isinstance(ext, Embedder) and isinstance(ext, ModelEmbedder)
    space = ext.space
    assert space == EmbeddingSpace(
        dim=model.feature_dim, normalized=True, metric="euclidean",
        model_digest=weights_digest(model),
    )  # fmt: skip
    raw = FeatureExtractor(model, device="cpu", config=cfg, normalize=False).space
    assert not raw.normalized and raw.distance_name == "squared_euclidean"
    assert not isinstance(object(), Embedder)


def test_features_are_in_the_declared_space(net, frame):
    model, cfg = net
    images = [frame[:64, :32], frame[10:90, 20:60]]
    raw, unit = _manual(model, cfg, images)
    ext = ModelEmbedder(model, config=cfg, batch_size=1).embed(images, keep_raw=True)
    assert isinstance(ext, Extraction) and ext.kept == [0, 1]
    torch.testing.assert_close(ext.features, unit, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ext.raw, raw, atol=1e-4, rtol=1e-4)
    plain = ModelEmbedder(model, config=cfg, normalize=False).embed(images)
    torch.testing.assert_close(plain.features, raw, atol=1e-4, rtol=1e-4)
    assert plain.raw is None


def test_crops_of_a_frame_equal_the_cut_crops(net, frame):
    model, cfg = net
    emb = ModelEmbedder(model, config=cfg, batch_size=2)
    boxes = np.array([[0, 0, 40, 80], [30, 20, 90, 120], [5, 50, 45, 110]])
    cut = [frame[y1:y2, x1:x2] for x1, y1, x2, y2 in boxes]
    want = emb(cut)
    # one (frame, box) pair per crop, a frame with several boxes, and a PIL frame
    torch.testing.assert_close(emb([(frame, b) for b in boxes]), want)
    torch.testing.assert_close(emb([(frame, boxes)]), want)
    torch.testing.assert_close(emb([(Image.fromarray(frame), boxes.tolist())]), want)
    torch.testing.assert_close(emb((frame, boxes[0])), want[:1])
    # mixed with plain images, in input order
    mixed = emb.embed([cut[0], (frame, boxes[1:]), cut[2]])
    assert mixed.kept == [0, 1, 2, 3]
    torch.testing.assert_close(mixed.features, torch.cat([want[:1], want[1:], want[2:]]))


def test_boxes_outside_the_frame_clip(net, frame):
    model, cfg = net
    emb = ModelEmbedder(model, config=cfg)
    # reaching past every edge, and fractional: the covering pixel rectangle, clipped
    assert np.array_equal(np.asarray(crop_frame(frame, (-20, -5.5, 200, 300))), frame)
    assert np.array_equal(np.asarray(crop_frame(frame, (10.2, 20.7, 30.1, 40))),
                          frame[20:40, 10:31])  # fmt: skip
    torch.testing.assert_close(emb([(frame, (60, 100, 500, 500))]), emb([frame[100:, 60:]]))
    # nothing inside: unreadable, raised or skipped by the one policy
    with pytest.raises(ImageReadError, match="no pixel inside the 90x120 frame"):
        emb([(frame, (100, 0, 150, 50))])
    res = emb.embed([(frame, [[100, 0, 150, 50], [0, 0, 30, 60]])], skip_bad=True)
    assert res.kept == [1] and len(res.skipped) == 1 and "box" in res.skipped[0][0]
    torch.testing.assert_close(res.features, emb([frame[:60, :30]]))


def test_skip_bad_and_progress(net, frame, tmp_path):
    model, cfg = net
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    emb = ModelEmbedder(model, config=cfg, batch_size=2)
    items = [frame[:64, :32], str(bad), frame[:70, :30], frame[:50, :40], str(tmp_path / "none")]
    with pytest.raises(ImageReadError, match="bad.jpg"):
        emb.embed(items)
    seen: list[int] = []
    res = emb.embed(items, skip_bad=True, progress=seen.append)
    assert res.kept == [0, 2, 3] and [s for s, _ in res.skipped] == [str(bad), items[4]]
    assert seen == [2, 2, 1]
    torch.testing.assert_close(res.features, emb([items[i] for i in res.kept]))
    empty = emb.embed([])
    assert empty.features.shape == (0, model.feature_dim) and empty.kept == []


def test_space_owns_the_distance_rule():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 6)), rng.normal(size=(7, 6))
    space = EmbeddingSpace(dim=6)
    ua, ub = space.project(a), space.project(b)
    sq = ((ua[:, None] - ub[None]) ** 2).sum(-1)
    cos = ua @ ub.T
    np.testing.assert_allclose(space.distances(ua, ub).numpy(), sq, atol=1e-5)
    np.testing.assert_allclose(space.distance_from_score(cos), sq, atol=1e-5)
    np.testing.assert_allclose(space.score_from_distance(sq), cos, atol=1e-5)
    assert (space.faiss_metric, space.milvus_metric) == ("l2", "IP")
    np.testing.assert_allclose(space.distance_from_search(cos, "IP"), sq, atol=1e-5)
    np.testing.assert_allclose(space.distance_from_search(sq, "l2"), sq)
    cosine = EmbeddingSpace(dim=6, metric="cosine")
    np.testing.assert_allclose(cosine.distance_from_search(sq, "l2"), 1 - cos, atol=1e-5)
    assert cosine.faiss_metric == "inner_product"
    raw = EmbeddingSpace(dim=6, normalized=False)
    assert raw.milvus_metric == "L2" and not raw.has_score
    with pytest.raises(ValueError, match="raw embeddings"):
        raw.distance_from_score(0.5)
    with pytest.raises(ValueError, match="normalized=True"):
        EmbeddingSpace(dim=6, metric="cosine", normalized=False)
    # records
    s = EmbeddingSpace(dim=6, model_digest="ab" * 32)
    assert EmbeddingSpace.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="x.json: missing key 'dim'"):
        EmbeddingSpace.from_dict({}, "x.json")
    with pytest.raises(ValueError, match="distance"):
        EmbeddingSpace.from_dict({**s.to_dict(), "distance": "squared_euclidean"})
    s.check_same(EmbeddingSpace(dim=6), "the index")  # unknown digest: comparable
    with pytest.raises(SpaceMismatchError, match="the index: .*8-d instead of 6-d"):
        s.check_same(EmbeddingSpace(dim=8), "the index")
    with pytest.raises(SpaceMismatchError, match="raw embeddings instead of"):
        s.check_same(EmbeddingSpace(dim=6, normalized=False), "the index")
