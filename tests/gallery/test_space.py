"""A gallery built from an embedder searches in the embedder's declared space: Milvus's
metric is the space's, hits carry the space's distance and score, other spaces are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from abdnet.engine import SpaceMismatchError
from abdnet.gallery import Gallery, GalleryError, describe_extractor, enrol_files
from abdnet.retrieval import FeatureExtractor


def _images(tmp_path: Path, n: int) -> list[str]:
    rng = np.random.default_rng(3)
    paths = []
    for i in range(n):
        p = tmp_path / f"{i:04d}_c{i % 3 + 1}s1_{i:06d}_00.png"
        Image.fromarray(rng.integers(0, 256, (60, 30, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def test_gallery_uses_the_embedders_space(tmp_path, tiny_checkpoint):
    ext = FeatureExtractor(tiny_checkpoint, device="cpu")
    space = ext.space
    model = describe_extractor(ext)
    assert model.space == space and space.milvus_metric == "IP"
    paths = _images(tmp_path, 6)
    with Gallery.open(tmp_path / "g.db", model=model, create=True) as g:
        enrol_files(g, ext, paths)
        index = g._client.describe_index(g.collection, "embedding")
        assert index["metric_type"] == space.milvus_metric
        feats = ext(paths).numpy()
        (hits,) = g.search(feats[:1], 6)
    # distances and scores are the space's: squared L2 of unit vectors, and their cosine
    want = ((feats[:1] - feats) ** 2).sum(1).astype(np.float64)
    by_source = {h.entry.source: h for h in hits}
    for p, d, f in zip(paths, want, feats):
        assert by_source[p].distance == pytest.approx(d, abs=1e-5)
        assert by_source[p].score == pytest.approx(float(feats[0] @ f), abs=1e-5)
        assert by_source[p].distance == pytest.approx(
            float(space.distance_from_score(by_source[p].score)), abs=1e-9
        )


def test_gallery_refuses_other_spaces(tmp_path, tiny_checkpoint):
    raw = FeatureExtractor(tiny_checkpoint, device="cpu", normalize=False)
    with pytest.raises(GalleryError, match="holds unit vectors, not squared L2 on raw"):
        Gallery.open(tmp_path / "raw.db", model=describe_extractor(raw), create=True)
    unit = FeatureExtractor(tiny_checkpoint, device="cpu")
    paths = _images(tmp_path, 2)
    with Gallery.open(tmp_path / "g.db", model=describe_extractor(unit), create=True) as g:
        with pytest.raises(SpaceMismatchError, match="raw embeddings instead of"):
            enrol_files(g, raw, paths)
        assert g.size() == 0
