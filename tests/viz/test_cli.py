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
    if kind == "ranks":
        for m in numbers["models"]:
            for q in m["queries"]:
                ranked = [e for e in q["entries"] if e["rank"] is not None]
                assert [e["rank"] for e in ranked] == list(range(1, len(ranked) + 1))
                # same id + same camera is never ranked (the protocol's junk)
                assert not any(e["pid"] == q["pid"] and e["camid"] == q["camid"] for e in ranked)
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
