"""``abdnet cv``: cross-validate a config over the identities of a data set."""

from __future__ import annotations

import argparse
import dataclasses

from abdnet.cli.options import add_keep_state_option, int_at_least, positive_int

HELP = "cross-validate a config: K identity folds of a data set, each trained and tested"

DESCRIPTION = f"""{HELP}.

The train, query and gallery images of ROOT are pooled by identity and the identities dealt
into K folds (deterministic from --seed; each repeat reshuffles). Fold k trains on the other
folds' people and tests on its own: a cross-camera query/gallery (Market-1501 protocol, flip
averaging) with --queries-per-camera evenly spaced images of each test identity and camera as
queries. Identities seen by one camera only cannot be cross-camera queries: they are counted
and go to the gallery. OUT/r<R>-f<K>/run/ is each fold's run folder; OUT/cv.json, cv.md and
cv.png hold each fold's numbers with its test-identity count and the mean ± sample std over
folds. Run the same command again to continue after an interruption: finished folds are kept,
a started one resumes from its last checkpoint."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = DESCRIPTION
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--config", required=True, metavar="C", help="YAML config to cross-validate")
    p.add_argument(
        "--data",
        metavar="ROOT",
        help="data set replacing the config's (layout detected, as abdnet train); without it "
        "the config's data set (a synthetic one is written to OUT/data first)",
    )
    p.add_argument("--folds", required=True, type=int_at_least(2), metavar="K", help="folds")
    p.add_argument(
        "--repeats",
        type=positive_int,
        default=1,
        metavar="R",
        help="reshuffled K-fold partitions (default 1); more can be added to a folder later",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="fold shuffle seed (default: the config's train.seed)",
    )
    p.add_argument(
        "--queries-per-camera",
        type=positive_int,
        default=2,
        metavar="Q",
        help="queries per test identity and camera (default 2, as the PKU-Reid dev split)",
    )
    p.add_argument(
        "--trick",
        action="append",
        default=[],
        metavar="NAME",
        help="apply a named re-ID training trick over the config (repeatable; "
        "--trick list prints them)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=20 (repeatable)",
    )
    add_keep_state_option(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (resumable)")


def run(args: argparse.Namespace) -> int:
    from abdnet.config import load_config, with_data_root
    from abdnet.crossval import run_cv, summarize_folds
    from abdnet.tricks import TRICKS, trick_overrides

    if "list" in args.trick:
        for name, (what, sets) in TRICKS.items():
            print(f"{name:20s} {what}: {' '.join(sets)}")
        return 0
    cfg = load_config(args.config, [*trick_overrides(args.trick), *args.set])
    if args.data:
        cfg = dataclasses.replace(cfg, data=with_data_root(cfg.data, args.data))

    def report(r) -> None:
        k = r.counts
        print(
            f"fold {r.name}: {k['test_ids']} test ids ({k['query_images']} queries, "
            f"{k['gallery_images']} gallery), mAP {100 * r.mAP:.1f} rank-1 {100 * r.rank1:.1f} "
            f"rank-5 {100 * r.rank5:.1f} mINP {100 * r.mINP:.1f}",
            flush=True,
        )

    results = run_cv(
        cfg,
        args.out,
        folds=args.folds,
        repeats=args.repeats,
        seed=args.seed,
        queries_per_camera=args.queries_per_camera,
        on_fold=report,
        keep_state=args.keep_state,
    )
    stats = summarize_folds(results)
    print(
        f"{len(results)} folds: "
        + ", ".join(f"{m} {stats[m].text()}" for m in ("mAP", "rank1", "rank5", "mINP"))
        + " (%, mean ± sample std)"
    )
    print(f"wrote {args.out}/cv.json, cv.md, cv.png")
    return 0
