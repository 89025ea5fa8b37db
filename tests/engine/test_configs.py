from pathlib import Path

import pytest
import yaml

from abdnet.config import Config, config_to_dict, load_config

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


def test_official_config_is_the_readme_recipe():
    c = load_config(CONFIGS / "official.yaml")
    assert c.model.arch == "official"
    assert (c.train.frozen_epochs, c.train.epochs, c.train.of_start_epoch) == (10, 80, 23)
    assert c.optim.milestones == (20, 40) and c.data.translate_p == 0.5


def test_ablation_configs_agree_with_the_ablation_module():
    from abdnet.ablation import VARIANTS, variant_config

    paper = load_config(CONFIGS / "paper.yaml")
    for name in ABLATION:
        assert load_config(CONFIGS / "ablation" / f"{name}.yaml") == variant_config(
            VARIANTS[name], paper
        )
