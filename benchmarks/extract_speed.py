"""CPU extraction speed of the authors' network on every backend, side by side in one run.

The network is the authors' release as ``load_official`` rebuilds it (``OfficialABDNet``:
ResNet-50, shallow CAM, CAM + PAM heads, 3072-d; random weights, written as a ``.pth.tar``
state dict and loaded back), at 384x128, batch 16, on transformed synthetic person crops
already in memory (decoding is the same for every backend and is left out). Backends:

- ``authors fp32``: the baseline, the authors' own inference: eager fp32 PyTorch, NCHW,
  ``model.eval()`` under ``torch.no_grad()``;
- ``torch bf16+cl``: bf16 autocast and channels_last (what training already uses on CPUs with
  native bf16);
- ``onnxruntime fp32`` / ``onnxruntime int8``: ``export_onnx`` (parity-checked) and
  ``quantize_onnx_file`` (static QDQ, calibrated on other crops), run by ``OnnxEmbedder``;
- ``openvino fp32`` / ``openvino bf16`` / ``openvino int8``: ``OpenVinoEmbedder`` on the same
  fp32 and INT8 files;
- ``FeatureExtractor backend=auto (chose X)``: what a user gets from
  ``FeatureExtractor(checkpoint, device="cpu", backend="auto")``, its choice measured afresh
  in this run (``remeasure=True``; the measurement itself is not timed), raw embeddings.

Each backend runs one warm-up batch, then ``--rounds`` timed batches, rounds interleaved
across backends so that load from other processes hits all of them alike; the best round
counts (and the median is printed). "cos" is the smallest per-image cosine similarity of a
backend's features to the baseline's. The last lines name the fastest backend within cosine
0.999 of fp32 and the INT8 ratio.

    python benchmarks/extract_speed.py                     # 384x128, batch 16, all cores
    python benchmarks/extract_speed.py --threads 1 --rounds 5
    python benchmarks/extract_speed.py --height 128 --width 64 --rounds 2   # a quick check
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

COSINE_TARGET = 0.999


def cpu_description() -> str:
    """The CPU's model name, core count and the instruction sets that decide the kernels."""
    from abdnet.engine import cpu_info

    info = cpu_info()
    name = info.get("model name") or platform.processor() or platform.machine()
    flags = set(info.get("flags", "").split())
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return f"{name}, {os.cpu_count()} cpus, flags: {' '.join(f for f in wanted if f in flags)}"


