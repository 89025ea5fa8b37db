import pytest
import torch
from torch import nn

from abdnet.config import ConfigError, LossConfig, OptimConfig, TrainConfig, config_from_dict
from abdnet.engine.schedule import TransferSchedule, apply_freeze


def paper_schedule(**train):
    return TransferSchedule(
        TrainConfig(**{"frozen_epochs": 10, "epochs": 60, **train}),
        OptimConfig(lr=3e-4, milestones=(30, 40), gamma=0.1),
        LossConfig(),
    )


def test_paper_learning_rates_per_epoch():
    s = paper_schedule()
    assert s.total_epochs == 70
    # section 4.2: 3e-4, decayed to 3e-5 after 30 and 3e-6 after 40 epochs of step 2
    expected = [3e-4] * 10 + [3e-4] * 30 + [3e-5] * 10 + [3e-6] * 20
    assert [s.plan(e).lr for e in range(70)] == pytest.approx(expected, rel=1e-12)


def test_stages_and_loss_switches():
    s = paper_schedule(of_start_epoch=23, ow_start_epoch=0)
    plans = list(s)
    assert [p.stage for p in plans] == [1] * 10 + [2] * 60
    assert all(p.freeze_backbone for p in plans[:10]) and not any(
        p.freeze_backbone for p in plans[10:]
    )
    # step 1: CE + triplet only
    assert not any(p.use_of or p.use_ow for p in plans[:10])
    assert all(p.use_triplet for p in plans)
    # O.F. from step-2 epoch 23 = global epoch 33; O.W. from the start of step 2
    assert [p.epoch for p in plans if p.use_of][0] == 33
    assert [p.epoch for p in plans if p.use_ow][0] == 10
    assert [p.epoch for p in plans if p.reset_optimizer] == [10]
    assert not any(p.reset_optimizer for p in paper_schedule(reset_optimizer=False))


def test_no_triplet_when_beta_zero_and_bad_values_named():
    s = TransferSchedule(
        TrainConfig(frozen_epochs=0, epochs=3), OptimConfig(), LossConfig(beta_tr=0.0)
    )
    assert not any(p.use_triplet or p.reset_optimizer for p in s)
    # bad values are refused when the config is built (abdnet.config), naming the key
    with pytest.raises(ConfigError, match="train.epochs"):
        config_from_dict({"train": {"epochs": -1}})
    with pytest.raises(ConfigError, match="optim.milestones"):
        config_from_dict({"optim": {"milestones": [40, 30]}})


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.Dropout(0.5))


def test_freeze_sets_requires_grad_and_bn_eval():
    m = Toy()
    apply_freeze(m, m.backbone.parameters(), frozen=True)
    frozen = {n for n, p in m.named_parameters() if not p.requires_grad}
    assert frozen == {
        "backbone.0.weight",
        "backbone.0.bias",
        "backbone.1.weight",
        "backbone.1.bias",
    }
    assert not m.backbone[1].training and m.head[1].training and m.head[2].training
    # the frozen BN keeps its running statistics during a forward pass
    before = m.backbone[1].running_mean.clone()
    m.head(m.backbone(torch.randn(2, 3, 6, 6)))
    assert torch.equal(m.backbone[1].running_mean, before)
    apply_freeze(m, m.backbone.parameters(), frozen=False)
    assert all(p.requires_grad for p in m.parameters())
    assert all(mod.training for mod in m.modules())
