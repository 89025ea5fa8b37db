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
    args = ap.parse_args()

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


if __name__ == "__main__":
    main()
