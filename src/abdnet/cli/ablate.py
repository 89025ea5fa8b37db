"""``abdnet ablate``: train and evaluate the rows of the paper's Table 1."""

from __future__ import annotations

import argparse

HELP = "run the Table 1 ablation (baseline ... ABD-Net) on a config's data and tabulate it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from abdnet.ablation import VARIANTS

    p.add_argument(
        "--config",
        required=True,
        help="base YAML config: its data/optim/train/eval settings are kept",
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value"
    )
    p.add_argument(
        "--out", required=True, help="output folder: one run folder per variant + table.md/csv/png"
    )
    p.add_argument(
        "--variants",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"subset to run (default: the ten Table 1 rows; 'all' adds the extras): {', '.join(VARIANTS)}",
    )
    p.add_argument(
        "--jobs", type=int, default=1, help="variants trained in parallel processes (default 1)"
    )
    p.add_argument(
        "--list", action="store_true", help="print the variants and what each sets, then exit"
    )


def run(args: argparse.Namespace) -> int:
    from abdnet.ablation import resolve_variants, run_ablation, variant_overrides
    from abdnet.config import load_config

    base = load_config(args.config, args.set)
    chosen = resolve_variants(args.variants)
    if args.list:
        for v in chosen:
            o = variant_overrides(v, base)
            print(f"{v.name:24s} {v.label:30s} model={o['model']} loss={o['loss']}")
        return 0
    if args.jobs < 1:
        raise ValueError(f"--jobs: expected a positive number, got {args.jobs}")
    results = run_ablation(base, args.out, [v.name for v in chosen], jobs=args.jobs)
    print(
        f"{'variant':30s} {'rank1':>7s} {'mAP':>7s} {'mINP':>7s} {'time s':>8s}   paper Market rank1/mAP"
    )
    for r in results:
        paper = f"{r.paper[0]:.2f}/{r.paper[1]:.2f}" if r.paper else "-"
        print(
            f"{r.label:30s} {100 * r.rank1:7.2f} {100 * r.mAP:7.2f} {100 * r.mINP:7.2f} {r.train_seconds:8.1f}   {paper}"
        )
    print(f"wrote {args.out}/table.md, table.csv, table.png")
    return 0
