"""One DDP step (gloo, 2 CPU processes) equals one single-process step on the combined batch.

BatchNorm and batch-hard triplet mining see each rank's half of the batch only (plain DDP,
per-rank statistics), so the single-process reference computes the loss on each half
separately and averages: mean_r L(half_r) is exactly what DDP's gradient averaging optimizes.
"""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from abdnet.config import LossConfig, OptimConfig, TrainConfig, model_config

NUM_CLASSES = 4
# Plain SGD: the update is linear in the gradient, so equal gradients give equal steps
# (Adam's first step is ~lr*sign(g) and would amplify float rounding of tiny gradients).
SGD_CONFIG = OptimConfig(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0)


def _setup():
    from abdnet.engine import TransferSchedule
    from abdnet.losses import ABDObjective
    from abdnet.models import build_model_from_config

    torch.manual_seed(0)
    mcfg = model_config(
        "paper", backbone="resnet18", global_dim=32, attentive_dim=32, reduction_dim=32, dropout=0.0
    )
    model = build_model_from_config(mcfg, NUM_CLASSES)
    objective = ABDObjective(NUM_CLASSES, of_positions=mcfg.of_positions)
    plan = TransferSchedule(
        TrainConfig(frozen_epochs=0, epochs=1), OptimConfig(), LossConfig()
    ).plan(0)
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(16, 3, 64, 32, generator=gen)
    pids = torch.arange(NUM_CLASSES).repeat_interleave(2).repeat(2)  # each half: 4 ids x 2
    return model, objective, plan, images, pids


def _worker(rank, world, port, out):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world)
    )
    torch.set_num_threads(1)
    from abdnet.engine import build_optimizer, choose_precision, train_step
    from abdnet.engine.distributed import cleanup, init_distributed, wrap_ddp

    ctx, device = init_distributed(torch.device("cpu"))
    model, objective, plan, images, pids = _setup()
    model.train()
    ddp = wrap_ddp(model, ctx, device)
    opt = build_optimizer(SGD_CONFIG, model)
    precision = choose_precision("cpu", "fp32")
    half = images.shape[0] // world
    sl = slice(rank * half, (rank + 1) * half)
    train_step(ddp, images[sl], pids[sl], objective, opt, precision.grad_scaler(), precision, plan)
    if rank == 0:
        torch.save({k: v.detach().clone() for k, v in model.named_parameters()}, out)
    cleanup(ctx)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_step_equals_single_process_step(tmp_path):
    out = str(tmp_path / "ddp.pt")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    ddp_params = torch.load(out, weights_only=True)

    from abdnet.engine import build_optimizer

    model, objective, plan, images, pids = _setup()
    rng = torch.get_rng_state()  # each rank's power iterations start from this state
    model.train()
    opt = build_optimizer(SGD_CONFIG, model)
    opt.zero_grad()
    losses = []
    for sl in (slice(0, 8), slice(8, 16)):
        torch.set_rng_state(rng)
        o = model(images[sl])
        t = objective(o, pids[sl], model.ow_weights(), use_of=plan.use_of, use_ow=plan.use_ow)
        losses.append(t.total)
    (sum(losses) / 2).backward()
    opt.step()
    before = _setup()[0]
    moved = 0
    for name, p in model.named_parameters():
        torch.testing.assert_close(ddp_params[name], p.detach(), rtol=1e-4, atol=1e-6, msg=name)
        moved += int(not torch.equal(p.detach(), dict(before.named_parameters())[name].detach()))
    assert moved > 0.9 * len(ddp_params)  # the step really changed (almost) every parameter
