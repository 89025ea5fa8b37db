"""Eq. (6): ABDObjective combines the terms with the configured betas; each term's gradient
matches central finite differences."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from abdnet.config import Config, ConfigError, LossConfig, config_from_dict
from abdnet.losses import ABDObjective, TripletLoss, build_objective, of_penalty, ow_penalty
from abdnet.models import FeatureMaps, ModelOutput

NUM_CLASSES = 5
POSITIONS = ("shallow", "reduction")


def _inputs(seed: int = 0, requires_grad: bool = True):
    g = torch.Generator().manual_seed(seed)
    targets = torch.arange(4).repeat_interleave(2)  # P=4 ids x K=2
    logits = [
        torch.randn(8, NUM_CLASSES, generator=g).requires_grad_(requires_grad) for _ in range(3)
    ]
    feats = [torch.randn(8, 6, generator=g).requires_grad_(requires_grad) for _ in range(2)]
    fm = FeatureMaps()
    fm.add("shallow", torch.rand(8, 4, 3, 5, generator=g).requires_grad_(requires_grad))
    fm.add("reduction", torch.rand(8, 12, 2, 2, generator=g).requires_grad_(requires_grad))
    weights = [
        torch.randn(6, 3, 3, 3, generator=g).requires_grad_(requires_grad),
        torch.randn(12, 6, 1, 1, generator=g).requires_grad_(requires_grad),
    ]
    out = ModelOutput(embedding=feats[0], logits=logits, triplet_features=feats, features=fm)
    return out, targets, weights


def test_defaults_are_the_papers():
    cfg = LossConfig()
    assert (cfg.beta_tr, cfg.beta_of, cfg.beta_ow, cfg.margin) == (0.1, 1e-6, 1e-3, 1.2)
    assert cfg.power_iters == 2 and cfg.label_smooth == 0.1
    # eq. (4) on F F^T / sqrt(lambda_1); its scale is checked by what it does, the authors'
    # expected O.F. gradient (test_svdo_official), not by its value
    assert (cfg.svdo_form, cfg.of_gram_norm) == ("paper", "relative")


def test_paper_scale_multiplies_the_paper_form_only():
    out, targets, weights = _inputs(requires_grad=False)
    terms = {}
    for form in ("paper", "official"):
        for scale in (1.0, 3.0):
            objective = ABDObjective(
                NUM_CLASSES, svdo_form=form, of_paper_scale=scale, of_positions=POSITIONS
            )
            torch.manual_seed(2)
            terms[form, scale] = objective(out, targets, weights)
    torch.testing.assert_close(terms["paper", 3.0].of, 3.0 * terms["paper", 1.0].of)
    torch.testing.assert_close(terms["official", 3.0].of, terms["official", 1.0].of)


def test_total_is_eq6_with_independent_terms():
    out, targets, weights = _inputs()
    torch.manual_seed(3)
    objective = ABDObjective(
        NUM_CLASSES, beta_tr=0.3, beta_of=0.01, beta_ow=0.02, of_positions=POSITIONS
    )
    terms = objective(out, targets, weights)

    # xent: mean over the classifiers of torch's label-smoothed CE.
    xent = sum(F.cross_entropy(x, targets, label_smoothing=0.1) for x in out.logits) / 3
    torch.testing.assert_close(terms.xent, xent)
    triplet = 0.3 * sum(TripletLoss(1.2)(f, targets) for f in out.triplet_features) / 2
    torch.testing.assert_close(terms.triplet, triplet)
    # Same RNG draws in the same order reproduce the SVDO terms.
    torch.manual_seed(3)
    maps = out.features.of_terms(POSITIONS)
    scale = LossConfig().of_paper_scale  # the objective's default is the config's
    of = 0.01 * of_penalty(maps, iters=2, form="paper", gram_norm="relative", scale=scale)
    ow = 0.02 * ow_penalty(weights, iters=2, form="paper")
    torch.testing.assert_close(terms.of, of)
    torch.testing.assert_close(terms.ow, ow)
    torch.testing.assert_close(terms.total, terms.xent + terms.triplet + terms.of + terms.ow)
    assert all(v > 0 for v in terms.as_floats().values())


@pytest.mark.parametrize("form", ["paper", "official"])
@pytest.mark.parametrize("term", ["xent", "triplet", "of", "ow"])
def test_gradient_of_each_term_matches_central_differences(term, form):
    # Each input group enters one term only: the logits xent, the triplet features the
    # triplet loss, the feature maps O.F., the weights O.W. Autograd's directional derivative
    # of that term along a random direction v must equal (f(x + eps v) - f(x - eps v)) / 2eps
    # (fp32, as the objective computes; the same power-iteration starts for every call).
    out, targets, weights = _inputs()
    objective = ABDObjective(
        NUM_CLASSES,
        beta_tr=0.5,
        beta_of=0.5,
        beta_ow=0.5,
        svdo_form=form,
        of_positions=POSITIONS,
    )
    inputs = {
        "xent": out.logits,
        "triplet": out.triplet_features,
        "of": [m for _, m, _ in out.features.of_terms(POSITIONS)],
        "ow": weights,
    }[term]

    def value() -> torch.Tensor:
        torch.manual_seed(7)
        return getattr(objective(out, targets, weights), term)

    value().backward()
    g = torch.Generator().manual_seed(1)
    directions = [torch.randn(t.shape, generator=g) for t in inputs]
    analytic = sum(float((t.grad * v).sum()) for t, v in zip(inputs, directions))
    eps = 1e-3

    def shifted(step: float) -> float:
        with torch.no_grad():
            for t, v in zip(inputs, directions):
                t += step * v
            result = float(value())
            for t, v in zip(inputs, directions):
                t -= step * v
        return result

    numeric = (shifted(eps) - shifted(-eps)) / (2 * eps)
    assert abs(analytic) > 1e-2  # the term depends on these inputs at all
    assert analytic == pytest.approx(numeric, rel=1e-2)


def test_switches_turn_terms_off():
    out, targets, weights = _inputs(requires_grad=False)
    obj = ABDObjective(NUM_CLASSES, of_positions=POSITIONS)
    off = obj(out, targets, weights, use_of=False, use_ow=False, use_triplet=False)
    assert off.of.item() == off.ow.item() == off.triplet.item() == 0.0
    torch.testing.assert_close(off.total, off.xent)
    bare = ModelOutput(embedding=out.embedding, logits=out.logits)
    no_tr = ABDObjective(NUM_CLASSES, beta_tr=0.0)(bare, targets)
    assert no_tr.triplet.item() == 0.0
    # No O.F. positions / no weights (baseline preset): zero terms, not errors.
    none = ABDObjective(NUM_CLASSES)(out, targets)
    assert none.of.item() == none.ow.item() == 0.0 and none.triplet.item() > 0


def test_official_form_scales():
    out, targets, weights = _inputs(requires_grad=False)
    torch.manual_seed(1)
    obj = ABDObjective(NUM_CLASSES, svdo_form="official", of_positions=POSITIONS)
    terms = obj(out, targets, weights)
    torch.manual_seed(1)
    of = of_penalty(out.features.of_terms(POSITIONS), iters=2, form="official")
    ow = ow_penalty(weights, iters=2, form="official")
    torch.testing.assert_close(terms.of, 1e-6 * of)
    torch.testing.assert_close(terms.ow, 1e-3 * ow)


def test_build_objective_reads_the_config():
    cfg = config_from_dict(
        {"loss": {"beta_tr": 0.0, "svdo_form": "official"}, "model": {"preset": "baseline"}}
    )
    obj = build_objective(cfg, NUM_CLASSES)
    assert (obj.beta_tr, obj.svdo_form, obj.of_positions) == (0.0, "official", ())
    assert build_objective(Config(), NUM_CLASSES).of_positions == Config().model.of_positions


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
        config_from_dict({"loss": {key: value}})


def test_missing_triplet_features_is_an_error():
    out, targets, _ = _inputs(requires_grad=False)
    bare = ModelOutput(embedding=out.embedding, logits=out.logits)
    with pytest.raises(ValueError, match="triplet_features"):
        ABDObjective(NUM_CLASSES)(bare, targets)
