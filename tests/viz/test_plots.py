"""Each figure draws the numbers it is given: the artists of the returned figure are compared
with an independent computation (numpy's corrcoef and histogram, grouping by hand, the
protocol's statuses from the ids); the PNG is the figure at its size; the same seed gives the
same layout."""

from collections import defaultdict

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from PIL import Image

from abdnet.viz.correlation import batch_correlation_stats, correlation_stats, plot_correlation
from abdnet.viz.ranks import STATUS_STYLE, plot_ranks, rank_query
from abdnet.viz.tsne import choose_identities, plot_tsne, tsne_layout


def _assert_png_of(fig, path, dpi=100):
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
    assert (w, h) == (round(fig.get_figwidth() * dpi), round(fig.get_figheight() * dpi))


def _abs_corr(fmap: np.ndarray) -> np.ndarray:
    return np.abs(np.corrcoef(fmap.reshape(fmap.shape[0], -1)))


def test_correlation_figure_draws_the_matrix_histogram_and_mean(tmp_path):
    rng = np.random.default_rng(0)
    maps = rng.standard_normal((3, 8, 4, 4))
    out = tmp_path / "corr.png"
    fig = plot_correlation(
        [("one", correlation_stats(maps[0])), ("batch", batch_correlation_stats(maps))],
        str(out),
        bins=20,
    )
    _assert_png_of(fig, out)
    expected = {"one": _abs_corr(maps[0]), "batch": np.mean([_abs_corr(m) for m in maps], 0)}
    iu = np.triu_indices(8, 1)
    for row, label in enumerate(("one", "batch")):
        ax_matrix, ax_hist = fig.axes[2 * row], fig.axes[2 * row + 1]
        matrix = expected[label]
        np.testing.assert_allclose(ax_matrix.images[0].get_array(), matrix, atol=1e-12)
        counts, edges = np.histogram(matrix[iu], bins=20, range=(0.0, 1.0))
        bars = ax_hist.patches
        assert [b.get_height() for b in bars] == counts.tolist()
        np.testing.assert_allclose([b.get_x() for b in bars], edges[:-1], atol=1e-12)
        (mean_line,) = ax_hist.lines
        assert mean_line.get_xdata()[0] == pytest.approx(matrix[iu].mean(), abs=1e-12)
        assert f"{matrix[iu].mean():.3f}" in ax_matrix.get_title()


def test_tsne_figure_draws_each_identity_and_camera_where_the_layout_put_it(tmp_path):
    rng = np.random.default_rng(0)
    pids = np.repeat(np.arange(12), 4)
    cams = np.tile(np.arange(4), 12)
    feats = rng.standard_normal((48, 16)) + 5.0 * pids[:, None] * (
        np.arange(16) == pids[:, None] % 16
    )
    chosen = choose_identities(pids, 5, seed=3)
    assert chosen == choose_identities(pids, 5, seed=3) and len(set(chosen)) == 5
    assert chosen == sorted(chosen) and set(chosen) <= set(pids.tolist())
    sel = np.isin(pids, chosen)
    a = tsne_layout(feats[sel], pids[sel], cams[sel], seed=1, max_iter=250)
    b = tsne_layout(feats[sel], pids[sel], cams[sel], seed=1, max_iter=250)
    np.testing.assert_array_equal(a.points, b.points)
    c = tsne_layout(feats[sel], pids[sel], cams[sel], seed=2, max_iter=250)
    out = tmp_path / "tsne.png"
    fig = plot_tsne([("m1", a), ("m2", c)], str(out))
    _assert_png_of(fig, out)
    for ax, lay in zip(fig.axes, (a, c)):
        # by hand: which (identity, camera) each laid-out point belongs to
        owner = {
            tuple(point): (int(pid), int(cam))
            for point, pid, cam in zip(lay.points.tolist(), lay.pids, lay.camids)
        }
        colour_of, shape_of, drawn = defaultdict(set), defaultdict(set), []
        for col in ax.collections:
            points = [tuple(p) for p in col.get_offsets().tolist()]
            ((pid, cam),) = {owner[p] for p in points}  # one group per scatter call
            drawn.extend(points)
            colour_of[pid].add(tuple(col.get_facecolor()[0]))
            shape_of[cam].add(col.get_paths()[0].vertices.tobytes())
        assert sorted(drawn) == sorted(owner)  # every point drawn once, at its place
        # one colour per identity, all different; one marker shape per camera, all different
        assert sorted(colour_of) == chosen and all(len(v) == 1 for v in colour_of.values())
        assert len(set().union(*colour_of.values())) == len(chosen)
        assert all(len(v) == 1 for v in shape_of.values())
        assert len(set().union(*shape_of.values())) == len(set(lay.camids.tolist()))
        labels = {t.get_text(): t.xy for t in ax.texts}
        for pid in chosen:
            centroid = lay.points[lay.pids == pid].mean(axis=0)
            np.testing.assert_allclose(labels[str(pid)], centroid, atol=1e-9)


def test_ranks_figure_draws_each_entry_with_its_image_and_status_border(tmp_path):
    rng = np.random.default_rng(0)
    g_pids, g_cams = rng.integers(0, 3, 12), rng.integers(0, 2, 12)
    queries = [(1, 0), (2, 1)]  # (pid, camera)
    distances = rng.random((2, 12))
    rows = [
        rank_query(distances[i], pid, cam, g_pids, g_cams, k=4, query_index=i)
        for i, (pid, cam) in enumerate(queries)
    ]

    def image(value: int) -> np.ndarray:
        return np.full((16, 8, 3), value, dtype=np.uint8)

    out = tmp_path / "ranks.png"
    fig = plot_ranks(rows, lambda i: image(200 + i), lambda i: image(10 * i), str(out))
    _assert_png_of(fig, out)
    ncols = 1 + max(len(r.entries) for r in rows)
    for r, ((q_pid, q_cam), row) in enumerate(zip(queries, rows)):
        axes = fig.axes[r * ncols : (r + 1) * ncols]
        np.testing.assert_array_equal(axes[0].images[0].get_array(), image(200 + r))
        # by hand: the gallery by distance; same id + camera is junk and takes no rank
        order = np.argsort(distances[r], kind="stable")
        expected, rank = [], 0
        for gi in order:
            if g_pids[gi] == q_pid and g_cams[gi] == q_cam:
                expected.append((gi, "junk", None))
                continue
            rank += 1
            expected.append((gi, "match" if g_pids[gi] == q_pid else "wrong", rank))
            if rank == 4:
                break
        assert len(row.entries) == len(expected)
        for ax, (gi, status, rank) in zip(axes[1:], expected):
            np.testing.assert_array_equal(ax.images[0].get_array(), image(10 * int(gi)))
            colour = STATUS_STYLE[status][0]
            assert {s.get_edgecolor() for s in ax.spines.values()} == {to_rgba(colour)}
            head = "junk" if rank is None else f"#{rank}"
            assert ax.get_title().startswith(f"{head}\nid {g_pids[gi]} cam {g_cams[gi]}\n")
            assert f"d={distances[r, gi]:.3g}" in ax.get_title()
        for ax in axes[1 + len(expected) :]:
            assert not ax.images  # unused cells stay empty


def test_choose_records_is_seeded():
    from abdnet.viz.figures import choose_records

    recs = list(range(50))
    a, b, c = choose_records(recs, 7, 3), choose_records(recs, 7, 3), choose_records(recs, 7, 4)
    assert a == b and a != c and len(set(a)) == 7 and a == sorted(a)
    assert choose_records(recs[:5], 7, 0) == recs[:5]
