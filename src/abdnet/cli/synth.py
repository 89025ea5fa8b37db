"""``abdnet synth``: write the synthetic re-ID data set in the Market-1501 layout."""

from __future__ import annotations

import argparse
import time

from abdnet.cli.options import add_force_option, int_at_least, positive_int
from abdnet.config import SyntheticConfig

HELP = "write a synthetic re-ID data set (Market-1501 layout) to a folder"


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--size: expected HxW such as 128x64, got {text!r}"
        ) from None
    return h, w


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = SyntheticConfig()
    parser.add_argument(
        "--out", required=True, help="output folder (created; must be empty unless --force)"
    )
    parser.add_argument(
        "--ids",
        type=int_at_least(2),
        default=d.ids,
        help=f"identities, half train / half test (default {d.ids})",
    )
    parser.add_argument(
        "--cams", type=int_at_least(2), default=d.cams, help=f"cameras (default {d.cams})"
    )
    parser.add_argument(
        "--per-id",
        type=positive_int,
        default=d.per_id,
        help=f"images per identity and split (default {d.per_id})",
    )
    parser.add_argument(
        "--size",
        type=_size,
        default=(d.height, d.width),
        help=f"image size HxW (default {d.height}x{d.width})",
    )
    parser.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    add_force_option(parser, "a synthetic set already in --out", "--overwrite")


def run(args: argparse.Namespace) -> int:
    from abdnet.config import replace_checked
    from abdnet.data import open_dataset, write_synthetic
    from abdnet.files import check_output

    height, width = args.size
    cfg = replace_checked(
        SyntheticConfig(),
        "synthetic",
        ids=args.ids,
        cams=args.cams,
        per_id=args.per_id,
        height=height,
        width=width,
        seed=args.seed,
    )
    check_output(args.out, force=args.force, folder=True)
    start = time.perf_counter()
    out = write_synthetic(args.out, cfg, overwrite=args.force)
    elapsed = time.perf_counter() - start
    print(open_dataset(str(out)).summary())
    print(f"wrote {out} in {elapsed:.1f} s")
    return 0
