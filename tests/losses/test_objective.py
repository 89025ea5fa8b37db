"""Eq. (6): ABDObjective combines the terms with the configured betas; gradients reach every input."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from abdnet.config import ConfigError, LossConfig
from abdnet.losses import ABDObjective, TripletLoss, of_penalty, ow_penalty

NUM_CLASSES = 5


def _inputs(seed: int = 0, requires_grad: bool = True):
    g = torch.Generator().manual_seed(seed)
    targets = torch.arange(4).repeat_interleave(2)  # P=4 ids x K=2
    logits = [
        torch.randn(8, NUM_CLASSES, generator=g).requires_grad_(requires_grad) for _ in range(3)
    ]
    feats = [torch.randn(8, 6, generator=g).requires_grad_(requires_grad) for _ in range(2)]
    maps = [
        ("shallow", torch.rand(8, 4, 3, 5, generator=g).requires_grad_(requires_grad), 1.0),
        ("reduction", torch.rand(8, 12, 2, 2, generator=g).requires_grad_(requires_grad), 1.0),
    ]
    weights = [
        torch.randn(6, 3, 3, 3, generator=g).requires_grad_(requires_grad),
        torch.randn(12, 6, 1, 1, generator=g).requires_grad_(requires_grad),
    ]
    return logits, feats, targets, maps, weights


def test_defaults_are_the_papers():
    cfg = LossConfig()
    assert (cfg.beta_tr, cfg.beta_of, cfg.beta_ow, cfg.margin) == (0.1, 1e-6, 1e-3, 1.2)
    assert cfg.power_iters == 2 and cfg.label_smooth == 0.1
    # eq. (4) on F F^T / sqrt(lambda_1), calibrated against the authors' code (test_svdo_official)
    assert (cfg.svdo_form, cfg.of_gram_norm, cfg.of_paper_scale) == ("paper", "relative", 128.0)


def test_paper_scale_multiplies_the_paper_form_only():
    logits, feats, targets, maps, weights = _inputs(requires_grad=False)
    terms = {}
    for form in ("paper", "official"):
        for scale in (1.0, 3.0):
            cfg = LossConfig(svdo_form=form, of_paper_scale=scale)
            torch.manual_seed(2)
            terms[form, scale] = ABDObjective(cfg, NUM_CLASSES)(
                logits, feats, targets, of_maps=maps, ow_weights=weights
            )
    torch.testing.assert_close(terms["paper", 3.0].of, 3.0 * terms["paper", 1.0].of)
    torch.testing.assert_close(terms["official", 3.0].of, terms["official", 1.0].of)


def test_total_is_eq6_with_independent_terms():
    cfg = LossConfig(beta_tr=0.3, beta_of=0.01, beta_ow=0.02)
    logits, feats, targets, maps, weights = _inputs()
    torch.manual_seed(3)
    terms = ABDObjective(cfg, NUM_CLASSES)(logits, feats, targets, of_maps=maps, ow_weights=weights)

    # xent: mean over the classifiers of torch's label-smoothed CE.
    xent = sum(F.cross_entropy(x, targets, label_smoothing=0.1) for x in logits) / len(logits)
    torch.testing.assert_close(terms.xent, xent)
    triplet = 0.3 * sum(TripletLoss(1.2)(f, targets) for f in feats) / len(feats)
    torch.testing.assert_close(terms.triplet, triplet)
    # Same RNG draws in the same order reproduce the SVDO terms.
    torch.manual_seed(3)
    of = 0.01 * of_penalty(maps, iters=2, form="paper", gram_norm="relative", scale=128.0)
    ow = 0.02 * ow_penalty(weights, iters=2, form="paper")
    torch.testing.assert_close(terms.of, of)
    torch.testing.assert_close(terms.ow, ow)
    torch.testing.assert_close(terms.total, terms.xent + terms.triplet + terms.of + terms.ow)
    assert all(v > 0 for v in terms.detached().values())


def test_gradient_reaches_logits_features_maps_and_weights():
    logits, feats, targets, maps, weights = _inputs()
    terms = ABDObjective(LossConfig(beta_of=1e-2), NUM_CLASSES)(
        logits, feats, targets, of_maps=maps, ow_weights=weights
    )
    terms.total.backward()
    for t in [*logits, *feats, *(m for _, m, _ in maps), *weights]:
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_switches_turn_terms_off():
    logits, feats, targets, maps, weights = _inputs(requires_grad=False)
    obj = ABDObjective(LossConfig(), NUM_CLASSES)
    off = obj(
        logits,
        feats,
        targets,
        of_maps=maps,
        ow_weights=weights,
        use_of=False,
        use_ow=False,
        use_triplet=False,
    )
    assert off.of.item() == off.ow.item() == off.triplet.item() == 0.0
    torch.testing.assert_close(off.total, off.xent)
    no_tr = ABDObjective(LossConfig(beta_tr=0.0), NUM_CLASSES)(logits, [], targets)
    assert no_tr.triplet.item() == 0.0
    # No maps / weights (baseline preset): zero terms, not errors.
    none = obj(logits, feats, targets)
    assert none.of.item() == none.ow.item() == 0.0 and none.triplet.item() > 0


def test_official_form_scales():
    logits, feats, targets, maps, weights = _inputs(requires_grad=False)
    cfg = LossConfig(svdo_form="official")
    torch.manual_seed(1)
    terms = ABDObjective(cfg, NUM_CLASSES)(logits, feats, targets, of_maps=maps, ow_weights=weights)
    torch.manual_seed(1)
    of = of_penalty(maps, iters=2, form="official")
    ow = ow_penalty(weights, iters=2, form="official")
    torch.testing.assert_close(terms.of, 1e-6 * of)
    torch.testing.assert_close(terms.ow, 1e-3 * ow)


def test_single_tensor_inputs_are_accepted():
    logits, feats, targets, _, _ = _inputs(requires_grad=False)
    obj = ABDObjective(LossConfig(), NUM_CLASSES)
    a = obj(logits[0], feats[0], targets)
    b = obj([logits[0]], [feats[0]], targets)
    torch.testing.assert_close(a.total, b.total)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("svdo_form", "papr"),
        ("of_gram_norm", "x"),
        ("power_iters", 0),
        ("of_paper_scale", -1.0),
        ("beta_of", -1.0),
        ("label_smooth", 1.0),
    ],
)
def test_bad_config_names_the_key(key, value):
    with pytest.raises(ConfigError, match=f"loss.{key}"):
        ABDObjective(dataclasses.replace(LossConfig(), **{key: value}), NUM_CLASSES)


def test_missing_triplet_features_is_an_error():
    logits, _, targets, _, _ = _inputs(requires_grad=False)
    with pytest.raises(ValueError, match="triplet_features"):
        ABDObjective(LossConfig(), NUM_CLASSES)(logits, [], targets)
