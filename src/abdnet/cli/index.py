"""``abdnet index build|add``: a faiss nearest-neighbour index over extracted features."""

from __future__ import annotations

import argparse

from abdnet.cli.options import add_force_option, non_negative_float, positive_int

HELP = "build a faiss search index from a feature file, or add features to one"


def _add_search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--nprobe", type=positive_int, help="ivfpq: inverted lists visited per query (default 32)"
    )
    p.add_argument(
        "--k-factor", type=positive_int, help="ivfpq: re-rank k * k_factor candidates (default 8)"
    )
    p.add_argument(
        "--ef-search", type=positive_int, help="hnsw: search beam width efSearch (default 128)"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="index_command", metavar="{build,add}", required=True)
    b = sub.add_parser(
        "build",
        help="build an index folder from a .npz of features",
        description="Build an index folder. Distances are squared Euclidean; the features "
        "should be L2-normalized (the default of 'abdnet extract'). A folder that already "
        "holds files is refused unless --force.",
    )
    b.add_argument(
        "--features", required=True, metavar="FEATS.npz", help="written by 'abdnet extract'"
    )
    b.add_argument("--out", required=True, metavar="INDEX_DIR", help="index folder to create")
    b.add_argument(
        "--kind",
        choices=("flat", "ivfpq", "hnsw"),
        default="flat",
        help="flat: exact; ivfpq: compressed inverted file (trained); hnsw: graph (default flat)",
    )
    b.add_argument(
        "--nlist", type=positive_int, help="ivfpq: inverted lists (default ~4 sqrt(N), power of 2)"
    )
    b.add_argument(
        "--m",
        type=positive_int,
        help="ivfpq: PQ sub-quantizers, must divide D (default D/16, <= 64)",
    )
    b.add_argument("--nbits", type=positive_int, help="ivfpq: bits per PQ code (default 8)")
    b.add_argument(
        "--refine",
        choices=("flat", "sq8", "fp16", "none"),
        help="ivfpq: re-rank candidates with exact (flat), 8-bit or fp16 vectors, or not (default flat)",
    )
    b.add_argument(
        "--train-size",
        type=positive_int,
        help="ivfpq: training vectors used at most (default 200000)",
    )
    b.add_argument("--hnsw-m", type=positive_int, help="hnsw: graph degree M (default 32)")
    b.add_argument(
        "--ef-construction", type=positive_int, help="hnsw: efConstruction (default 100)"
    )
    _add_search_options(b)
    add_force_option(b, "what --out holds (e.g. an older index)", "--overwrite")

    a = sub.add_parser(
        "add",
        help="append the features of a .npz to an existing index folder",
        description="Append features to an index folder. The new version of the folder is "
        "written beside it and swapped in at once (a kill leaves the old index); concurrent "
        "additions to one index wait for each other (--wait).",
    )
    a.add_argument("--index", required=True, metavar="INDEX_DIR")
    a.add_argument("--features", required=True, metavar="FEATS.npz")
    a.add_argument(
        "--wait",
        type=non_negative_float,
        default=None,
        metavar="SECONDS",
        help="wait this long for another process changing the index (0: refuse at once; "
        "default: abdnet.retrieval.INDEX_LOCK_TIMEOUT, 10 minutes)",
    )


def _build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from abdnet.files import check_output
    from abdnet.retrieval import build_index, load_features

    out = Path(args.out)
    check_output(
        out, force=args.force, folder=True, hint="use 'abdnet index add' to add features to it"
    )
    fs = load_features(args.features)
    opts = {
        "nlist": args.nlist,
        "m": args.m,
        "nbits": args.nbits,
        "refine": args.refine,
        "train_size": args.train_size,
        "nprobe": args.nprobe,
        "k_factor": args.k_factor,
        "hnsw_m": args.hnsw_m,
        "ef_construction": args.ef_construction,
        "ef_search": args.ef_search,
    }
    given = {k: v for k, v in opts.items() if v is not None}
    wrong = [k for k in given if k not in _OPTIONS_OF[args.kind]]
    if wrong:
        flags = ", ".join("--" + k.replace("_", "-") for k in wrong)
        raise ValueError(f"{flags}: not an option of --kind {args.kind}")
    index = build_index(
        fs.features,
        args.kind,
        paths=fs.paths,
        pids=fs.pids,
        camids=fs.camids,
        extraction=fs.meta,
        out_dir=out,
        overwrite=args.force,
        **given,
    )
    print(
        f"built {index.kind} index at {out}: {index.count} x {index.dim}, "
        f"{index.memory_bytes() / 2**20:.1f} MiB, params {index.params}"
    )
    return 0


_OPTIONS_OF = {
    "flat": set(),
    "ivfpq": {"nlist", "m", "nbits", "refine", "train_size", "nprobe", "k_factor"},
    "hnsw": {"hnsw_m", "ef_construction", "ef_search"},
}


def _add(args: argparse.Namespace) -> int:
    from abdnet.retrieval import (
        INDEX_LOCK_TIMEOUT,
        load_features,
        space_of_extraction,
        update_index,
    )

    fs = load_features(args.features)
    wait = INDEX_LOCK_TIMEOUT if args.wait is None else args.wait
    with update_index(args.index, lock_timeout=wait) as index:
        index.embedding_space().check_same(
            space_of_extraction(fs.meta, fs.features.shape[1]),
            f"{args.features} (features for index {args.index})",
        )
        before = index.count
        if index.paths is not None:
            known = set(index.paths)
            dup = next((p for p in fs.paths if p in known), None)
            if dup is not None:
                raise ValueError(f"{args.features}: {dup} is already in index {args.index}")
        index.add(
            fs.features,
            paths=fs.paths if index.paths is not None else None,
            pids=fs.pids,
            camids=fs.camids,
        )
    print(f"added {index.count - before} vectors to {args.index}: now {index.count} x {index.dim}")
    return 0


def run(args: argparse.Namespace) -> int:
    return _build(args) if args.index_command == "build" else _add(args)