def crops(n: int, height: int, width: int, seed: int) -> torch.Tensor:
    """``n`` transformed synthetic person crops ``(n, 3, H, W)`` (ImageNet normalization)."""
    from abdnet.config import DataConfig, SyntheticConfig
    from abdnet.data import SyntheticReID, build_test_transform

    ids = max(4, n // 4 + 1)
    gen = SyntheticReID(
        SyntheticConfig(ids=2 * ids, cams=2, per_id=4, height=height, width=width, seed=seed)
    )
    ds = gen.dataset()
    tf = build_test_transform(DataConfig(height=height, width=width))
    records = (ds.train + ds.query + ds.gallery)[:n]
    return torch.stack([tf(ds.read_image(r)) for r in records])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--height", type=int, default=384)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3, help="timed batches per backend")
    ap.add_argument(
        "--threads", type=int, default=0, help="threads of every backend (0: all cores)"
    )
    ap.add_argument(
        "--calibration-images", type=int, default=32, help="crops calibrating the INT8 graph"
    )
    ap.add_argument(
        "--skip", nargs="*", default=[], help="backends to leave out (names as printed)"
    )
    args = ap.parse_args()

    import onnxruntime

    from abdnet.config import DataConfig
    from abdnet.export import OnnxEmbedder, OpenVinoEmbedder, export_onnx, quantize_onnx_file
    from abdnet.models import build_model, load_model, save_model
    from abdnet.retrieval import FeatureExtractor

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    try:
        import openvino

        ov_version = openvino.__version__
    except ImportError:
        ov_version = None
    print(f"machine: {cpu_description()}")
    print(
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, openvino "
        f"{ov_version or 'not installed'}; {threads} threads; load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )

    torch.manual_seed(0)
    h, w, b = args.height, args.width, args.batch_size
    with tempfile.TemporaryDirectory(prefix="abdnet-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        # The authors' release format: a .pth.tar holding {'state_dict': ...}.
        torch.save(
            {"state_dict": build_model("official", num_classes=751).state_dict()},
            tmp / "abd.pth.tar",
        )
        loaded = load_model(tmp / "abd.pth.tar")  # through load_official
        model = loaded.model.eval()
        config = dataclasses.replace(loaded.config, data=DataConfig(height=h, width=w))
        ckpt = save_model(tmp / "model.safetensors", model, config)
        x = crops(b, h, w, seed=1)  # (B, 3, H, W)
        calib = crops(args.calibration_images, h, w, seed=2)

        t = time.perf_counter()
        res = export_onnx(ckpt, tmp / "fp32.onnx", dynamic_batch=True)
        print(
            f"ONNX export + parity check {time.perf_counter() - t:.0f} s "
            f"(max abs diff {res.max_abs_diff:.1e})"
        )
        t = time.perf_counter()
        quantize_onnx_file(tmp / "fp32.onnx", tmp / "int8.onnx", calib.split(8))
        print(f"INT8 quantization on {len(calib)} crops {time.perf_counter() - t:.0f} s")

        def authors_fp32(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return model(x).embedding  # (B, 3072), what their test loop keeps

        model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)

        def torch_bf16_cl(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return model_cl(x.contiguous(memory_format=torch.channels_last)).embedding.float()

        backends: dict[str, Callable[[torch.Tensor], object]] = {
            "authors fp32": authors_fp32,
            "torch bf16+cl": torch_bf16_cl,
            "onnxruntime fp32": OnnxEmbedder(tmp / "fp32.onnx", threads=threads),
            "onnxruntime int8": OnnxEmbedder(tmp / "int8.onnx", threads=threads),
        }
        if ov_version:
            backends["openvino fp32"] = OpenVinoEmbedder(tmp / "fp32.onnx", threads=threads)
            backends["openvino bf16"] = OpenVinoEmbedder(
                tmp / "fp32.onnx", precision="bf16", threads=threads
            )
            backends["openvino int8"] = OpenVinoEmbedder(tmp / "int8.onnx", threads=threads)
            backends["openvino int8+bf16"] = OpenVinoEmbedder(
                tmp / "int8.onnx", precision="bf16", threads=threads
            )
        if "auto" not in args.skip:
            os.environ["ABDNET_CACHE"] = str(tmp / "cache")  # leave the user's cache alone
            t = time.perf_counter()
            auto = FeatureExtractor(
                ckpt, device="cpu", backend="auto", batch_size=b, normalize=False, remeasure=True
            )
            print(f"backend=auto measured its candidates in {time.perf_counter() - t:.0f} s")
            backends[f"FeatureExtractor backend=auto (chose {auto.backend_name})"] = auto
        backends = {k: v for k, v in backends.items() if k == "authors fp32" or k not in args.skip}

        def features(out: object) -> torch.Tensor:
            return torch.as_tensor(np.asarray(out) if not torch.is_tensor(out) else out).double()

        reference = features(authors_fp32(x))
        cosine = {}
        for name, fn in backends.items():  # warm-up, and the cosine check
            f = features(fn(x))
            cosine[name] = float(torch.nn.functional.cosine_similarity(f, reference, dim=1).min())
        times: dict[str, list[float]] = {name: [] for name in backends}
        for _ in range(args.rounds):
            for name, fn in backends.items():
                t = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - t)

    base = b / min(times["authors fp32"])
    print(
        f"\n{h}x{w}, batch {b}, {args.rounds} rounds; load average now {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    width = max(map(len, backends))
    print(f"{'backend':{width}s} {'img/s':>8s} {'median':>8s} {'vs authors':>10s} {'cos min':>9s}")
    speed = {}
    for name in backends:
        speed[name] = b / min(times[name])
        median = b / statistics.median(times[name])
        print(
            f"{name:{width}s} {speed[name]:8.2f} {median:8.2f} {speed[name] / base:9.2f}x {cosine[name]:9.6f}"
        )
    exact = {
        n: s
        for n, s in speed.items()
        if cosine[n] >= COSINE_TARGET and "int8" not in n and not n.startswith("FeatureExtractor")
    }
    best = max(exact, key=exact.get)
    print(
        f"\nfastest within cosine {COSINE_TARGET} (float backends): {best}, {exact[best] / base:.2f}x the authors' fp32"
    )
    for name in speed:
        if name.startswith("FeatureExtractor"):
            print(f"{name}: {speed[name] / base:.2f}x the authors' fp32 (cos {cosine[name]:.6f})")
    int8 = {n: s for n, s in speed.items() if "int8" in n}
    if int8:
        fastest = max(int8, key=int8.get)
        print(f"fastest INT8: {fastest}, {int8[fastest] / base:.2f}x (cos {cosine[fastest]:.6f})")


if __name__ == "__main__":
    main()
