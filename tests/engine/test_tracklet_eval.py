"""Tracklet-to-tracklet evaluation: pooled features checked against a computation by hand
(embed each frame, take the mean, rank, average precision), and ``abdnet eval`` on a fake
MARS tree."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from abdnet.config import Config, DataConfig, EvalConfig
from abdnet.data import TrackletDataset, TrackletRecord, make_tracklet_dataset, read_image
from abdnet.engine import ModelEmbedder, evaluate_tracklets


class MeanColour(torch.nn.Module):
    """An embedding: the mean of each colour channel of the (normalised) image."""

    def forward(self, x):
        return SimpleNamespace(embedding=x.mean(dim=(2, 3)))  # (B, 3)


def frame(path: Path, rgb) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 8), tuple(rgb)).save(path)
    return str(path)


def tracklet(root: Path, name: str, pid: int, cam: int, colours) -> TrackletRecord:
    paths = tuple(frame(root / name / f"{k}.png", c) for k, c in enumerate(colours))
    return TrackletRecord(paths, pid, cam)


@pytest.fixture
def three(tmp_path) -> TrackletDataset:
    """One query (red), its true match (reddish frames, a red mean) and an impostor whose
    first frame is the query's red but whose mean is grey."""
    q = tracklet(tmp_path, "q", 1, 0, [(255, 0, 0), (250, 5, 0)])
    match = tracklet(tmp_path, "g1", 1, 1, [(255, 90, 0), (255, 0, 90), (240, 10, 10)])
    impostor = tracklet(tmp_path, "g2", 2, 1, [(255, 0, 0), (0, 255, 255)])
    train = tracklet(tmp_path, "t", 9, 0, [(1, 2, 3)])
    return make_tracklet_dataset("three", str(tmp_path), [train], [q], [impostor, match])


def embedder(**kw) -> ModelEmbedder:
    return ModelEmbedder(MeanColour(), config=Config(data=DataConfig(height=8, width=4)), **kw)


def by_hand(emb: ModelEmbedder, ds: TrackletDataset, frames: int, normalize: bool):
    """Mean of each tracklet's chosen frames through the network, squared L2, AP per query."""

    def pooled(r):
        idx = range(len(r)) if not frames else np.round(np.linspace(0, len(r) - 1, frames))
        xs = torch.stack([emb.transform(read_image(r.paths[int(i)])) for i in idx])
        f = emb.model(xs).embedding.mean(0)
        return torch.nn.functional.normalize(f, dim=0) if normalize else f

    g = torch.stack([pooled(r) for r in ds.gallery])
    aps, r1 = [], []
    for q in ds.query:
        d = ((g - pooled(q)) ** 2).sum(1).numpy()
        valid = [i for i, r in enumerate(ds.gallery) if not (r.pid == q.pid and r.camid == q.camid)]
        order = sorted(valid, key=lambda i: d[i])
        hits = np.array([ds.gallery[i].pid == q.pid for i in order])
        r1.append(float(hits[0]))
        aps.append(np.mean([hits[: k + 1].mean() for k in np.flatnonzero(hits)]))
    return float(np.mean(aps)), float(np.mean(r1))


@pytest.mark.parametrize("normalize", [False, True])
def test_pooled_tracklets_rank_as_computed_by_hand(three, normalize):
    cfg = EvalConfig(normalize=normalize, verification_fars=())
    emb = embedder()
    every = evaluate_tracklets(emb, three, cfg)
    first = evaluate_tracklets(emb, three, cfg, frames=1)
    for result, frames in ((every, 0), (first, 1)):
        m_ap, r1 = by_hand(emb, three, frames, normalize)
        assert result.mAP == pytest.approx(m_ap) and result.rank1 == pytest.approx(r1)
        assert result.num_query == 1 and result.num_gallery == 2
    # the mean of every frame finds the match; the first frame alone picks the impostor
    assert every.rank1 == 1.0 and every.mAP == 1.0
    assert first.rank1 == 0.0 and first.mAP == pytest.approx(0.5)


