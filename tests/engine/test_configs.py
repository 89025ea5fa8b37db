from pathlib import Path

import pytest
import torch
import yaml

from abdnet.config import Config, config_to_dict, load_config
from abdnet.engine.schedule import TransferSchedule
from abdnet.losses import build_objective
from abdnet.models import build_model

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SHIPPED = sorted(CONFIGS.rglob("*.yaml"))
ABLATION = ["baseline", "pam", "cam", "pam_cam", "of", "ow", "of_ow", "svd", "abdnet_xe", "abdnet"]


def test_every_table1_row_has_a_config():
    assert sorted(p.stem for p in (CONFIGS / "ablation").glob("*.yaml")) == sorted(ABLATION)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_config_loads_and_round_trips(path, tmp_path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)

    # every key the file sets is really used (nothing silently falls back to a default)
    def check(node, obj, where):
        for k, v in node.items():
            got = getattr(obj, k)
            if isinstance(v, dict):
                check(v, got, f"{where}.{k}")
            else:
                assert config_to_dict(got) == v, f"{path.name}: {where}.{k}"

    check(yaml.safe_load(path.read_text()), cfg, "")
    out = tmp_path / "c.yaml"
    out.write_text(yaml.safe_dump(config_to_dict(cfg)))
    assert load_config(out) == cfg


def test_paper_config_is_section_4_2():
    c = load_config(CONFIGS / "paper.yaml")
    assert (c.data.height, c.data.width) == (384, 128)
    assert (c.data.batch_size, c.data.num_instances) == (64, 4)
    assert c.optim.optimizer == "adam" and c.optim.lr == 3e-4 and c.optim.milestones == (30, 40)
    assert (c.train.frozen_epochs, c.train.epochs) == (10, 60)
    assert (c.loss.beta_tr, c.loss.beta_of, c.loss.beta_ow, c.loss.margin) == (0.1, 1e-6, 1e-3, 1.2)
    assert c.data.flip_p > 0 and c.data.erasing_p > 0 and c.model.pretrained == "imagenet"


def test_official_yaml_is_the_authors_recipe():
    cfg = load_config(CONFIGS / "official.yaml")
    m, d, lo, o, t, e = cfg.model, cfg.data, cfg.loss, cfg.optim, cfg.train, cfg.eval
    # their network, O.F. positions, O.W. reaching the stem conv only
    assert (m.preset, m.arch, m.backbone, m.pretrained) == (
        "official",
        "official",
        "resnet50",
        "imagenet",
    )
    assert m.of_positions == ("shallow", "before", "cam", "pam", "sum")
    assert m.ow_scope == "stem"
    # their estimator and betas, CE-LS + 0.1 x triplet (margin 1.2)
    assert lo.svdo_form == "official"
    assert (lo.beta_of, lo.beta_ow) == (1e-6, 1e-3)
    assert (lo.label_smooth, lo.beta_tr, lo.margin) == (0.1, 0.1, 1.2)
    # 384x128, batch 64 = 16 ids x 4, translate p=0.5 + flip + random erasing
    assert (d.height, d.width, d.batch_size, d.num_instances) == (384, 128, 64, 4)
    assert (d.translate_p, d.flip_p, d.erasing_p, d.color_jitter) == (0.5, 0.5, 0.5, False)
    # Adam 3e-4, wd 5e-4, x0.1 at 20 and 40; 10 frozen + 80 epochs; O.F. from epoch 23
    assert (o.optimizer, o.lr, o.weight_decay, o.milestones, o.gamma) == (
        "adam",
        3e-4,
        5e-4,
        (20, 40),
        0.1,
    )
    assert (t.frozen_epochs, t.epochs, t.of_start_epoch, t.ow_start_epoch) == (10, 80, 23, 0)
    assert t.reset_optimizer and t.precision == "fp32"
    # flip-averaged raw embeddings, squared Euclidean
    assert e.flip and e.flip_mode == "raw" and not e.normalize and e.metric == "euclidean"


def test_official_schedule_counts_epochs_after_the_frozen_ones():
    cfg = load_config(CONFIGS / "official.yaml")
    plans = list(TransferSchedule(cfg.train, cfg.optim, cfg.loss))
    assert len(plans) == 90
    frozen = plans[:10]
    assert all(p.freeze_backbone and not p.use_of and not p.use_ow for p in frozen)
    assert all(p.lr == 3e-4 for p in frozen)
    assert plans[10].reset_optimizer and plans[10].use_ow and not plans[10].use_of
    assert not plans[10 + 22].use_of and plans[10 + 23].use_of and plans[-1].use_of
    assert plans[10 + 19].lr == 3e-4
    assert abs(plans[10 + 20].lr - 3e-5) < 1e-12 and abs(plans[10 + 40].lr - 3e-6) < 1e-12


def test_official_recipe_regularizes_the_stem_with_the_authors_estimators():
    # The recipe's model and loss, on a ResNet-18 without downloads to stay fast.
    cfg = load_config(
        CONFIGS / "official.yaml", ["model.backbone=resnet18", "model.pretrained=none"]
    )
    model = build_model(
        "official",
        num_classes=4,
        backbone="resnet18",
        of_positions=cfg.model.of_positions,
        ow_scope=cfg.model.ow_scope,
    ).train()
    (stem,) = model.ow_weights()
    assert stem.shape == (64, 3, 7, 7)
    out = model(torch.randn(4, 3, 64, 32))
    weights = {name: w for name, _, w in out.features.of_terms(cfg.model.of_positions)}
    assert weights["shallow"] == 0.01 and weights["before"] == 0.5  # their 0.01, stripe mean
    torch.manual_seed(0)
    terms = build_objective(cfg, num_classes=4)(out, torch.tensor([0, 0, 1, 1]), [stem])
    assert terms.of.item() > 0 and terms.ow.item() > 0


def test_ablation_configs_agree_with_the_ablation_module():
    from abdnet.ablation import VARIANTS, variant_config

    paper = load_config(CONFIGS / "paper.yaml")
    for name in ABLATION:
        assert load_config(CONFIGS / "ablation" / f"{name}.yaml") == variant_config(
            VARIANTS[name], paper
        )
