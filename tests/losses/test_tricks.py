"""ArcFace margin, center loss, O.F./O.W. schedules and the augmentation policies."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from abdnet.config import ConfigError, DataConfig, LossConfig, OptimConfig, TrainConfig, load_config
from abdnet.data import build_train_transform
from abdnet.engine import TransferSchedule
from abdnet.losses import CenterLoss, arcface_logits


def test_arcface_logits_formula():
    s, m = 10.0, 0.5
    cos = torch.tensor([[0.8, 0.1, -0.3], [0.2, -0.95, 0.4]])
    targets = torch.tensor([0, 1])
    out = arcface_logits(s * cos, targets, scale=s, margin=m).numpy()
    # row 0: theta + m < pi -> s cos(acos(0.8) + m); others untouched
    assert out[0, 0] == pytest.approx(s * math.cos(math.acos(0.8) + m), rel=1e-5)
    np.testing.assert_allclose(out[0, 1:], s * cos[0, 1:].numpy(), rtol=1e-6)
    # row 1: acos(-0.95) + 0.5 > pi -> the monotone fallback s (cos - m sin m)
    assert math.acos(-0.95) + m > math.pi
    assert out[1, 1] == pytest.approx(s * (-0.95 - m * math.sin(m)), rel=1e-5)
    assert arcface_logits(s * cos, targets, scale=s, margin=0.0) is not None
    assert torch.equal(arcface_logits(s * cos, targets, scale=s, margin=0.0), s * cos)


def test_center_loss_value_gradient_and_update_by_hand():
    loss_fn = CenterLoss(3, 2, alpha=0.5)
    loss_fn.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, -1.0]]))
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]], requires_grad=True)
    y = torch.tensor([0, 0, 1])
    c = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    xn = x.detach().numpy()
    expected = 0.5 * ((xn - c) ** 2).sum(1).mean()
    loss = loss_fn(x, y)
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), (xn - c) / 3, rtol=1e-6)
    # Wen et al.'s rule: delta_j = sum_{y_i = j} (c_j - x_i) / (1 + n_j); c_j -= alpha delta_j
    d0 = ((c[0] - xn[0]) + (c[1] - xn[1])) / 3
    d1 = (np.array([1.0, 1.0]) - xn[2]) / 2
    np.testing.assert_allclose(loss_fn.centers[0].numpy(), -0.5 * d0, rtol=1e-6)
    np.testing.assert_allclose(loss_fn.centers[1].numpy(), [1, 1] - 0.5 * d1, rtol=1e-6)
    np.testing.assert_allclose(loss_fn.centers[2].numpy(), [2.0, -1.0])  # no sample, no move
    loss_fn.eval()(x.detach(), y)
    np.testing.assert_allclose(loss_fn.centers[2].numpy(), [2.0, -1.0])


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("constant", [1, 1, 1, 1]),
        ("ramp_up", [0.25, 0.5, 0.75, 1.0]),
        ("ramp_down", [1.0, 0.75, 0.5, 0.25]),
        (
            "cosine_down",
            [1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2],
        ),
    ],
)
def test_ortho_schedules(kind, expected):
    sched = TransferSchedule(
        TrainConfig(frozen_epochs=1, epochs=6, of_start_epoch=2),
        OptimConfig(),
        LossConfig(of_schedule=kind),
    )
    factors = [sched.plan(e).of_factor for e in range(3, 7)]  # step-2 epochs 2..5
    assert factors == pytest.approx(expected)
    assert sched.plan(0).ow_factor == 1.0


def test_arc_margin_needs_the_cosine_head(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("loss: {arc_margin: 0.3}\n")
    with pytest.raises(
        ConfigError, match="loss.arc_margin: the angular margin needs model.id_head"
    ):
        load_config(cfg)
    assert load_config(cfg, ["model.id_head=cosine"]).loss.arc_margin == 0.3


@pytest.mark.parametrize("policy", ["autoaugment", "randaugment", "trivialaugment", "augmix"])
def test_augmentation_policies_keep_shape(policy):
    torch.manual_seed(0)
    t = build_train_transform(DataConfig(height=32, width=16, auto_augment=policy))
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 20, 3), dtype=np.uint8))
    assert any(type(s).__name__.lower().startswith(policy[:4]) for s in t.transforms)
    assert t(img).shape == (3, 32, 16)


def test_unknown_policy_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="data.auto_augment"):
        load_config(None, ["data.auto_augment=magic"])
