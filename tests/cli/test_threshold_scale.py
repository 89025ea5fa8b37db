"""One scale for every threshold: ``abdnet eval`` and ``abdnet calibrate`` of one model on one
data set give the same threshold, in the space of unit vectors, and eval's file serves."""

from __future__ import annotations

import json

import numpy as np
import pytest

from abdnet.cli.main import main
from abdnet.data import open_dataset
from abdnet.gallery import load_threshold
from abdnet.retrieval import FeatureExtractor


def test_eval_and_calibrate_agree(tmp_path, tiny_checkpoint, synth_root, capsys):
    cal, ev = tmp_path / "calibrated.json", tmp_path / "evaluated.json"
    assert main(["calibrate", "--checkpoint", str(tiny_checkpoint), "--data", str(synth_root),
                 "--far", "0.1", "--out", str(cal), "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(tiny_checkpoint), "--data", str(synth_root),
                 "--device", "cpu", "--json", "--far", "0.1",
                 "--threshold-out", str(ev)]) == 0  # fmt: skip
    got = json.loads(capsys.readouterr().out)
    a, b = load_threshold(cal), load_threshold(ev)
    assert b.threshold == pytest.approx(a.threshold, abs=1e-6)
    assert got["threshold@far=1e-01"] == pytest.approx(a.threshold, abs=1e-6)
    assert (b.tar, b.far_achieved, b.num_genuine, b.num_impostor) == (
        a.tar, a.far_achieved, a.num_genuine, a.num_impostor,
    )  # fmt: skip
    # the same model, so 'serve --threshold' takes either file
    assert b.model.fingerprint == a.model.fingerprint
    assert got["distance"] == "squared_euclidean_l2_normalized" == b.model.space.distance_name
    # the threshold is a squared distance of unit vectors: check it against brute force
    ds = open_dataset(str(synth_root))
    ext = FeatureExtractor(tiny_checkpoint, device="cpu")
    gallery = [r for r in ds.gallery if r.pid >= 0]
    q = ext([ds.read_image(r) for r in ds.query]).numpy().astype(np.float64)
    g = ext([ds.read_image(r) for r in gallery]).numpy().astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    d = ((q[:, None] - g[None]) ** 2).sum(-1)
    qp, gp = np.array([r.pid for r in ds.query]), np.array([r.pid for r in gallery])
    qc, gc = np.array([r.camid for r in ds.query]), np.array([r.camid for r in gallery])
    cross = qc[:, None] != gc[None]
    impostor = d[cross & (qp[:, None] != gp[None])]
    genuine = d[cross & (qp[:, None] == gp[None])]
    assert 0.0 <= b.threshold <= 4.0
    assert (impostor <= b.threshold).mean() <= 0.1 + 1e-12
    assert b.tar == pytest.approx((genuine <= b.threshold).mean(), abs=1e-9)
    # both files hold the stitching point (FAR / 10), the same in both, and it is stricter
    for t in (a, b):
        assert t.threshold_at(0.01) == pytest.approx(a.stitch_threshold, abs=1e-6)
        assert (impostor <= t.stitch_threshold).mean() <= 0.01 + 1e-12
        assert t.stitch_threshold <= t.threshold


def test_eval_prints_the_space(tiny_checkpoint, synth_root, capsys):
    assert main(["eval", "--checkpoint", str(tiny_checkpoint), "--data", str(synth_root),
                 "--device", "cpu", "--no-progress"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "squared L2 on unit vectors (2 - 2 cos)" in text and "TAR@FAR=1e-03" in text
