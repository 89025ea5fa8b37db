"""The full eq. (6) loss on a real (tiny) ABD-Net: gradients everywhere, O.W. on every conv."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from abdnet.losses import ABDObjective
from abdnet.models import CAM, PAM, build_model

NUM_CLASSES = 4


def _tiny_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 64, 32, generator=g)
    y = torch.tensor([0, 0, 1, 1])  # P=2 ids x K=2: every anchor has a triplet
    return x, y


def _count_convs(module: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in module.modules())


def test_full_loss_reaches_every_parameter_and_ow_every_backbone_conv():
    # Independent count from torchvision: res_conv_1..5, plus the second res_conv_5 copy.
    tv = torchvision.models.resnet18(weights=None)
    n_convs = _count_convs(tv) + _count_convs(tv.layer4)
    assert n_convs == 25

    torch.manual_seed(0)
    model = build_model("paper", num_classes=NUM_CLASSES, backbone="resnet18", ow_scope="all")
    model.train()
    # The attention gammas start at 0, which makes the PAM projections' gradient exactly 0
    # (their output is multiplied by gamma). A trained state has gamma != 0.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (CAM, PAM)):
                m.gamma.fill_(0.5)

    weights = model.ow_weights()
    assert len(weights) == n_convs
    assert len({id(w) for w in weights}) == n_convs  # all distinct tensors
    trunk_convs = {
        id(m.weight)
        for part in model.backbone_modules()
        for m in part.modules()
        if isinstance(m, nn.Conv2d)
    }
    assert {id(w) for w in weights} == trunk_convs

    x, y = _tiny_batch()
    out = model(x)
    positions = ("shallow", "reduction", "cam", "pam")
    assert {name for name, _, _ in out.features.of_terms(positions)} == set(positions)
    terms = ABDObjective(NUM_CLASSES, of_positions=positions)(out, y, weights)
    assert terms.of.item() > 0 and terms.ow.item() > 0 and terms.triplet.item() >= 0

    # O.W. alone reaches every backbone conv (one backward for it, one for the rest: the
    # full loss's gradient is their sum).
    ow_grads = torch.autograd.grad(terms.ow, weights, retain_graph=True)
    for g in ow_grads:
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    (terms.total - terms.ow).backward()
    for w, g in zip(weights, ow_grads):
        w.grad = g if w.grad is None else w.grad + g
    missing = [
        name
        for name, p in model.named_parameters()
        if p.requires_grad
        and (p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0)
    ]
    assert not missing, f"no gradient for: {missing}"


@pytest.mark.parametrize(("scope", "count"), [("stem", 1), ("none", 0)])
def test_ow_scope_options(scope, count):
    model = build_model("paper", num_classes=NUM_CLASSES, backbone="resnet18", ow_scope=scope)
    weights = model.ow_weights()
    assert len(weights) == count
    if count:
        assert weights[0].shape == (64, 3, 7, 7)  # res_conv_1's 7x7 conv
