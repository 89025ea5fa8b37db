"""``abdnet gallery copy SRC DST``: move a gallery to another Milvus (Lite file or server) and
crop store, verified, resumable."""

from __future__ import annotations

import argparse


def add_copy_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "copy",
        help="copy a gallery (rows and crops) to another Milvus or crop store, then verify it",
        description="Copy every entry of the gallery SRC (a Milvus Lite PATH.db or a server "
        "URI) into DST (created when absent, with SRC's model), embeddings bit for bit, ids "
        "and enrolment times kept, and the crops into DST's crop store; then verify row "
        "counts, embeddings and every crop's sha256. Run it again after an interruption: "
        "entries already copied are skipped, none is duplicated.",
    )
    c.add_argument("src", metavar="SRC", help="source gallery (PATH.db or http://HOST:19530)")
    c.add_argument("dst", metavar="DST", help="destination gallery (PATH.db or http://HOST:PORT)")
    c.add_argument("--collection", default="abdnet_gallery", help="SRC's collection")
    c.add_argument("--to-collection", default="abdnet_gallery", help="DST's collection")
    c.add_argument("--crops", metavar="DIR|URL", help="SRC's crop store (default as for SRC)")
    c.add_argument("--to-crops", metavar="DIR|URL", help="DST's crop store (default as for DST)")
    c.add_argument("--batch-size", type=int, default=512, help="rows per batch (default 512)")


def run_copy(args: argparse.Namespace) -> int:
    from abdnet.gallery import Gallery
    from abdnet.gallery.copy import copy_gallery

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    with Gallery.open(args.src, collection=args.collection, crops=args.crops) as src:
        with Gallery.open(
            args.dst,
            model=src.model,
            create=True,
            collection=args.to_collection,
            crops=args.to_crops,
            index=src.meta.get("index", "flat"),
        ) as dst:
            report = copy_gallery(src, dst, batch_size=args.batch_size)
            total = dst.count()
    print(
        f"copied {report.copied}, already there {report.skipped}, crops written "
        f"{report.crops}; verified {report.verified} entries; {args.dst}: {total} entries"
    )
    return 0
