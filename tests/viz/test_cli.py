"""``abdnet viz KIND`` end to end on a tiny model and a folder written like ``abdnet synth``."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from abdnet.cli.main import main
from abdnet.config import SyntheticConfig, load_config
from abdnet.data import build_test_transform, open_dataset, write_synthetic
from abdnet.models import build_model_from_config
from abdnet.models.io import save_model
from abdnet.viz.figures import choose_records

TINY = [
    "model.backbone=resnet18",
    "model.global_dim=16",
    "model.attentive_dim=16",
    "model.reduction_dim=16",
    "data.height=64",
    "data.width=32",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("viz")
    data = root / "synth"
    write_synthetic(data, SyntheticConfig(ids=8, cams=2, per_id=3, height=64, width=32))
    runs = []
    for preset in ("paper", "baseline"):
        cfg = load_config(None, TINY + [f"model.preset={preset}"])
        torch.manual_seed(0)
        model = build_model_from_config(cfg.model, 4)
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.data.fill_(0.5)
        save_model(root / preset, model, cfg)
        runs.append(root / preset)
    return root, data, runs


def _png_size(path):
    with Image.open(path) as im:
        return im.size


def _by_hand(run, data):
    """Independently of abdnet.viz: the model's embeddings and logits of every test image by
    a plain forward pass, the evaluation's distances, and the records by path."""
    from abdnet.models.io import load_model

    loaded = load_model(run)
    model = loaded.model.eval()
    ds = open_dataset(str(data))
    gallery = [r for r in ds.gallery if r.pid >= 0]  # pid -1: junk, not in the gallery
    transform = build_test_transform(loaded.config.data)
    ev = loaded.config.eval
    assert ev.metric == "euclidean" and not ev.flip

    def forward(records):
        with torch.no_grad():
            out = [model(transform(ds.read_image(r))[None]) for r in records]
        emb = torch.cat([o.embedding for o in out]).double()
        if ev.normalize:
            emb = torch.nn.functional.normalize(emb, dim=1)
        return emb, [torch.stack([x[0] for x in o.logits]).sum(0) for o in out]

    by_path = {r.path: r for r in [*ds.query, *ds.gallery]}
    return by_path, gallery, forward


def _brute_force_ranking(dist_row, q, gallery):
    """Gallery indices by distance, same id + same camera left out (the protocol's junk)."""
    order = np.argsort(dist_row, kind="stable")
    return [int(i) for i in order if not (gallery[i].pid == q.pid and gallery[i].camid == q.camid)]


