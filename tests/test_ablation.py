"""Table 1 variants: each config builds the intended network, the YAML rows agree, the
tables are well formed, and an ablation resumes without retraining."""

import csv
import json
import re
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from abdnet.ablation import (
    TABLE1_VARIANTS,
    VARIANTS,
    VariantResult,
    read_result,
    resolve_variants,
    run_ablation,
    variant_config,
    write_tables,
)
from abdnet.config import config_to_dict, load_config
from abdnet.models import CAM, PAM, EigenLayer, build_model_from_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: faster than threads fighting for shared cores
    yield
    torch.set_num_threads(before)


# name -> (CAM modules, PAM modules, O.F. positions, O.W. on, SVD layer, triplet)
EXPECTED = {
    "baseline": (0, 0, [], False, False, False),
    "pam": (0, 1, [], False, False, False),
    "cam": (2, 0, [], False, False, False),
    "pam_cam": (2, 1, [], False, False, False),
    "of": (0, 0, ["shallow", "reduction"], False, False, False),
    "ow": (0, 0, [], True, False, False),
    "of_ow": (0, 0, ["shallow", "reduction"], True, False, False),
    "svd": (0, 0, [], False, True, False),
    "abdnet_xe": (2, 1, ["shallow", "reduction", "cam", "pam"], True, False, False),
    "abdnet": (2, 1, ["shallow", "reduction", "cam", "pam"], True, False, True),
}


def _base():
    return load_config(
        None,
        [
            "model.backbone=resnet18",
            "model.global_dim=16",
            "model.attentive_dim=16",
            "model.reduction_dim=16",
        ],
    )


def _resnet18_convs() -> tuple[int, int]:
    """Conv layers of torchvision's resnet18 and of its layer4 (res_conv_5)."""
    net = torchvision.models.resnet18()
    total = sum(isinstance(m, nn.Conv2d) for m in net.modules())
    return total, sum(isinstance(m, nn.Conv2d) for m in net.layer4.modules())


def test_ten_table1_rows_named_as_in_the_paper():
    labels = [v.label for v in TABLE1_VARIANTS]
    assert len(labels) == 10 and labels[0] == "baseline (XE)" and labels[-1] == "ABD-Net"
    assert set(EXPECTED) == {v.name for v in TABLE1_VARIANTS}
    assert resolve_variants(None) == list(TABLE1_VARIANTS)
    assert len(resolve_variants(["all"])) == len(VARIANTS) > 10
    with pytest.raises(ValueError, match="--variants: unknown variant 'nope'"):
        resolve_variants(["nope"])


@pytest.mark.parametrize("name", list(EXPECTED))
def test_variant_builds_intended_model(name):
    n_cam, n_pam, of_pos, ow, svd, triplet = EXPECTED[name]
    base = _base()
    cfg = variant_config(name, base)
    assert cfg.data == base.data and cfg.optim == base.optim and cfg.train == base.train
    assert cfg.model.backbone == "resnet18" and cfg.model.dropout > 0  # footnote: dropout on
    assert (cfg.loss.beta_tr > 0) == triplet
    torch.manual_seed(0)
    model = build_model_from_config(cfg.model, 4)
    assert sum(isinstance(m, CAM) for m in model.modules()) == n_cam
    assert sum(isinstance(m, PAM) for m in model.modules()) == n_pam
    assert sum(isinstance(m, EigenLayer) for m in model.modules()) == int(svd)
    total, layer4 = _resnet18_convs()
    # O.W. on: every trunk conv, res_conv_5 counted twice (two branches)
    assert len(model.ow_weights()) == (total + layer4 if ow else 0)
    model.train()
    out = model(torch.randn(2, 3, 64, 32))
    assert [name for name, _, _ in out.features.of_terms(cfg.model.of_positions)] == of_pos


@pytest.mark.parametrize("name", list(EXPECTED))
def test_yaml_rows_agree_with_the_variant_table(name):
    path = ROOT / "configs" / "ablation" / f"{name}.yaml"
    from_yaml = load_config(path)
    expected = variant_config(name, load_config(ROOT / "configs" / "paper.yaml"))
    assert config_to_dict(from_yaml.model) == config_to_dict(expected.model)
    assert config_to_dict(from_yaml.loss) == config_to_dict(expected.loss)


