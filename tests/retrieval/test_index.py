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


@pytest.mark.parametrize("n", [2, 5, 40, 200])
def test_ivfpq_on_a_small_gallery_chooses_its_size_and_finds_exact_neighbours(n, data, caplog):
    # the README's `abdnet index build --kind ivfpq` on a gallery of a few crops: nlist and
    # nbits follow the gallery's size (logged), and the exact re-ranking finds the true top-k
    x, q = data
    g = x[:n]
    with caplog.at_level("INFO", logger="abdnet.retrieval.index_kinds"):
        ix = build_index(g, "ivfpq")
    p = ix.params
    assert 2 ** p["nbits"] <= n and p["nlist"] <= n and p["nbits"] == min(8, int(np.log2(n)))
    assert f"small gallery ({n} vectors)" in caplog.text and "--kind flat" in caplog.text
    k = min(5, n)
    res = ix.search(q[:10], k)
    d_ref, i_ref = _brute_force(g, q[:10], k)
    np.testing.assert_allclose(res.distances, d_ref, rtol=1e-4, atol=1e-5)


def test_ivfpq_on_one_vector_says_what_to_use():
    with pytest.raises(ValueError, match=r"ivfpq: 1 vector\(s\) cannot train.*--kind flat"):
        build_index(np.ones((1, 8), np.float32), "ivfpq")


def test_copying_an_index_with_cp_rL_gives_a_working_index(data, tmp_path):
    import subprocess

    x, q = data
    src = tmp_path / "g.index"
    build_index(x[:300], "flat", out_dir=src)
    assert src.is_symlink()  # a link to a hidden version folder beside it
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    subprocess.run(["cp", "-rL", str(src), str(elsewhere / "g.index")], check=True)
    copy = open_index(elsewhere / "g.index")
    a, b = open_index(src).search(q, 5), copy.search(q, 5)
    np.testing.assert_array_equal(a.indices, b.indices)
    # the copy takes additions like the original, and the original is untouched
    from abdnet.retrieval import update_index

    with update_index(elsewhere / "g.index") as ix:
        ix.add(x[300:310])
    assert open_index(elsewhere / "g.index").count == 310 and open_index(src).count == 300
    # a plain `cp -r` copies the link alone: opening it elsewhere names the fix
    subprocess.run(["cp", "-r", str(src), str(elsewhere / "linked.index")], check=True)
    with pytest.raises(FileNotFoundError, match=r"linked.index is a link .*'cp -rL "):
        open_index(elsewhere / "linked.index")
