"""Head tricks of the abd network: GeM, BNNeck, cosine classifier, and their wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from abdnet.config import ConfigError, model_config
from abdnet.models import build_model_from_config
from abdnet.models.heads import BNNeck, CosineClassifier, GeM


def test_gem_with_p_1_is_average_pooling_and_large_p_approaches_max():
    x = torch.rand(2, 3, 4, 5) + 0.1
    assert torch.allclose(GeM(1.0)(x), F.adaptive_avg_pool2d(x, 1).flatten(1), atol=1e-6)
    big = GeM(60.0)(x)
    assert torch.allclose(big, x.amax(dim=(2, 3)), rtol=0.05)


def test_gem_value_and_gradient_against_the_formula():
    torch.manual_seed(0)
    x = (torch.rand(1, 2, 3, 3, dtype=torch.float64) + 0.2).requires_grad_()
    gem = GeM(3.0).double()
    y = gem(x)
    xn = x.detach().numpy()
    m = (xn**3).mean(axis=(2, 3))  # (1, 2)
    np.testing.assert_allclose(y.detach().numpy(), m ** (1 / 3), rtol=1e-10)
    y.sum().backward()
    # d/dx (mean x^p)^(1/p) = x^(p-1) (mean x^p)^(1/p - 1) / N
    expected = xn**2 * (m ** (1 / 3 - 1))[:, :, None, None] / 9
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-8)
    # d/dp at p = 3: log-derivative by central finite difference
    h = 1e-6
    up = ((xn ** (3 + h)).mean(axis=(2, 3)) ** (1 / (3 + h))).sum()
    down = ((xn ** (3 - h)).mean(axis=(2, 3)) ** (1 / (3 - h))).sum()
    assert gem.p.grad.item() == pytest.approx((up - down) / (2 * h), rel=1e-5)


def test_bnneck_normalizes_without_shift():
    neck = BNNeck(3)
    assert [n for n, _ in neck.named_parameters()] == ["weight"]  # no shift to learn
    with torch.no_grad():
        neck.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
    x = torch.randn(8, 3) * 3 + 1
    y = neck.train()(x)
    mean, var = x.mean(0), x.var(0, unbiased=False)
    assert torch.allclose(y, (x - mean) / torch.sqrt(var + 1e-5) * neck.weight, atol=1e-5)


def test_cosine_classifier_is_scaled_cosine():
    cls = CosineClassifier(4, 3, scale=16.0)
    x = torch.randn(5, 4)
    w = cls.weight.detach().numpy()
    xn = x.numpy()
    cos = (xn @ w.T) / np.linalg.norm(xn, axis=1)[:, None] / np.linalg.norm(w, axis=1)[None]
    np.testing.assert_allclose(cls(x).detach().numpy(), 16.0 * cos, rtol=1e-5, atol=1e-6)


def _tiny(**kw):
    cfg = model_config(
        "paper", backbone="resnet18", global_dim=8, attentive_dim=8, reduction_dim=8, **kw
    )
    torch.manual_seed(0)
    return build_model_from_config(cfg, 5)


def test_bnneck_wiring_triplet_before_retrieval_after():
    model = _tiny(bnneck=True, pooling="gem", id_head="cosine").eval()
    with torch.no_grad():
        for neck in model.necks:
            neck.bn.running_mean.uniform_(-1, 1)
            neck.bn.running_var.uniform_(0.5, 2)
            neck.weight.uniform_(0.5, 2)
        out = model(torch.randn(2, 3, 64, 32))
    pre = out.triplet_features[0]  # (2, 16): [global 8, attentive 8] before the necks
    post = torch.cat(
        [
            (pre[:, sl] - n.bn.running_mean) / torch.sqrt(n.bn.running_var + 1e-5) * n.weight
            for n, sl in zip(model.necks, (slice(0, 8), slice(8, 16)))
        ],
        dim=1,
    )
    assert torch.allclose(out.embedding, post, atol=1e-5)
    for logits, sl, cls in zip(
        out.logits,
        (slice(0, 8), slice(8, 16)),
        (model.global_classifier, model.attentive_classifier),
    ):
        assert torch.allclose(logits, cls(post[:, sl]), atol=1e-5)
        assert logits.abs().max() <= 30.0 + 1e-4  # scaled cosines


def test_default_head_is_unchanged_by_the_options():
    """The paper preset builds the same parameters as before the tricks existed."""
    names = {n for n, _ in _tiny().named_parameters()}
    assert not any("neck" in n or n.endswith(".p") for n in names)
    assert "global_classifier.bias" in names


def test_tricks_on_the_official_network_are_one_line_errors():
    cfg = model_config("official", backbone="resnet18", bnneck=True)
    with pytest.raises(ConfigError, match=r"model.bnneck: not available for arch 'official'"):
        build_model_from_config(cfg, 3)


def test_every_trick_trains_one_step_and_the_centers_resume():
    from abdnet.config import Config, DataConfig, LossConfig, TrainConfig
    from abdnet.engine import TrainState, build_optimizer
    from abdnet.losses import build_objective

    model_cfg = model_config(
        "paper", backbone="resnet18", global_dim=8, attentive_dim=8, reduction_dim=8,
        pooling="gem", bnneck=True, id_head="cosine", ow_scope="stem",
    )  # fmt: skip
    cfg = Config(
        model=model_cfg,
        data=DataConfig(height=64, width=32),
        loss=LossConfig(arc_margin=0.3, beta_center=5e-4, of_schedule="ramp_up"),
        train=TrainConfig(frozen_epochs=0, epochs=2),
    )
    torch.manual_seed(0)
    model = build_model_from_config(cfg.model, 4).train()
    objective = build_objective(cfg, 4, feature_dim=model.feature_dim)
    x, y = torch.randn(8, 3, 64, 32), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    terms = objective(model(x), y, model.ow_weights(), of_factor=0.5)
    terms.total.backward()
    assert torch.isfinite(terms.total)
    assert terms.total.item() == pytest.approx(
        sum(getattr(terms, k).item() for k in ("xent", "triplet", "of", "ow")), rel=1e-5
    )
    for p in (model.global_pool.p, model.necks[0].weight, model.global_classifier.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert objective.center.centers.abs().sum() > 0  # moved by the update rule
    state = TrainState(
        model,
        build_optimizer(cfg.optim, model),
        torch.amp.GradScaler("cpu", enabled=False),
        objective=objective,
    )
    saved = state.state_dict()
    fresh = build_objective(cfg, 4, feature_dim=model.feature_dim)
    TrainState(
        model,
        build_optimizer(cfg.optim, model),
        torch.amp.GradScaler("cpu", enabled=False),
        objective=fresh,
    ).load_state_dict(saved)
    assert torch.equal(fresh.center.centers, objective.center.centers)
