"""retrieval/index.py against numpy brute force."""

from __future__ import annotations

import json

import numpy as np
import pytest

from abdnet.retrieval import build_index, open_index


def _clustered(n: int, d: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, d))
    x = centers[rng.integers(0, clusters, n)] + 0.4 * rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def _brute_force(gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    g = gallery.astype(np.float64)
    q = queries.astype(np.float64)
    d = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)  # (Q, N) squared Euclidean, by definition
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, axis=1), idx


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


@pytest.fixture(scope="module")
def data():
    x = _clustered(3000, 32, 30, seed=0)
    rng = np.random.default_rng(1)
    # queries near gallery items, so their neighbourhoods are well defined
    q = x[rng.choice(3000, 60, replace=False)] + 0.05 * rng.normal(size=(60, 32))
    return x, q.astype(np.float32)


def test_flat_equals_brute_force(data):
    x, q = data
    res = build_index(x, "flat").search(q, 10)
    d_ref, i_ref = _brute_force(x, q, 10)
    np.testing.assert_array_equal(res.indices, i_ref)
    np.testing.assert_allclose(res.distances, d_ref, rtol=1e-4, atol=1e-5)
    assert res.distances.dtype == np.float32 and res.indices.dtype == np.int64


@pytest.mark.parametrize(
    ("kind", "opts"),
    [("ivfpq", {"nlist": 32, "m": 8, "nbits": 6, "nprobe": 8}), ("hnsw", {"hnsw_m": 16})],
)
def test_approximate_recall_bound(data, kind, opts):
    x, q = data
    res = build_index(x, kind, **opts).search(q, 10)
    _, i_ref = _brute_force(x, q, 10)
    assert _recall(res.indices, i_ref) >= 0.9


def test_ivfpq_without_refine_is_approximate_but_close(data):
    x, q = data
    res = build_index(x, "ivfpq", nlist=32, m=8, nbits=6, nprobe=32, refine="none").search(q, 10)
    _, i_ref = _brute_force(x, q, 10)
    assert _recall(res.indices, i_ref) >= 0.5


@pytest.mark.parametrize("kind", ["flat", "ivfpq", "hnsw"])
def test_save_open_round_trip_with_metadata(tmp_path, data, kind):
    x, q = data
    paths = [f"g/{i:05d}.jpg" for i in range(len(x))]
    pids = np.arange(len(x)) // 7
    camids = np.arange(len(x)) % 3
    opts = {"nlist": 32, "m": 8, "nbits": 6, "nprobe": 5} if kind == "ivfpq" else {}
    built = build_index(
        x,
        kind,
        paths=paths,
        pids=pids,
        camids=camids,
        out_dir=tmp_path / "ix",
        extraction={"flip": True},
        **opts,
    )
    opened = open_index(tmp_path / "ix")
    assert (opened.kind, opened.dim, opened.count) == (kind, 32, len(x))
    assert opened.paths == paths
    np.testing.assert_array_equal(opened.pids, pids)
    np.testing.assert_array_equal(opened.camids, camids)
    assert opened.params == built.params
    assert opened.extraction == {"flip": True}
    if kind == "ivfpq":
        assert opened.params["nprobe"] == 5  # a search-time parameter faiss does not store
    a, b = built.search(q, 10), opened.search(q, 10)
    np.testing.assert_array_equal(a.indices, b.indices)
    meta = json.loads((tmp_path / "ix" / "meta.json").read_text())
    assert meta["metric"] == "squared_l2" and meta["count"] == len(x)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_add_then_search_finds_new_items(tmp_path, data, kind):
    x, _ = data
    opts = {"nlist": 32, "m": 8, "nbits": 6} if kind == "ivfpq" else {}
    first, second = x[:2000], x[2000:]
    build_index(first, kind, paths=[f"a{i}" for i in range(2000)], out_dir=tmp_path / "ix", **opts)
    ix = open_index(tmp_path / "ix")
    ix.add(second, paths=[f"b{i}" for i in range(len(second))])
    ix.save()
    ix = open_index(tmp_path / "ix")
    assert ix.count == len(x)
    assert ix.paths[2000] == "b0" and ix.paths[-1] == f"b{len(second) - 1}"
    # each added vector is its own nearest neighbour (distance ~0)
    res = ix.search(second[:20], 1)
    np.testing.assert_array_equal(res.indices[:, 0], np.arange(2000, 2020))


def test_flat_add_equals_brute_force_on_union(data):
    x, q = data
    ix = build_index(x[:1000], "flat")
    ix.add(x[1000:])
    _, i_ref = _brute_force(x, q, 5)
    np.testing.assert_array_equal(ix.search(q, 5).indices, i_ref)


def test_dimension_mismatch_errors_name_both_dims_and_folder(tmp_path, data):
    x, _ = data
    build_index(x, "flat", out_dir=tmp_path / "ix32")
    ix = open_index(tmp_path / "ix32")
    other = np.ones((3, 16), np.float32)
    with pytest.raises(ValueError, match=r"dimension 16.*ix32.*dimension 32"):
        ix.add(other)
    with pytest.raises(ValueError, match=r"dimension 16.*ix32.*dimension 32"):
        ix.search(other, 5)


def test_ivfpq_too_few_training_vectors(data):
    x, _ = data
    with pytest.raises(ValueError, match=r"too few training vectors: 100 given, at least 256"):
        build_index(x[:100], "ivfpq", nlist=16, m=8, nbits=8)


def test_bad_options_and_inputs(tmp_path, data):
    x, _ = data
    with pytest.raises(ValueError, match="does not take option.*nlist"):
        build_index(x, "flat", nlist=4)
    with pytest.raises(ValueError, match="index kind 'lsh'"):
        build_index(x, "lsh")
    with pytest.raises(ValueError, match="m=5 must divide.*32"):
        build_index(x, "ivfpq", m=5)
    with pytest.raises(ValueError, match="NaN"):
        build_index(np.full((4, 8), np.nan, np.float32))
    with pytest.raises(FileNotFoundError, match="missing_ix"):
        open_index(tmp_path / "missing_ix")
    (tmp_path / "notix").mkdir()
    with pytest.raises(ValueError, match="notix.*not an abdnet index"):
        open_index(tmp_path / "notix")


def test_k_larger_than_gallery_is_clipped(data):
    x, q = data
    res = build_index(x[:7], "flat").search(q[:2], 10)
    assert res.indices.shape == (2, 7)
    assert sorted(res.indices[0]) == list(range(7))


@pytest.mark.parametrize(("n", "dim"), [(1_000_000, 512), (1_000_000, 3072), (5000, 100), (700, 7)])
def test_default_ivfpq_params_are_valid(n, dim):
    from abdnet.retrieval import default_ivfpq_params

    p = default_ivfpq_params(n, dim)
    assert dim % p["m"] == 0 and 1 <= p["m"] <= 64
    assert p["nlist"] & (p["nlist"] - 1) == 0  # power of two
    assert p["nlist"] == 16 or p["nlist"] * 39 <= n  # k-means gets its 39 points per centroid
