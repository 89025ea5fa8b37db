"""build_optimizer: fused Adam (one kernel over all parameters) equals the for-loop Adam."""

from __future__ import annotations

import torch
from torch import nn

from abdnet.config import Config, OptimConfig
from abdnet.engine import build_optimizer


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
    cfg = Config(optim=OptimConfig(optimizer="adam", lr=1e-2, weight_decay=5e-4))
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
