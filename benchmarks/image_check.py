"""Cost of the image check a data set runs when it is loaded, on a folder of JPEG crops.

Writes ``--images`` Market-1501-sized JPEG crops (128x64, quality 95, textured so they
compress like photographs) into a temporary folder, then times, over the same files, in the
same run (page cache warm for all):

- listing: the parser's own work (``os.scandir`` + suffix test), the baseline;
- header: ``PIL.Image.open`` (format and size) per file;
- check: ``abdnet.data.check_image_file`` (header + end marker), what loading runs;
- decode: ``abdnet.data.read_image`` (full decode), what the first epoch does anyway.

    python benchmarks/image_check.py                 # 10,000 images
    python benchmarks/image_check.py --images 2000
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from abdnet.data import IMAGE_EXTENSIONS, check_image_file, read_image


def _write_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:128, 0:64]
    paths = []
    for i in range(n):
        base = rng.integers(0, 255, 3)
        img = base + 40 * np.sin(xx[..., None] / (3 + i % 7)) + 30 * np.cos(yy[..., None] / 5)
        img = img + rng.normal(0, 12, img.shape)  # sensor noise: photo-like JPEG sizes
        path = folder / f"{i % 1500:04d}_c{i % 6 + 1}s1_{i:06d}_00.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=95)
        paths.append(path)
    return paths


def _time(fn, paths) -> float:
    t0 = time.perf_counter()
    for p in paths:
        fn(p)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=int, default=10_000)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = _write_images(folder, args.images)
        mean_kb = sum(p.stat().st_size for p in paths) / len(paths) / 1024

        def header(p: Path) -> None:
            with Image.open(p) as img:
                _ = img.size

        def check(p: Path) -> None:
            assert check_image_file(p).problem is None

        for p in paths[:200]:  # warm the page cache and the imports
            check(p)
        t0 = time.perf_counter()
        listed = [
            e.path
            for e in os.scandir(folder)
            if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
        ]
        t_list = time.perf_counter() - t0
        assert len(listed) == len(paths)
        times = {
            "listing (baseline)": t_list,
            "header (Image.open)": _time(header, paths),
            "check_image_file": _time(check, paths),
            "full decode (read_image)": _time(read_image, paths),
        }
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus")
    print(f"{len(paths)} JPEG crops 128x64, mean {mean_kb:.1f} KiB, page cache warm")
    decode = times["full decode (read_image)"]
    for name, t in times.items():
        print(
            f"{name:26s} {t:7.3f} s  {1e6 * t / len(paths):7.1f} us/image  "
            f"x{t / decode:.3f} of full decode"
        )


if __name__ == "__main__":
    main()
