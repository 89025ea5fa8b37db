"""build_optimizer: fused Adam (one kernel over all parameters) equals the for-loop Adam;
weight decay reaches conv and linear weights only unless asked for every parameter."""

from __future__ import annotations

import torch
from torch import nn

from abdnet.config import OptimConfig
from abdnet.engine import build_optimizer
from abdnet.models import build_model


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        # no conv bias before the BN: its gradient is rounding noise, which the normalized
        # first Adam steps turn into +-lr updates of random sign
        nn.Conv2d(3, 4, 3, bias=False),
        nn.BatchNorm2d(4),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 5),
    )


def test_adam_is_fused_and_matches_the_for_loop_adam() -> None:
    cfg = OptimConfig(optimizer="adam", lr=1e-2, weight_decay=5e-4, weight_decay_scope="all")
    ours, ref = _net(), _net()
    ours[1].weight.requires_grad_(False)  # a frozen parameter gets no gradient and no update
    ref[1].weight.requires_grad_(False)
    frozen_before = ours[1].weight.detach().clone()
    opt = build_optimizer(cfg, ours)
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["fused"]
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-2, weight_decay=5e-4, foreach=False)
    x = torch.randn(2, 3, 8, 8)
    for _ in range(3):
        for model, o in ((ours, opt), (ref, ref_opt)):
            o.zero_grad(set_to_none=True)
            model(x).square().sum().backward()
            o.step()
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert torch.equal(ours[1].weight, frozen_before)


def test_default_decay_skips_norms_biases_and_attention_gammas() -> None:
    model = build_model(
        "paper", 3, backbone="resnet18", global_dim=8, attentive_dim=8, reduction_dim=8
    )
    opt = build_optimizer(OptimConfig(weight_decay=5e-4), model)
    by_id = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert len(by_id) == len(names)  # every parameter is in exactly one group
    for name, p in names.items():
        decays = by_id[id(p)] > 0
        weight_of_conv_or_linear = name.endswith(".weight") and p.dim() >= 2
        assert decays == weight_of_conv_or_linear, name
    gammas = [n for n in names if n.endswith("gamma")]
    assert len(gammas) == 3 and all(by_id[id(names[n])] == 0 for n in gammas)
    # the decay itself: with zero gradient, a decayed weight shrinks and a gamma does not
    everything = build_optimizer(OptimConfig(weight_decay=5e-4, weight_decay_scope="all"), model)
    assert [g["weight_decay"] for g in everything.param_groups] == [5e-4]
