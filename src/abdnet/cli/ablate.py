"""``abdnet ablate``: train and evaluate the rows of the paper's Table 1, over seeds."""

from __future__ import annotations

import argparse
import dataclasses
import math

from abdnet.cli.options import add_keep_state_option

HELP = "run the Table 1 ablation (baseline ... ABD-Net) on a config's data and tabulate it"

DESCRIPTION = f"""{HELP}.

Each variant is trained --seeds N times, run i with train.seed = the config's seed + i, in
OUT/<variant>/seed-<S>/. With N > 1, table.md / table.csv / table.png give every metric as
the mean ± the sample standard deviation (n - 1) over the seeds, and each row's difference to
the baseline row with its standard error (* marks a difference beyond 2 standard errors).
Run the same command again to continue after an interruption: finished runs are read, started
ones resume from their last checkpoint. See docs/ablation.md."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from abdnet.ablation import VARIANTS

    p.description = DESCRIPTION
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument(
        "--config",
        required=True,
        help="base YAML config: its data/optim/train/eval settings are kept",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a base config value, e.g. --set train.epochs=5 (repeatable)",
    )
    p.add_argument(
        "--data",
        metavar="ROOT",
        help="data set folder replacing the config's data set (layout detected, as abdnet train)",
    )
    p.add_argument(
        "--out",
        help="output folder (required unless --list): OUT/<variant>/seed-<S>/ run folders, "
        "table.md/csv/png, runs.csv",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"subset to run (default: the ten Table 1 rows; 'all' adds the extras): {', '.join(VARIANTS)}",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="N",
        help="runs per variant, train.seed = the config's seed + 0 .. N-1 (default 1); "
        "N > 1 reports mean ± sample std and differences to the baseline",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="(variant, seed) runs trained in parallel processes (default 1)",
    )
    p.add_argument(
        "--cv",
        type=int,
        default=None,
        metavar="K",
        help="cross-validate each row over K identity folds of the data (abdnet cv; the same "
        "folds for every row, OUT/<variant>/ an abdnet cv folder, OUT/cv_table.md with "
        "paired differences) instead of training on its one train/test split; --seeds N "
        "becomes N reshuffled K-fold repeats",
    )
    add_keep_state_option(p)
    p.add_argument(
        "--list", action="store_true", help="print the variants and what each sets, then exit"
    )


def _cell(value: float, spread: float, sign: str = "") -> str:
    text = f"{value:{sign}6.2f}"
    return text if math.isnan(spread) else f"{text} ± {spread:5.2f}"


def run(args: argparse.Namespace) -> int:
    from abdnet.ablation import (
        TIME_NAME,
        reference_row,
        resolve_variants,
        run_ablation,
        variant_overrides,
    )
    from abdnet.config import load_config, with_data_root

    base = load_config(args.config, args.set)
    if args.data:
        # the data set changes, the input size/augmentation of the config stay
        data = with_data_root(base.data, args.data)
        base = dataclasses.replace(base, data=data)
    chosen = resolve_variants(args.variants)
    if args.list:
        for v in chosen:
            o = variant_overrides(v, base)
            print(f"{v.name:24s} {v.label:30s} model={o['model']} loss={o['loss']}")
        return 0
    if not args.out:
        raise ValueError("--out DIR is required (unless --list)")
    if args.seeds < 1:
        raise ValueError(f"--seeds: expected a positive number, got {args.seeds}")
    if args.jobs < 1:
        raise ValueError(f"--jobs: expected a positive number, got {args.jobs}")
    if args.cv is not None:
        return _run_cv(base, args, [v.name for v in chosen])
    rows = run_ablation(
        base,
        args.out,
        [v.name for v in chosen],
        seeds=args.seeds,
        jobs=args.jobs,
        keep_state=args.keep_state,
    )
    ref = reference_row(rows)
    several = any(r.n > 1 for r in rows)
    print(
        f"{'variant':30s} {'n':>2s} {'rank1':>14s} {'mAP':>14s} {'mINP':>14s} {'time s':>8s}"
        f"   {'Δ mAP vs ' + ref.name if several else 'paper Market rank1/mAP'}"
    )
    for r in rows:
        rank1, mAP, mINP = (r.stats(m) for m in ("rank1", "mAP", "mINP"))
        if several:
            d = r.difference("mAP", ref)
            last = "" if r is ref else _cell(100 * d.delta, 100 * d.se, sign="+")
            last += " *" if d.beyond_noise else ""
        else:
            last = f"{r.paper[0]:.2f}/{r.paper[1]:.2f}" if r.paper else "-"
        print(
            f"{r.label:30s} {r.n:2d} {_cell(100 * rank1.mean, 100 * rank1.std):>14s} "
            f"{_cell(100 * mAP.mean, 100 * mAP.std):>14s} {_cell(100 * mINP.mean, 100 * mINP.std):>14s} "
            f"{r.stats(TIME_NAME).mean:8.1f}   {last}"
        )
    print(f"wrote {args.out}/table.md, table.csv, table.png, runs.csv")
    return 0


def _run_cv(base, args: argparse.Namespace, names: list[str]) -> int:
    from abdnet.crossval.table import run_ablation_cv

    if args.cv < 2:
        raise ValueError(f"--cv: expected at least 2 folds, got {args.cv}")
    if args.jobs != 1:
        raise ValueError("--jobs: not available with --cv (the folds train one after another)")
    rows = run_ablation_cv(
        base, args.out, names, folds=args.cv, repeats=args.seeds, keep_state=args.keep_state
    )
    for r in rows:
        cells = "  ".join(f"{m} {r.stats(m).text()}" for m in ("mAP", "rank1", "mINP"))
        print(f"{r.label:30s} {len(r.folds):2d} folds  {cells}")
    print(f"wrote {args.out}/cv_table.md and an abdnet cv folder per variant")
    return 0