@pytest.mark.parametrize("kind", ["attention", "correlation", "tsne", "ranks"])
def test_each_kind_writes_png_and_json(setup, kind, capsys):
    root, data, runs = setup
    out = root / f"{kind}.png"
    args = [
        "viz",
        kind,
        "--checkpoint",
        str(runs[0]),
        "--compare",
        str(runs[1]),
        "--data",
        str(data),
    ]
    args += ["--out", str(out), "--json", "--seed", "1"]
    if kind in ("attention", "correlation"):
        args += ["--images", "3"]
    if kind == "attention":
        args += ["--raw"]
    rc = main(args)
    assert rc == 0
    w, h = _png_size(out)
    assert w >= 200 and h >= 200
    numbers = json.loads(out.with_suffix(".json").read_text())
    assert numbers["kind"] == kind and len(numbers["models"]) == 2
    for run, m in zip(runs, numbers["models"]):
        by_path, gallery, forward = _by_hand(run, data)
        g_emb, _ = forward(gallery)
        if kind == "ranks":
            queries = [by_path[q["path"]] for q in numbers["queries"]]
            q_emb, _ = forward(queries)
            dist = torch.cdist(q_emb, g_emb).pow(2).numpy()
            for i, (q, got) in enumerate(zip(queries, m["queries"])):
                assert (got["pid"], got["camid"]) == (q.pid, q.camid)
                ranked = [e for e in got["entries"] if e["rank"] is not None]
                assert [e["rank"] for e in ranked] == list(range(1, len(ranked) + 1))
                expected = _brute_force_ranking(dist[i], q, gallery)[: len(ranked)]
                assert [e["index"] for e in ranked] == expected
                for e in got["entries"]:
                    assert e["distance"] == pytest.approx(dist[i, e["index"]], abs=1e-4)
                    g = gallery[e["index"]]
                    assert (e["pid"], e["camid"]) == (g.pid, g.camid)
                    assert e["status"] == (
                        "junk"
                        if (g.pid, g.camid) == (q.pid, q.camid)
                        else "match"
                        if g.pid == q.pid
                        else "wrong"
                    )
        elif kind == "attention":
            queries = [by_path[q["path"]] for q in numbers["images"]]
            q_emb, logits = forward(queries)
            dist = torch.cdist(q_emb, g_emb).pow(2).numpy()
            assert m["predicted_class"] == [int(x.argmax()) for x in logits]
            for i, (q, top) in enumerate(zip(queries, m["top1"])):
                best = _brute_force_ranking(dist[i], q, gallery)[0]
                assert top["gallery"] == best and top["correct"] == (gallery[best].pid == q.pid)
                assert top["distance"] == pytest.approx(dist[i, best], abs=1e-4)
            for maps in (m["gradcam"], m["ram"], *m["raw"].values()):
                maps = np.asarray(maps)
                assert maps.shape[0] == len(queries) and maps.min() >= 0 and maps.max() <= 1
        elif kind == "tsne":
            records = [by_path[p] for p in numbers["images"]]
            # every query and gallery image of the chosen identities, once
            ids = set(numbers["ids"])
            query_ids = {r.pid for r in open_dataset(str(data)).query if r.pid >= 0}
            assert ids <= query_ids and len(ids) == min(10, len(query_ids))  # --ids: 10
            assert sorted(numbers["images"]) == sorted(
                p for p, r in by_path.items() if r.pid in ids
            )
            assert m["pids"] == [r.pid for r in records]
            assert m["camids"] == [r.camid for r in records]
            assert np.asarray(m["points"]).shape == (len(records), 2)
    capsys.readouterr()


def test_correlation_value_matches_manual_forward_and_numpy(setup, capsys):
    root, data, runs = setup
    out = root / "corr_one.png"
    assert (
        main(
            [
                "viz",
                "correlation",
                "--checkpoint",
                str(runs[0]),
                "--data",
                str(data),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    value = float(re.search(r"mean \|corr\| ([0-9.]+) \(image 0\)", printed).group(1))
    # independent: the attentive map [Ta, CAM(Ta), PAM(Ta)] by calling the network's pieces
    from abdnet.models.io import load_model

    loaded = load_model(runs[0])
    model = loaded.model.eval()
    ds = open_dataset(str(data))
    rec = choose_records(ds.query, 16, 0)[0]
    x = build_test_transform(loaded.config.data)(ds.read_image(rec))[None]
    with torch.no_grad():
        ta = model.reduction(model.attentive_deep(model.middle(model.shallow_cam(model.stem(x)))))
        fmap = torch.cat([ta, model.cam(ta), model.pam(ta)], dim=1)[0].double()
    flat = fmap.reshape(fmap.shape[0], -1).numpy()  # (C, N)
    ok = flat.std(axis=1) > 1e-6 * flat.std(axis=1).max()
    corr = np.abs(np.corrcoef(flat[ok]))
    iu = np.triu_indices(corr.shape[0], 1)
    assert value == pytest.approx(corr[iu].mean(), abs=1e-4)


def test_data_as_builtin_name_and_bad_kind(setup, capsys):
    root, _data, runs = setup
    out = root / "corr_builtin.png"
    assert (
        main(
            [
                "viz",
                "correlation",
                "--checkpoint",
                str(runs[1]),
                "--data",
                "synthetic",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "mean |corr|" in capsys.readouterr().out
    # an existing --out is refused before anything is loaded
    assert main(["viz", "correlation", "--checkpoint", str(runs[1]), "--out", str(out)]) == 2
    assert f"--out {out}: already exists" in capsys.readouterr().err
    fresh = root / "corr_fresh.png"
    assert (
        main(["viz", "correlation", "--checkpoint", str(root / "missing"), "--out", str(fresh)])
        == 2
    )
    assert "missing" in capsys.readouterr().err and not fresh.exists()
