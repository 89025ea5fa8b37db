"""Training throughput: our engine's step vs a plain fp32 eager loop, same model, same process.

Model: the ``paper`` preset (ResNet-50 ABD-Net, 751 classes) at 384x128 with the full eq. (6)
(CE + triplet + O.F. + O.W.). Inputs are random tensors already in memory, so this measures
the training step, not data loading.

* baseline: the model in NCHW, fp32, ``loss.backward(); adam.step()`` -- what a plain
  PyTorch training loop (and the official code) does.
* ours: ``abdnet.engine.train_step`` with the precision ``choose_precision(device, "auto")``
  picks (bf16 autocast only where the hardware has native bf16 and, on CPUs, a measured
  gain), ``channels_last``, and ``torch.compile`` with ``--compile``.

Both run in the same process; the two loops alternate in rounds (``--rounds``) so that load
from other processes hits both alike, and the best round of each is reported, with the
ratio. Run it on a quiet machine:

    python benchmarks/train_speed.py --batch 8            # CPU
    python benchmarks/train_speed.py --batch 64 --compile  # one GPU

``--config C`` (e.g. ``configs/real-small.yaml``) measures a recipe instead, for budgets
stated as ratios: the recipe's own training step (its model, loss, precision,
channels_last, input size, batch, as ``abdnet train`` runs it) against a fixed reference
workload, the same torchvision trunk (``model.backbone``) with a linear classifier trained
by cross-entropy in plain fp32 eager PyTorch (NCHW, Adam) at the same input size and
batch. The ratio recipe / reference is what a budget compares across machines: a slower
CPU slows both alike.

    python benchmarks/train_speed.py --config configs/real-small.yaml --classes 30
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from abdnet.config import Config, LossConfig, OptimConfig, TrainConfig, model_config
from abdnet.engine import (
    TransferSchedule,
    build_optimizer,
    choose_precision,
    resolve_device,
    train_step,
)
from abdnet.engine.precision import Precision
from abdnet.losses import build_objective
from abdnet.models import build_model_from_config


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=None, help="default: 8 on CPU, 64 on GPU")
    ap.add_argument("--height", type=int, default=384)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--precision", default="auto", help="ours: auto, fp32, bf16, fp16")
    ap.add_argument("--compile", action="store_true", help="ours: torch.compile")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--config", help="measure this recipe against the reference workload")
    ap.add_argument("--classes", type=int, default=30, help="--config: training identities")
    args = ap.parse_args()
    if args.config:
        recipe_vs_reference(args)
        return

    device = resolve_device(args.device)
    batch = args.batch or (64 if device.type == "cuda" else 8)
    k = 4 if batch % 4 == 0 else 1
    num_classes = 751
    torch.manual_seed(0)
    mcfg = model_config("paper", backbone=args.backbone)
    loss_cfg = LossConfig()
    cfg = Config(model=mcfg, loss=loss_cfg, optim=OptimConfig())
    # step 2 with O.F. and O.W. on: the most expensive (and longest) part of the schedule
    plan = TransferSchedule(TrainConfig(frozen_epochs=0, epochs=1), cfg.optim, loss_cfg).plan(0)
    x = torch.randn(batch, 3, args.height, args.width, device=device)
    y = torch.arange(batch // k, device=device).repeat_interleave(k) % num_classes
    objective = build_objective(cfg, num_classes).to(device)

    # baseline: plain fp32 eager, NCHW
    base_model = build_model_from_config(mcfg, num_classes).to(device).train()
    base_opt = torch.optim.Adam(base_model.parameters(), lr=3e-4, weight_decay=5e-4)

    def base_step() -> None:
        base_opt.zero_grad(set_to_none=True)
        out = base_model(x)
        terms = objective(out, y, base_model.ow_weights())
        terms.total.backward()
        base_opt.step()

    # ours
    precision: Precision = choose_precision(device, args.precision)
    model = build_model_from_config(mcfg, num_classes).to(device).train()
    model = model.to(memory_format=torch.channels_last)
    xs = x.contiguous(memory_format=torch.channels_last)
    opt = build_optimizer(cfg.optim, model)
    scaler = precision.grad_scaler()
    fwd = torch.compile(model) if args.compile else model

    def our_step() -> None:
        train_step(fwd, xs, y, objective, opt, scaler, precision, plan)

    def timed(step) -> float:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        _sync(device)
        return args.steps * batch / (time.perf_counter() - t0)

    base_step(), our_step()  # warm-up (oneDNN/cuDNN primitive creation, compilation)
    base_rates, our_rates = [], []
    for _ in range(args.rounds):
        base_rates.append(timed(base_step))
        our_rates.append(timed(our_step))
    result = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "batch": batch,
        "input": f"{args.height}x{args.width}",
        "backbone": args.backbone,
        "precision": precision.name,
        "precision_reason": precision.reason,
        "compile": args.compile,
        "baseline_img_s": max(base_rates),
        "ours_img_s": max(our_rates),
        "ratio": max(our_rates) / max(base_rates),
        "rounds": {"baseline": base_rates, "ours": our_rates},
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"device {result['device']} ({result['gpu'] or str(result['threads']) + ' threads'})")
    print(f"paper preset {args.backbone} {result['input']}, batch {batch}, full eq. (6)")
    print(f"baseline (fp32 eager, NCHW):        {result['baseline_img_s']:8.2f} img/s")
    print(
        f"ours ({precision.name}, channels_last{', compile' if args.compile else ''}): "
        f"{result['ours_img_s']:8.2f} img/s   ratio {result['ratio']:.2f}x"
    )
    print(f"precision choice: {precision.reason}")


def recipe_vs_reference(args: argparse.Namespace) -> None:
    """The recipe of ``--config`` vs the reference workload (module docstring)."""
    import torchvision

    from abdnet.config import load_config
    from abdnet.engine import seed_everything

    cfg = load_config(args.config)
    device = resolve_device(args.device if args.device != "auto" else cfg.train.device)
    seed_everything(0, deterministic=False)
    batch = args.batch or cfg.data.batch_size
    k = cfg.data.num_instances if batch % cfg.data.num_instances == 0 else 1
    h, w, n = cfg.data.height, cfg.data.width, args.classes
    x = torch.randn(batch, 3, h, w, device=device)
    y = torch.arange(batch // k, device=device).repeat_interleave(k) % n

    # the recipe: what abdnet train runs for every step of step 2
    plan = TransferSchedule(cfg.train, cfg.optim, cfg.loss).plan(cfg.train.frozen_epochs)
    precision = choose_precision(device, cfg.train.precision)
    model = build_model_from_config(cfg.model, n).to(device).train()
    xs = x
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
        xs = x.contiguous(memory_format=torch.channels_last)
    objective = build_objective(cfg, n, feature_dim=model.feature_dim).to(device)
    opt = build_optimizer(cfg.optim, model)
    scaler = precision.grad_scaler()

    def recipe_step() -> None:
        train_step(model, xs, y, objective, opt, scaler, precision, plan)

    # the reference: the same trunk, plain fp32 eager, NCHW, linear classifier + CE, Adam
    ref = getattr(torchvision.models, cfg.model.backbone)(weights=None, num_classes=n)
    ref = ref.to(device).train()
    ref_opt = torch.optim.Adam(ref.parameters(), lr=cfg.optim.lr)
    ce = torch.nn.CrossEntropyLoss()

    def reference_step() -> None:
        ref_opt.zero_grad(set_to_none=True)
        ce(ref(x), y).backward()
        ref_opt.step()

    def timed(step) -> float:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        _sync(device)
        return args.steps * batch / (time.perf_counter() - t0)

    recipe_step(), reference_step()  # warm-up
    recipe_rates, ref_rates = [], []
    for _ in range(args.rounds):
        ref_rates.append(timed(reference_step))
        recipe_rates.append(timed(recipe_step))
    result = {
        "config": args.config,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "batch": batch,
        "input": f"{h}x{w}",
        "backbone": cfg.model.backbone,
        "precision": precision.name,
        "recipe_img_s": max(recipe_rates),
        "reference_img_s": max(ref_rates),
        "ratio": max(recipe_rates) / max(ref_rates),
        "rounds": {"recipe": recipe_rates, "reference": ref_rates},
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"device {device} ({result['threads']} threads), {args.config}: batch {batch}, {h}x{w}")
    print(
        f"reference ({cfg.model.backbone} + linear, CE, fp32 eager): {result['reference_img_s']:8.2f} img/s"
    )
    print(f"recipe ({precision.name}, full loss):  {result['recipe_img_s']:8.2f} img/s")
    print(f"ratio recipe / reference: {result['ratio']:.3f}")


if __name__ == "__main__":
    main()
