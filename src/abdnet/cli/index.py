"""``abdnet index build|add``: a faiss nearest-neighbour index over extracted features."""

from __future__ import annotations

import argparse

HELP = "build a faiss search index from a feature file, or add features to one"


def _add_search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--nprobe", type=int, help="ivfpq: inverted lists visited per query (default 32)"
    )
    p.add_argument(
        "--k-factor", type=int, help="ivfpq: re-rank k * k_factor candidates (default 8)"
    )
    p.add_argument("--ef-search", type=int, help="hnsw: search beam width efSearch (default 128)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="index_command", metavar="{build,add}", required=True)
    b = sub.add_parser(
        "build",
        help="build an index folder from a .npz of features",
        description="Build an index folder. Distances are squared Euclidean; the features "
        "should be L2-normalized (the default of 'abdnet extract').",
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
        "--nlist", type=int, help="ivfpq: inverted lists (default ~4 sqrt(N), power of 2)"
    )
    b.add_argument(
        "--m", type=int, help="ivfpq: PQ sub-quantizers, must divide D (default D/16, <= 64)"
    )
    b.add_argument("--nbits", type=int, help="ivfpq: bits per PQ code (default 8)")
    b.add_argument(
        "--refine",
        choices=("flat", "sq8", "fp16", "none"),
        help="ivfpq: re-rank candidates with exact (flat), 8-bit or fp16 vectors, or not (default flat)",
    )
    b.add_argument(
        "--train-size", type=int, help="ivfpq: training vectors used at most (default 200000)"
    )
    b.add_argument("--hnsw-m", type=int, help="hnsw: graph degree M (default 32)")
    b.add_argument("--ef-construction", type=int, help="hnsw: efConstruction (default 100)")
    _add_search_options(b)
    b.add_argument("--overwrite", action="store_true", help="replace an existing index in --out")

    a = sub.add_parser("add", help="append the features of a .npz to an existing index folder")
    a.add_argument("--index", required=True, metavar="INDEX_DIR")
    a.add_argument("--features", required=True, metavar="FEATS.npz")


def _build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from abdnet.retrieval import build_index, load_features

    out = Path(args.out)
    if (out / "meta.json").exists() and not args.overwrite:
        raise ValueError(
            f"--out {out} already holds an index; use --overwrite or 'abdnet index add'"
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
    from abdnet.retrieval import load_features, open_index

    index = open_index(args.index)
    fs = load_features(args.features)
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
    index.save()
    print(f"added {index.count - before} vectors to {args.index}: now {index.count} x {index.dim}")
    return 0


def run(args: argparse.Namespace) -> int:
    return _build(args) if args.index_command == "build" else _add(args)