def _result(name, rank1, paper=True):
    v = VARIANTS[name]
    return VariantResult(
        name=name,
        label=v.label,
        rank1=rank1,
        rank5=0.9,
        rank10=0.95,
        mAP=0.5,
        mINP=0.25,
        train_seconds=12.5,
        run_dir=f"/x/{name}",
        paper=v.paper if paper else None,
    )


def test_tables_well_formed(tmp_path):
    paths = write_tables([_result("baseline", 0.8125), _result("abdnet", 0.9)], tmp_path)
    lines = paths["md"].read_text().splitlines()
    rows = [ln for ln in lines if ln.startswith("| ")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header[:8] == [
        "variant",
        "name",
        "rank1",
        "rank5",
        "rank10",
        "mAP",
        "mINP",
        "train time (s)",
    ]
    body = [[c.strip() for c in r.strip("|").split("|")] for r in rows[1:]]
    assert [b[0] for b in body] == ["baseline (XE)", "ABD-Net"]
    assert body[0][2:8] == ["81.25", "90.00", "95.00", "50.00", "25.00", "12.5"]
    assert body[1][8:] == ["95.60", "88.28", "89.00", "78.59"]  # the paper's Table 1 row
    with paths["csv"].open() as fh:
        table = list(csv.reader(fh))
    assert table[0] == header and [r[:8] for r in table[1:]] == [b[:8] for b in body]
    from PIL import Image

    with Image.open(paths["png"]) as im:
        assert min(im.size) >= 200


def _tiny_base():
    return load_config(
        ROOT / "configs" / "tiny.yaml",
        [
            "model.global_dim=16",
            "model.attentive_dim=16",
            "model.reduction_dim=16",
            "data.height=64",
            "data.width=32",
            "data.synthetic.ids=8",
            "data.synthetic.height=64",
            "data.synthetic.width=32",
            "train.frozen_epochs=1",
            "train.epochs=1",
        ],
    )


@pytest.mark.slow
def test_two_variant_ablation_writes_tables_and_resumes(tmp_path):
    from abdnet.engine import train

    calls: list[tuple[str, bool]] = []

    def counting_train(cfg, run_dir, resume):
        calls.append((Path(run_dir).name, resume))
        return train(cfg, run_dir, resume=resume)

    base = _tiny_base()
    # An interrupted variant: one of its two epochs done, a checkpoint written.
    train(variant_config("pam", base), tmp_path / "pam", max_epochs=1)
    results = run_ablation(base, tmp_path, ["baseline", "pam"], train_fn=counting_train)
    assert calls == [("baseline", False), ("pam", True)]  # the unfinished one resumed
    for r in results:
        # the numbers are the trainer's own test evaluation of the last epoch
        lines = (tmp_path / r.name / "metrics.jsonl").read_text().splitlines()
        last = json.loads(lines[-1])
        assert last["epoch"] == 2
        # training time: the epochs' own times, both sessions of the resumed run
        per_epoch = {json.loads(ln)["epoch"]: json.loads(ln)["seconds"] for ln in lines}
        assert r.train_seconds == pytest.approx(sum(per_epoch.values()))
        assert (r.rank1, r.mAP, r.mINP) == (
            last["test"]["rank1"],
            last["test"]["mAP"],
            last["test"]["mINP"],
        )
    md = (tmp_path / "table.md").read_text()
    rows = [ln for ln in md.splitlines() if ln.startswith("| baseline")]
    assert len(rows) == 2 and all(re.search(r"\| \d+\.\d\d \|", row) for row in rows)
    stamp = (tmp_path / "baseline" / "ablation_result.json").stat().st_mtime_ns

    again = run_ablation(base, tmp_path, ["baseline", "pam"], train_fn=counting_train)
    assert len(calls) == 2  # nothing retrained
    assert (tmp_path / "baseline" / "ablation_result.json").stat().st_mtime_ns == stamp
    assert [r.to_json() for r in again] == [r.to_json() for r in results]
    assert read_result(tmp_path / "pam").label == "baseline (XE) + PAM"


def test_cli_lists_variants_and_names_a_bad_one(capsys):
    from abdnet.cli.main import main

    cfg = str(ROOT / "configs" / "tiny.yaml")
    assert main(["ablate", "--config", cfg, "--out", "unused", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == [v.name for v in TABLE1_VARIANTS]
    assert main(["ablate", "--config", cfg, "--out", "unused", "--variants", "pam", "bogus"]) == 2
    assert "--variants: unknown variant 'bogus'" in capsys.readouterr().err
