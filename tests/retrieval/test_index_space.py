"""An index built from an embedder's features searches in the embedder's declared space: the
faiss metric is the space's, distances are the space's, the space survives saving, and
features of another space are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from abdnet.engine import EmbeddingSpace, SpaceMismatchError  # noqa: E402
from abdnet.retrieval import (  # noqa: E402
    FeatureExtractor,
    build_index,
    open_index,
    space_of_extraction,
)


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_index_of_an_embedders_features_uses_its_space(tmp_path, tiny_checkpoint, kind):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (60, 30, 3), dtype=np.uint8) for _ in range(12)]
    ext = FeatureExtractor(tiny_checkpoint, device="cpu")
    feats = ext(images).numpy()
    index = build_index(feats, kind, space=ext.space, out_dir=tmp_path / "ix")
    assert index.index.metric_type == faiss.METRIC_L2 and ext.space.faiss_metric == "l2"
    res = index.search(feats[:3], 12)
    want = ((feats[:3, None] - feats[None]) ** 2).sum(-1)  # squared L2 of unit vectors
    np.testing.assert_allclose(res.distances, np.sort(want, axis=1), atol=1e-5)
    reopened = open_index(tmp_path / "ix")
    assert reopened.embedding_space() == ext.space
    meta = json.loads((tmp_path / "ix" / "meta.json").read_text())
    assert meta["space"] == ext.space.to_dict() and meta["metric"] == "squared_l2"


def test_cosine_space_searches_by_inner_product(tmp_path):
    g, q = _unit(50, 8, 1), _unit(4, 8, 2)
    space = EmbeddingSpace(dim=8, metric="cosine")
    index = build_index(g, "flat", space=space, out_dir=tmp_path / "ix")
    assert index.index.metric_type == faiss.METRIC_INNER_PRODUCT
    res = open_index(tmp_path / "ix").search(q, 5)
    want = np.sort(1.0 - q @ g.T, axis=1)[:, :5]
    np.testing.assert_allclose(res.distances, want, atol=1e-5)
    np.testing.assert_array_equal(res.indices, np.argsort(1.0 - q @ g.T, axis=1)[:, :5])


def test_space_comes_from_the_extraction_record(tmp_path):
    raw = np.random.default_rng(3).standard_normal((20, 6)).astype(np.float32) * 5
    # a feature file written by 'abdnet extract --raw' before spaces were recorded
    index = build_index(raw, "flat", extraction={"normalize": False}, out_dir=tmp_path / "ix")
    space = open_index(tmp_path / "ix").embedding_space()
    assert not space.normalized and space.distance_name == "squared_euclidean"
    unit = EmbeddingSpace(dim=6, model_digest="a" * 64)
    assert space_of_extraction({"space": unit.to_dict()}, 6) == unit
    with pytest.raises(SpaceMismatchError, match="squared L2 on unit vectors"):
        index.embedding_space().check_same(unit, "features")
    with pytest.raises(ValueError, match="5-d, but the space has 6-d"):
        build_index(raw[:, :5], "flat", space=unit)
    # a meta.json whose metric disagrees with its space is refused
    meta_path = tmp_path / "ix" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["metric"] = "inner_product"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="metric 'inner_product' does not match the space"):
        open_index(tmp_path / "ix")
