"""Every preset on every registered backbone (forward, backward on all but the deepest
ResNets), shapes, parameter groups, O.W."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from abdnet.config import MODEL_PRESETS, ConfigError, model_config
from abdnet.models import (
    CAM,
    PAM,
    ABDNet,
    ModelOutput,
    OfficialABDNet,
    build_model,
    build_model_from_config,
    svd_restraint_,
)
from abdnet.models.backbones import BACKBONES as REGISTERED_BACKBONES

PRESETS = sorted(MODEL_PRESETS)  # baseline, official, paper
# Every backbone the registry offers. ResNet-101/152 have ResNet-50's trunk shapes at 2-3x
# its build time: they get the forward-only check below instead of the backward matrix.
REGISTERED = sorted(REGISTERED_BACKBONES)
BACKBONES = [b for b in REGISTERED if b not in ("resnet101", "resnet152")]
NUM_CLASSES = 5


@pytest.fixture(scope="module")
def models() -> dict[tuple[str, str], nn.Module]:
    """Models built once per module, on demand."""
    return {}


def _get(models: dict, preset: str, backbone: str) -> nn.Module:
    if (preset, backbone) not in models:
        torch.manual_seed(0)
        models[(preset, backbone)] = build_model(preset, num_classes=NUM_CLASSES, backbone=backbone)
    return models[(preset, backbone)]


def _expected(cfg) -> tuple[int, int]:
    """(embedding size, number of classifiers) from the config alone."""
    if cfg.arch == "official":
        return 2 * cfg.reduction_dim + cfg.global_dim, 3
    return cfg.global_dim + cfg.attentive_dim, 1 if cfg.svd_layer else 2


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("preset", PRESETS)
def test_forward_backward(models: dict, preset: str, backbone: str) -> None:
    model = _get(models, preset, backbone)
    cfg = MODEL_PRESETS[preset]
    expected_dim, n_logits = _expected(cfg)
    assert model.feature_dim == expected_dim and model.num_classes == NUM_CLASSES
    assert set(cfg.of_positions) <= set(model.of_positions_available)

    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 32)
    y = torch.tensor([0, 3])
    model.train()
    out = model(x)
    assert isinstance(out, ModelOutput)
    assert out.embedding.shape == (2, expected_dim)
    assert len(out.logits) == n_logits
    assert all(t.shape == (2, NUM_CLASSES) for t in out.logits)
    assert all(t.dim() == 2 and t.shape[0] == 2 for t in out.triplet_features)
    of_terms = out.features.of_terms(cfg.of_positions)
    assert {n for n, _, _ in of_terms} == set(cfg.of_positions)
    assert all(m.dim() == 4 and m.shape[0] == 2 and w > 0 for _, m, w in of_terms)
    for name in ("shallow", "reduction", "attentive", "global"):
        assert out.features.map(name).shape[0] == 2

    loss = sum(F.cross_entropy(t, y) for t in out.logits)
    loss = loss + sum(t.pow(2).mean() for t in out.triplet_features)
    loss = loss + sum(w * m.pow(2).mean() for _, m, w in of_terms)
    model.zero_grad()
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient reaches {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient in {name}"

    # eval: the same output type, deterministic, no NaN
    model.eval()
    with torch.no_grad():
        e1 = model(x)
        e2 = model(x)
    assert isinstance(e1, ModelOutput) and e1.embedding.shape == (2, expected_dim)
    assert len(e1.logits) == n_logits
    assert torch.isfinite(e1.embedding).all()
    torch.testing.assert_close(e1.embedding, e2.embedding)


@pytest.mark.parametrize("backbone", [b for b in REGISTERED if b not in BACKBONES])
def test_the_other_registered_backbones_run_each_architecture(backbone: str) -> None:
    # one preset per network class (ABDNet, OfficialABDNet): the trunk is what differs
    presets = {MODEL_PRESETS[p].arch: p for p in PRESETS}
    x = torch.randn(1, 3, 64, 32)
    for preset in presets.values():
        torch.manual_seed(0)
        model = build_model(preset, num_classes=NUM_CLASSES, backbone=backbone).eval()
        expected_dim, n_logits = _expected(MODEL_PRESETS[preset])
        with torch.no_grad():
            out = model(x)
        assert out.embedding.shape == (1, expected_dim) and len(out.logits) == n_logits
        assert torch.isfinite(out.embedding).all()


def test_paper_resnet18_at_128x64() -> None:
    model = build_model("paper", num_classes=10, backbone="resnet18")
    assert isinstance(model, ABDNet)
    x = torch.randn(2, 3, 128, 64)
    out = model.train()(x)
    maps = {n: out.features.map(n) for n in ("shallow", "reduction", "cam", "pam")}
    assert maps["shallow"].shape == (2, 64, 32, 16)  # res_conv_2 output, 1/4
    assert maps["reduction"].shape == (2, 1024, 8, 4)  # Ta at 1/16 (no res_conv_5 down-sampling)
    assert maps["cam"].shape == maps["pam"].shape == (2, 1024, 8, 4)
    assert [t.shape for t in out.logits] == [(2, 10), (2, 10)]
    assert [t.shape for t in out.triplet_features] == [(2, 2048)]
    with torch.no_grad():
        assert model.eval()(x).embedding.shape == (2, 2048)


def test_baseline_has_no_attention_and_no_regularized_positions(models: dict) -> None:
    model = _get(models, "baseline", "resnet18")
    assert not any(isinstance(m, (CAM, PAM)) for m in model.modules())
    assert model.ow_weights() == []
    out = model.train()(torch.randn(2, 3, 64, 32))
    assert MODEL_PRESETS["baseline"].of_positions == ()
    assert not out.features.attention and out.embedding.shape == (2, 2048)


def _conv_weight_shapes(modules: list[nn.Module]) -> list[tuple[int, ...]]:
    return sorted(
        tuple(m.weight.shape)
        for part in modules
        for m in part.modules()
        if isinstance(m, nn.Conv2d)
    )


@pytest.mark.parametrize("preset", ["paper", "official"])
def test_ow_all_covers_every_backbone_conv(models: dict, preset: str) -> None:
    model = _get(models, preset, "resnet50")
    tv = torchvision.models.resnet50(weights=None)
    # res_conv_1..4 once, res_conv_5 twice (one copy per branch), downsample convs included
    expected = _conv_weight_shapes(
        [tv.conv1, tv.layer1, tv.layer2, tv.layer3, tv.layer4, tv.layer4]
    )
    weights = model.ow_weights()
    assert len(weights) == len(expected) == 1 + 10 + 13 + 19 + 2 * 10  # 63 for resnet50
    assert sorted(tuple(w.shape) for w in weights) == expected
    assert len({id(w) for w in weights}) == len(weights)  # the two res_conv_5 are distinct copies
    backbone = {id(p) for p in model.backbone_parameters()}
    assert all(id(w) in backbone for w in weights)


def test_ow_scopes_stem_and_none() -> None:
    stem = build_model("paper", num_classes=3, backbone="resnet18", ow_scope="stem")
    assert [tuple(w.shape) for w in stem.ow_weights()] == [(64, 3, 7, 7)]
    assert stem.ow_weights()[0] is stem.stem[0].weight
    none = build_model("paper", num_classes=3, backbone="densenet121", ow_scope="none")
    assert none.ow_weights() == []
    dense = build_model("baseline", num_classes=3, backbone="densenet121", ow_scope="all")
    tv = torchvision.models.densenet121(weights=None).features
    n_convs = sum(isinstance(m, nn.Conv2d) for m in tv.modules())
    n_deep = sum(
        isinstance(m, nn.Conv2d) for m in [*tv.transition3.modules(), *tv.denseblock4.modules()]
    )
    assert len(dense.ow_weights()) == n_convs + n_deep


@pytest.mark.parametrize("preset", ["paper", "official"])
def test_parameter_groups(preset: str) -> None:
    model = build_model(preset, num_classes=4, backbone="resnet18")
    backbone = model.backbone_parameters()
    new = model.new_parameters()
    ids_b, ids_n = {id(p) for p in backbone}, {id(p) for p in new}
    assert not ids_b & ids_n
    assert ids_b | ids_n == {id(p) for p in model.parameters()}
    tv = torchvision.models.resnet18(weights=None)
    trunk = [tv.conv1, tv.bn1, tv.layer1, tv.layer2, tv.layer3, tv.layer4, tv.layer4]
    assert sum(p.numel() for p in backbone) == sum(p.numel() for m in trunk for p in m.parameters())
    named = dict(model.named_parameters())
    for name, p in named.items():
        if name.endswith("gamma") or "classifier" in name or "reduction" in name:
            assert id(p) in ids_n, name


def test_pretrained_path_fills_trunk_and_both_res_conv5(tmp_path: Path) -> None:
    torch.manual_seed(3)
    src = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(src.state_dict(), path)
    model = build_model("paper", num_classes=3, backbone="resnet18", pretrained=path)
    torch.testing.assert_close(model.stem[0].weight, src.conv1.weight)
    for deep in (model.global_deep, model.attentive_deep):
        torch.testing.assert_close(deep[0].conv1.weight, src.layer4[0].conv1.weight)
    assert model.global_deep[0].conv1.weight is not model.attentive_deep[0].conv1.weight
    official = build_model("official", num_classes=3, backbone="resnet18", pretrained=str(path))
    torch.testing.assert_close(
        official.branches[0][0].backbone[1].conv2.weight, src.layer4[1].conv2.weight
    )


def test_svd_layer_restraint_keeps_distances() -> None:
    torch.manual_seed(4)
    # small kg, ka keep the SVDs cheap; the layer is the same at 2048
    model = build_model(
        "paper", num_classes=6, backbone="resnet18", svd_layer=True, global_dim=40, attentive_dim=24
    )
    assert model.feature_dim == 64
    out = model.train()(torch.randn(2, 3, 64, 32))
    assert len(out.logits) == 1 and out.logits[0].shape == (2, 6)
    with torch.no_grad():
        model.eigenlayer.weight.copy_(torch.randn(64, 64) * 0.05)  # not orthogonal
    model.eval()
    x = torch.randn(4, 3, 64, 32)
    with torch.no_grad():
        before = model(x).embedding
        sv_before = torch.linalg.svdvals(model.eigenlayer.weight.double())
        assert svd_restraint_(model) == 1
        after = model(x).embedding
    w = model.eigenlayer.weight.double()
    gram = w @ w.T  # rows (weight vectors) are orthogonal after restraint
    off = gram - torch.diag(torch.diag(gram))
    assert off.abs().max() < 1e-4 * gram.diag().max()
    torch.testing.assert_close(torch.linalg.svdvals(w), sv_before, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        torch.cdist(after, after), torch.cdist(before, before), rtol=1e-3, atol=1e-4
    )
    assert (after - before).abs().max() > 1e-3  # the features did change (rotated)


def test_of_positions_are_checked() -> None:
    with pytest.raises(ValueError, match="'foo'"):
        build_model("paper", num_classes=3, backbone="resnet18", of_positions=("shallow", "foo"))
    with pytest.raises(ValueError, match="'cam'"):
        build_model("paper", num_classes=3, backbone="resnet18", cam=False)
    with pytest.raises(ValueError, match="'sum'"):
        build_model("paper", num_classes=3, backbone="resnet18", of_positions=("sum",))
    m = build_model(
        "paper", num_classes=3, backbone="resnet18", cam=False, of_positions=("reduction", "pam")
    )
    out = m.train()(torch.randn(2, 3, 64, 32))
    assert [n for n, _, _ in out.features.of_terms(("reduction", "pam"))] == ["reduction", "pam"]
    assert m.attentive_reduction[0].in_features == 2 * 1024  # [Ta, PAM(Ta)]


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="model.ow_scope: expected one of 'all', 'stem', 'none'"):
        build_model("paper", num_classes=3, backbone="resnet18", ow_scope="some")
    with pytest.raises(ValueError, match="num_classes"):
        build_model("paper", num_classes=0, backbone="resnet18")
    with pytest.raises(ValueError, match="model.backbone"):
        build_model("paper", num_classes=3, backbone="vgg16")
    with pytest.raises(ValueError, match="model.arch"):
        build_model_from_config(model_config("paper", arch="transformer"), 3)
    with pytest.raises(ConfigError, match="colour"):
        build_model("paper", num_classes=3, colour="red")


def test_build_model_from_config_and_dims() -> None:
    cfg = model_config(
        "paper", backbone="resnet18", global_dim=64, attentive_dim=32, reduction_dim=16
    )
    model = build_model_from_config(cfg, 3)
    assert isinstance(model, ABDNet) and model.feature_dim == 96
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 64, 32)).embedding.shape == (2, 96)
    off = build_model_from_config(model_config("official", backbone="resnet18"), 3)
    assert isinstance(off, OfficialABDNet)
