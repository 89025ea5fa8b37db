import pytest

from abdnet.config import (
    MODEL_PRESETS,
    Config,
    ConfigError,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
    model_config,
)


def test_defaults_round_trip(tmp_path):
    cfg = Config()
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


def test_preset_is_the_base_of_model_keys():
    cfg = config_from_dict({"model": {"preset": "official", "cam": False}})
    assert cfg.model.arch == "official"
    assert cfg.model.cam is False
    assert cfg.model.of_positions == MODEL_PRESETS["official"].of_positions


def test_overrides_parse_yaml_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\n")
    cfg = load_config(path, ["optim.lr=0.01", "optim.milestones=[5, 7]", "model.pam=false"])
    assert cfg.train.epochs == 3
    assert cfg.optim.lr == 0.01
    assert cfg.optim.milestones == (5, 7)
    assert cfg.model.pam is False


@pytest.mark.parametrize(
    "override, key",
    [
        ("optim.lrr=1", "optim.lrr"),
        ("train.epochs=abc", "train.epochs"),
        ("model.cam=3", "model.cam"),
        ("nosuch.x=1", "nosuch"),
        ("data.mean=0.5", "data.mean"),
    ],
)
def test_bad_keys_and_types_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_model_config_helper_and_dict_form():
    m = model_config("baseline", backbone="resnet18")
    assert (m.cam, m.pam, m.shallow_cam, m.backbone) == (False, False, False, "resnet18")
    with pytest.raises(ConfigError, match="nosuchfield"):
        model_config("paper", nosuchfield=1)
    assert config_to_dict(m)["of_positions"] == []
