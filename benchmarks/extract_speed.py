"""CPU feature extraction, images/s: PyTorch eager vs ONNX Runtime, same model, same run.

An untrained model of the chosen preset/backbone (weights do not change the speed) is saved
with ``save_model``, exported with ``export_onnx`` (dynamic batch, parity-checked), and both
backends extract the same synthetic JPEG crops through ``FeatureExtractor`` (identical
decoding and test transform; only the network backend differs). A warm-up batch is excluded
from the timings. Also reports the max |difference| of the normalized features.

    python benchmarks/extract_speed.py                           # paper preset, ResNet-50, 384x128
    python benchmarks/extract_speed.py --backbone resnet18 --height 128 --width 64 --images 32
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", default="paper", choices=("paper", "official", "baseline"))
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--height", type=int, default=384)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--images", type=int, default=128, help="images timed per backend")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument(
        "--threads", type=int, default=0, help="torch / onnxruntime threads (0: default)"
    )
    ap.add_argument("--flip", action="store_true")
    args = ap.parse_args()

    import torch
    from PIL import Image

    from abdnet.config import Config, DataConfig, model_config
    from abdnet.export import OnnxEmbedder, export_onnx
    from abdnet.models import build_model_from_config
    from abdnet.models.io import save_model
    from abdnet.retrieval import FeatureExtractor

    if args.threads:
        torch.set_num_threads(args.threads)
    import onnxruntime

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"onnxruntime {onnxruntime.__version__}"
    )
    cfg = Config(
        model=model_config(args.preset, backbone=args.backbone),
        data=DataConfig(height=args.height, width=args.width),
    )
    torch.manual_seed(0)
    model = build_model_from_config(cfg.model, 10).eval()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        ckpt = save_model(tmp / "model.safetensors", model, cfg)
        t = time.perf_counter()
        res = export_onnx(ckpt, tmp / "model.onnx", dynamic_batch=True, flip=args.flip)
        print(
            f"model: {args.preset}/{args.backbone} {args.height}x{args.width} -> {res.feature_dim}-d; "
            f"ONNX export {time.perf_counter() - t:.1f} s, parity max abs {res.max_abs_diff:.1e}"
        )
        rng = np.random.default_rng(0)
        paths = []
        for i in range(args.images + args.batch_size):  # one extra batch for the warm-up
            img = rng.integers(0, 256, size=(args.height, args.width, 3), dtype=np.uint8)
            p = tmp / f"{i:05d}.jpg"
            Image.fromarray(img).save(p, quality=90)
            paths.append(str(p))
        warm, timed = paths[: args.batch_size], paths[args.batch_size :]
        backends = {
            "pytorch eager": FeatureExtractor(
                ckpt, device="cpu", batch_size=args.batch_size, flip=args.flip
            ),
            "onnxruntime": FeatureExtractor(
                OnnxEmbedder(tmp / "model.onnx", threads=args.threads or None),
                batch_size=args.batch_size,
            ),
        }
        feats, speed = {}, {}
        for name, ext in backends.items():
            ext(warm)
            t = time.perf_counter()
            feats[name] = ext(timed)
            speed[name] = len(timed) / (time.perf_counter() - t)
            print(
                f"{name:14s} {speed[name]:8.2f} images/s (batch {args.batch_size}, {len(timed)} images)"
            )
        diff = (feats["pytorch eager"] - feats["onnxruntime"]).abs().max().item()
        print(
            f"onnxruntime / pytorch = {speed['onnxruntime'] / speed['pytorch eager']:.2f}x; "
            f"max |feature difference| {diff:.1e}"
        )


if __name__ == "__main__":
    main()
