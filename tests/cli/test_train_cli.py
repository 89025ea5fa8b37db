"""abdnet train / eval / demo command lines (small and in-process)."""

import json

import numpy as np
import pytest
import torch

from abdnet.cli.main import main
from abdnet.config import config_from_dict, save_config

SMALL = {
    "model": {
        "preset": "paper",
        "backbone": "resnet18",
        "global_dim": 32,
        "attentive_dim": 32,
        "reduction_dim": 32,
        "ow_scope": "stem",
    },
    "data": {
        "name": "synthetic",
        "synthetic": {"ids": 8, "cams": 2, "per_id": 4, "height": 64, "width": 32},
        "height": 64,
        "width": 32,
        "batch_size": 8,
        "num_instances": 4,
        "workers": 0,
    },
    "train": {
        "frozen_epochs": 0,
        "epochs": 1,
        "device": "cpu",
        "precision": "fp32",
        "eval_every": 0,
    },
}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    cfg_file = tmp / "small.yaml"
    save_config(config_from_dict(SMALL), cfg_file)
    run = tmp / "run"
    assert main(["train", "--config", str(cfg_file), "--out", str(run), "--no-progress"]) == 0
    return run


def test_train_writes_run_folder(small_run):
    assert (small_run / "config.yaml").is_file()
    assert (small_run / "checkpoints" / "last" / "model.safetensors").is_file()
    lines = (small_run / "metrics.jsonl").read_text().splitlines()
    record = json.loads(lines[-1])
    assert record["epoch"] == 1 and set(record["loss"]) == {"total", "xent", "triplet", "of", "ow"}
    assert 0.0 <= record["test"]["mAP"] <= 1.0
    assert any((small_run / "tb").iterdir())  # TensorBoard event file


def _brute_force_map(qf, gf, qp, gp, qc, gc):
    # Market-1501 protocol by hand: drop same-pid-same-camera gallery items, AP over matches
    aps, top1 = [], []
    for i in range(len(qf)):
        d = ((gf - qf[i]) ** 2).sum(1)
        keep = ~((gp == qp[i]) & (gc == qc[i]))
        order = np.argsort(d[keep], kind="stable")
        match = (gp[keep][order] == qp[i]).astype(float)
        if match.sum() == 0:
            continue
        hits = np.cumsum(match)
        aps.append(float((hits / np.arange(1, len(match) + 1))[match == 1].mean()))
        top1.append(match[0])
    return float(np.mean(aps)), float(np.mean(top1)), len(aps)


def test_eval_json_matches_brute_force(small_run, capsys):
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(small_run), "--json", "--device", "cpu"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert {"mAP", "mINP", "rank1", "rank5", "rank10", "num_query", "num_gallery"} <= set(got)

    from abdnet.data import build_dataset, build_test_transform
    from abdnet.models.io import load_model

    loaded = load_model(small_run)
    ds = build_dataset(loaded.config.data)
    tf = build_test_transform(loaded.config.data)
    model = loaded.model.eval()
    with torch.no_grad():
        feats = {
            name: torch.stack(
                [model(tf(ds.read_image(r))[None]).embedding[0] for r in recs]
            ).numpy()
            for name, recs in (("q", ds.query), ("g", ds.gallery))
        }
    qp, gp = np.array([r.pid for r in ds.query]), np.array([r.pid for r in ds.gallery])
    qc, gc = np.array([r.camid for r in ds.query]), np.array([r.camid for r in ds.gallery])
    mAP, rank1, valid = _brute_force_map(feats["q"], feats["g"], qp, gp, qc, gc)
    assert got["mAP"] == pytest.approx(mAP, abs=1e-5)
    assert got["rank1"] == pytest.approx(rank1, abs=1e-9)
    assert got["num_query_used"] == valid and got["num_query"] == len(ds.query)
    assert got["num_gallery"] == len(ds.gallery)


def test_bad_override_names_the_key(tmp_path, capsys):
    cfg_file = tmp_path / "c.yaml"
    save_config(config_from_dict(SMALL), cfg_file)
    rc = main(
        ["train", "--config", str(cfg_file), "--out", str(tmp_path / "r"), "--set", "optim.lrr=1"]
    )
    assert rc == 2 and "optim.lrr" in capsys.readouterr().err


def test_resume_rejects_config_and_missing_run(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--config", "x.yaml"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "none")]) == 2
    assert "config.yaml" in capsys.readouterr().err


def test_train_help_lists_options(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for opt in ("--config", "--out", "--resume", "--data", "--set"):
        assert opt in out


@pytest.mark.slow
def test_demo_writes_metrics_and_report(tmp_path, capsys):
    # the demo's plumbing on a minute problem (the real demo's numbers are checked by hand)
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--no-progress"]
    for kv in (
        "data.synthetic.ids=8", "data.synthetic.cams=2", "data.synthetic.per_id=4",
        "data.height=64", "data.width=32", "data.batch_size=8", "model.global_dim=32",
        "model.attentive_dim=32", "model.reduction_dim=32", "train.frozen_epochs=0",
        "train.epochs=1", "train.precision=fp32",
    ):  # fmt: skip
        args += ["--set", kv]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("abdnet", "untrained"):
        assert 0.0 <= metrics[key]["mAP"] <= 1.0 and 0.0 <= metrics[key]["rank1"] <= 1.0
    report = (out / "report.md").read_text()
    assert f"{100 * metrics['abdnet']['mAP']:.1f}%" in report
    assert "ABD-Net, trained" in capsys.readouterr().out
    assert main(args) == 0  # a second demo into the same folder replaces its run
