"""Training and extraction throughput of the paper preset on one device, data decoded from JPEGs.

Data: a Market-1501-layout set of real JPEG files (``write_synthetic``: ``--ids`` training
identities x ``--per-id`` images, as many test identities with a query per camera, a gallery
and distractors), written to a temporary folder or to / from ``--data ROOT`` (reused when it
already holds a written set). Every image is read from disk and decoded by the loader workers
on every step: the training reader is the data set's plain ``read_image``; the trainer's
``caching_reader`` (which keeps decoded images of sets up to ``CACHE_MAX_IMAGES`` in memory)
is deliberately not applied, since Market-1501's 12,936 training images are above that limit
and are decoded every epoch in real training.

Model and step: the ``paper`` preset (``--backbone``, default ResNet-50) at ``--height`` x
``--width`` (384x128), batch ``--batch`` = P x 4, step 2 of the schedule (full eq. 6:
CE + triplet + O.F. + O.W.), the precision ``choose_precision(device, --precision)`` picks
(bf16 autocast on a GPU with bf16), channels_last, fused Adam, ``torch.compile`` with
``--compile``; each step is the trainer's own loop body (``abdnet.engine.trainer``'s epoch
loop: copy to the device, ``train_step``, one host sync for the loss values).

Phases, each after ``--warmup`` untimed steps (the first compiles with ``--compile``):

* ``loader_img_s``: the training loader alone (``build_train_loader``, ``--workers``
  processes, a fresh loader per epoch as the trainer builds one), no model;
* ``step_img_s``: the training step on one batch already on the device, repeated;
* ``train_img_s``: the training step fed by the loader, end to end;
* ``extract_img_s``: ``extract_features`` (the library's extraction loop) fed by
  ``build_test_loader`` over the query and gallery JPEGs, batch ``--extract-batch``, the
  same workers, channels_last, eager model.

``train_over_step`` = train / step: near 1 when the loader keeps up; clearly below 1 (with
``loader_img_s`` near ``train_img_s``) when the loader is the bottleneck. ``--profile DIR``
writes a ``torch.profiler`` trace (CPU and CUDA activities) of a few end-to-end steps to
``DIR/trace.json`` and the top operators to ``DIR/top_ops.txt``. One JSON line is printed.

    python benchmarks/gpu_throughput.py --device cuda --batch 64 --compile --workers 8 --ids 751
    python benchmarks/gpu_throughput.py --device cpu --height 64 --width 32 --backbone resnet18 \\
        --ids 8 --steps 2 --warmup 1 --batch 8 --workers 1 --precision fp32   # a quick check
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from extract_speed import cpu_description  # the sibling benchmark (this folder is on sys.path)

from abdnet.config import (
    Config,
    DataConfig,
    LossConfig,
    OptimConfig,
    SyntheticConfig,
    TrainConfig,
    model_config,
)
from abdnet.data import (
    SYNTHETIC_MARKER,
    build_test_loader,
    build_test_transform,
    build_train_loader,
    open_dataset,
    resolve_workers,
    write_synthetic,
)
from abdnet.engine import (
    DistContext,
    TrainState,
    TransferSchedule,
    build_optimizer,
    choose_precision,
    extract_features,
    resolve_device,
    seed_everything,
    wrap_ddp,
)

# The trainer's per-epoch loop: the end-to-end and pure-step phases run exactly its step.
from abdnet.engine.trainer import _train_epoch
from abdnet.files import atomic_write
from abdnet.losses import build_objective
from abdnet.models import build_model_from_config

TARGET_TRAIN_IMG_S = 1300.0  # one H100-class GPU: the paper's 70 Market-1501 epochs in <= 15 min
MARKET_TRAIN_IMAGES = 12_936  # Market-1501 bounding_box_train
PAPER_EPOCHS = 70


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prepare_data(args: argparse.Namespace, scratch: Path) -> tuple[Path, bool, float]:
    """The data root, whether it was written now, and the seconds writing took."""
    root = Path(args.data).expanduser() if args.data else scratch / "data"
    if (root / SYNTHETIC_MARKER).is_file():
        return root, False, 0.0
    t0 = time.perf_counter()
    cfg = SyntheticConfig(
        ids=2 * args.ids,  # half of them train
        cams=args.cams,
        per_id=args.per_id,
        height=args.height,
        width=args.width,
        seed=0,
    )
    # refuses a non-empty folder that is not such a set
    write_synthetic(root, cfg, workers=max(0, (os.cpu_count() or 1) - 1))
    return root, True, time.perf_counter() - t0


def epochs_of_batches(records, reader, data_cfg: DataConfig, pin: bool) -> Iterator[Any]:
    """Training batches epoch after epoch, a new loader per epoch (as the trainer does)."""
    for epoch in itertools.count():
        yield from build_train_loader(
            records, reader, data_cfg, seed=0, epoch=epoch, pin_memory=pin
        )


def rate(images: int, seconds: float) -> float:
    return images / max(seconds, 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--data", default=None, help="data root: reused if written, else written")
    ap.add_argument("--ids", type=int, default=64, help="training identities (Market: 751)")
    ap.add_argument("--per-id", type=int, default=8, help="images per identity and split")
    ap.add_argument("--cams", type=int, default=2)
    ap.add_argument("--height", type=int, default=384)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--batch", type=int, default=64, help="training batch, P x 4")
    ap.add_argument("--extract-batch", type=int, default=None, help="default 256 GPU, 32 CPU")
    ap.add_argument("--workers", type=int, default=-1, help="loader workers; -1: min(8, cpus-1)")
    ap.add_argument("--precision", default="auto", help="auto, fp32, bf16, fp16")
    ap.add_argument("--compile", action="store_true", help="torch.compile the training model")
    ap.add_argument("--steps", type=int, default=50, help="timed steps per phase")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps before each phase")
    ap.add_argument("--profile", default=None, metavar="DIR", help="write a profiler trace")
    args = ap.parse_args()
    for name in ("ids", "per_id", "cams", "batch", "steps"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')}: must be >= 1")
    if args.batch % 4:
        ap.error(f"--batch {args.batch}: must be a multiple of 4 (P identities x 4 images)")
    if args.warmup < 0:
        ap.error("--warmup: must be >= 0")

    device = resolve_device(args.device)
    if args.device == "cuda" and device.type != "cuda":
        ap.error("--device cuda: no CUDA device is available")
    pin = device.type == "cuda"
    workers = resolve_workers(args.workers)
    extract_batch = args.extract_batch or (256 if device.type == "cuda" else 32)
    seed_everything(0, deterministic=False)  # as the trainer: cudnn autotuning on

    with tempfile.TemporaryDirectory(prefix="abdnet-gpu-bench-") as scratch:
        root, written, write_s = prepare_data(args, Path(scratch))
        dataset = open_dataset("synthetic", root=root)
        train_records = list(dataset.train)
        num_classes = max(r.pid for r in train_records) + 1
        data_cfg = DataConfig(
            height=args.height, width=args.width, batch_size=args.batch, workers=workers
        )
        # No caching_reader: every read opens and decodes the JPEG (see the module docstring).
        reader = dataset.read_image

        mcfg = model_config("paper", backbone=args.backbone)
        loss_cfg = LossConfig()
        train_cfg = TrainConfig(frozen_epochs=0, epochs=1, channels_last=True)
        cfg = Config(model=mcfg, data=data_cfg, loss=loss_cfg, optim=OptimConfig(), train=train_cfg)
        # step 2 with O.F. and O.W. on: the longest and most expensive part of the schedule
        plan = TransferSchedule(train_cfg, cfg.optim, loss_cfg).plan(0)
        precision = choose_precision(device, args.precision)
        model = build_model_from_config(mcfg, num_classes).to(device)
        model = model.to(memory_format=torch.channels_last)
        objective = build_objective(cfg, num_classes).to(device)
        ctx = DistContext()
        state = TrainState(model, build_optimizer(cfg.optim, model), precision.grad_scaler())
        fwd = wrap_ddp(model, ctx, device)
        if args.compile:
            fwd = torch.compile(fwd)

        def run_steps(batches: Iterable[Any]) -> float:
            """img/s of the trainer's loop over ``batches`` (it syncs once per step)."""
            record = _train_epoch(
                fwd, batches, cfg=cfg, objective=objective, state=state, precision=precision,
                plan=plan, ctx=ctx, device=device, progress=False,
            )  # fmt: skip
            return float(record.images_per_s)

        # 1. the loader alone
        batches = epochs_of_batches(train_records, reader, data_cfg, pin)
        for _ in itertools.islice(batches, args.warmup):
            pass
        t0 = time.perf_counter()
        n = sum(b[0].shape[0] for b in itertools.islice(batches, args.steps))
        loader_img_s = rate(n, time.perf_counter() - t0)
        del batches  # stops its workers

        # 2. the step alone, on one batch already on the device (compiles here)
        first = next(iter(build_train_loader(train_records, reader, data_cfg, seed=0, epoch=0)))
        images = first[0].to(device).contiguous(memory_format=torch.channels_last)
        pids = first[1].to(device)
        run_steps(itertools.repeat((images, pids), max(args.warmup, 1)))
        step_img_s = run_steps(itertools.repeat((images, pids), args.steps))

        # 3. end to end; the warm-up also drains the batches workers queued while starting
        batches = epochs_of_batches(train_records, reader, data_cfg, pin)
        run_steps(itertools.islice(batches, max(args.warmup, 2 * workers, 1)))
        train_img_s = run_steps(itertools.islice(batches, args.steps))

        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            out = Path(args.profile)
            out.mkdir(parents=True, exist_ok=True)
            activities = [ProfilerActivity.CPU]
            if device.type == "cuda":
                activities.append(ProfilerActivity.CUDA)
            with profile(activities=activities) as prof:
                run_steps(itertools.islice(batches, 3))
                _sync(device)
            prof.export_chrome_trace(str(out / "trace.json"))
            # waiting for the loader shows as "enumerate(DataLoader)..." in CPU time
            sorts = ["self_cpu_time_total"]
            if device.type == "cuda":
                sorts.insert(0, "self_device_time_total")
            tables = [
                f"sorted by {key}\n{prof.key_averages().table(sort_by=key, row_limit=30)}"
                for key in sorts
            ]
            atomic_write(out / "top_ops.txt", "\n\n".join(tables))
        del batches

        # 4. extraction of query + gallery: eager model (as the library's extraction runs),
        # the training precision
        test_records = list(dataset.query) + list(dataset.gallery)
        transform = build_test_transform(data_cfg)

        def extract(records):
            loader = build_test_loader(
                records, reader, transform, batch_size=extract_batch, workers=workers
            )
            return extract_features(
                model, (b[0] for b in loader), device=device, precision=precision,
                channels_last=True,
            )  # fmt: skip

        extract(test_records[:extract_batch])
        _sync(device)
        t0 = time.perf_counter()
        feats = extract(test_records)
        _sync(device)
        extract_img_s = rate(feats.shape[0], time.perf_counter() - t0)

    paper_shapes = (args.backbone, args.height, args.width, args.batch) == (
        "resnet50",
        384,
        128,
        64,
    )
    result = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": cpu_description(),  # the loader workers run here
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpus": os.cpu_count(),
        "backbone": args.backbone,
        "input": f"{args.height}x{args.width}",
        "batch": args.batch,
        "precision": precision.name,
        "precision_reason": precision.reason,
        "channels_last": True,
        "compile": args.compile,
        "workers": workers,
        "decoded_image_cache": False,
        "data": str(root) if args.data else None,
        "data_written_s": round(write_s, 1) if written else None,
        "train_images": len(train_records),
        "train_ids": num_classes,
        "extract_images": len(test_records),
        "extract_batch": extract_batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "loader_img_s": loader_img_s,
        "step_img_s": step_img_s,
        "train_img_s": train_img_s,
        "train_over_step": train_img_s / step_img_s,
        "extract_img_s": extract_img_s,
        "target_train_img_s": TARGET_TRAIN_IMG_S,
        # only meaningful for the paper's shapes
        "market1501_70_epochs_min": (
            PAPER_EPOCHS * MARKET_TRAIN_IMAGES / train_img_s / 60 if paper_shapes else None
        ),
        "profile": args.profile,
    }
    bad = [k for k in ("loader_img_s", "step_img_s", "train_img_s", "extract_img_s")
           if not (math.isfinite(result[k]) and result[k] > 0)]  # fmt: skip
    if bad:
        raise SystemExit(f"gpu_throughput: no valid rate for {', '.join(bad)}: {result}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