def test_pooling_is_the_same_in_chunks_and_with_flip(three, monkeypatch):
    import abdnet.engine.evaluate as E

    cfg = EvalConfig(verification_fars=())
    whole = evaluate_tracklets(embedder(flip=True), three, cfg)
    monkeypatch.setattr(E, "_POOL_CHUNK", 2)  # one tracklet per embed call
    chunked = evaluate_tracklets(embedder(flip=True), three, cfg)
    assert chunked.mAP == whole.mAP and np.allclose(chunked.cmc, whole.cmc)


def test_many_tracklets_match_the_image_evaluator_on_their_means(tmp_path):
    # 6 people x 2 cameras, random frames: tracklet evaluation equals the image evaluator
    # run on images whose embeddings are the tracklets' means (one solid colour each)
    from abdnet.evaluation import evaluate_features

    rng = np.random.default_rng(1)
    recs = []
    for pid in range(1, 7):
        base = rng.integers(30, 220, 3)
        for cam in range(2):
            cols = [np.clip(base + rng.integers(-60, 60, 3), 0, 255) for _ in range(3)]
            recs.append(tracklet(tmp_path, f"{pid}-{cam}", pid, cam, cols))
    ds = make_tracklet_dataset(
        "six", str(tmp_path), recs[:2], [r for r in recs if r.camid == 0], recs
    )
    emb = embedder()
    got = evaluate_tracklets(emb, ds, EvalConfig(verification_fars=()))

    def mean(r):
        xs = torch.stack([emb.transform(read_image(p)) for p in r.paths])
        return emb.model(xs).embedding.mean(0)

    qf = torch.stack([mean(r) for r in ds.query])
    gf = torch.stack([mean(r) for r in ds.gallery])
    ids = lambda rs, a: np.array([getattr(r, a) for r in rs])  # noqa: E731
    ref = evaluate_features(
        qf, gf, ids(ds.query, "pid"), ids(ds.gallery, "pid"), ids(ds.query, "camid"),
        ids(ds.gallery, "camid"),
    )  # fmt: skip
    assert got.mAP == pytest.approx(ref.mAP) and np.allclose(got.cmc, ref.cmc)
    assert 0.0 < got.mAP < 1.0 or got.mAP == 1.0


def test_abdnet_eval_scores_a_mars_tree_tracklet_to_tracklet(trained_run, tmp_path, capsys):
    from abdnet.cli.main import main

    from ..data.test_video_parsers import make_mars

    root = make_mars(tmp_path / "MARS")
    assert main(["eval", "--checkpoint", str(trained_run), "--data", str(root), "--json",
                 "--frames", "2"]) == 0  # fmt: skip
    d = json.loads(capsys.readouterr().out)
    assert d["unit"] == "tracklet" and d["frames_per_tracklet"] == 2
    assert d["num_query"] == 2 and d["num_gallery"] == 3
    assert 0.0 < d["mAP"] <= 1.0
    thr = tmp_path / "threshold.json"
    args = ["eval", "--checkpoint", str(trained_run), "--data", str(root), "--far", "0.5"]
    assert main([*args, "--threshold-out", str(thr)]) == 0
    out = capsys.readouterr().out
    assert "mars: 2 queries, 3 gallery tracklets" in out and "every frame" in out
    # the tracklet pairs' threshold, as calibrate writes it: 2 genuine and 3 impostor
    # cross-camera pairs (query 5 and gallery 7 share camera 0)
    doc = json.loads(thr.read_text())
    assert doc["num_genuine_pairs"] == 2 and doc["num_impostor_pairs"] == 3
    # the video options on an image data set are refused, not ignored
    assert main(["eval", "--checkpoint", str(trained_run), "--frames", "4"]) != 0
    assert "--frames / --split: only for a video data set" in capsys.readouterr().err
