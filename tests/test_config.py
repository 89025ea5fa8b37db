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


def test_yaml_1_2_numbers_in_files_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-4\n  weight_decay: 5E-4\ntrain:\n  epochs: 010\n")
    cfg = load_config(path, ["optim.gamma=1e-1"])
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.gamma) == (1e-4, 5e-4, 0.1)
    assert cfg.train.epochs == 10  # no YAML 1.1 octal
    with pytest.raises(ConfigError, match="expected true/false, got 'yes'"):
        load_config(None, ["eval.flip=yes"])  # YAML 1.2: 'yes' is a string, not a boolean


def test_duplicate_key_is_refused_with_its_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("train:\n  epochs: 3\ntrain:\n  frozen_epochs: 1\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml: line 3: the key 'train' appears twice"):
        load_config(path)
    path.write_text("train:\n  epochs: 3\n  epochs: 4\n")
    with pytest.raises(ConfigError, match="line 3: the key 'epochs' appears twice"):
        load_config(path)


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.num_instances=0", "data.num_instances: expected a value >= 1, got 0"),
        ("optim.lr=.inf", "optim.lr: expected a finite number"),
        ("optim.lr=0", "optim.lr: expected a value > 0"),
        ("model.backbone=vgg16", "model.backbone: expected one of 'resnet18'"),
        ("loss.svdo_form=papr", "loss.svdo_form: expected one of 'paper', 'official'"),
        ("data.batch_size=30", "data.batch_size: 30 is not a multiple of data.num_instances=4"),
        ("model.of_positions=[shallow, bogus]", r"model.of_positions\[1\]: expected one of"),
    ],
)
def test_ranges_and_choices_name_key_and_source(tmp_path, override, message):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="^--set " + message):
        load_config(path, [override])


def test_bad_value_in_the_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr: -1\n")
    with pytest.raises(ConfigError, match=r"^.*bad\.yaml: optim\.lr: expected a value > 0"):
        load_config(path, ["optim.gamma=0.5"])


def test_replace_checked_validates_like_loading():
    from abdnet.config import DataConfig, EvalConfig, replace_checked

    ev = replace_checked(EvalConfig(), "eval", batch_size=7, precision="bf16")
    assert (ev.batch_size, ev.precision) == (7, "bf16")
    with pytest.raises(ConfigError, match="^eval.batch_size: expected a value >= 1, got 0"):
        replace_checked(EvalConfig(), "eval", batch_size=0)
    with pytest.raises(ConfigError, match="eval.precision: expected one of"):
        replace_checked(EvalConfig(), "eval", precision="fp8")
    with pytest.raises(ConfigError, match="unknown config key"):
        replace_checked(EvalConfig(), "eval", nosuch=1)
    # a field called "name" is a change like any other
    assert replace_checked(DataConfig(), "data", name="auto", root="x").name == "auto"
