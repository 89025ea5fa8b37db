"""``abdnet search``: the top-k gallery images of query images, from an index folder."""

from __future__ import annotations

import argparse
import json

from abdnet.cli.extract import add_model_arguments, build_extractor, run_extraction
from abdnet.cli.options import add_k_option, positive_int

HELP = "find the k nearest gallery images of query images in an index (squared Euclidean distance)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Extract the query images with the same model as the gallery and print the k nearest "
        "gallery images. Distances are squared Euclidean distances between L2-normalized "
        "features (0 = identical, 4 = opposite; equal to 2 - 2 cos)."
    )
    parser.add_argument(
        "--index", required=True, metavar="INDEX_DIR", help="built by 'abdnet index build'"
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--query",
        nargs="+",
        required=True,
        metavar="IMG",
        help="query image files (or folders; a folder without images is an error)",
    )
    add_k_option(parser)
    parser.add_argument(
        "--json",
        action="store_true",
        help='print a JSON list, one {"query", "results": [{"path", "distance", "rank"}]} per query',
    )
    parser.add_argument("--nprobe", type=positive_int, help="ivfpq: override the stored nprobe")
    parser.add_argument(
        "--k-factor", type=positive_int, help="ivfpq: override the stored re-ranking factor"
    )
    parser.add_argument("--ef-search", type=positive_int, help="hnsw: override the stored efSearch")


def run(args: argparse.Namespace) -> int:
    from abdnet.retrieval import collect_images, open_index

    opts = {"nprobe": args.nprobe, "k_factor": args.k_factor, "ef_search": args.ef_search}
    index = open_index(args.index, **{k: v for k, v in opts.items() if v is not None})
    # Queries are the files as given (in that order); folders expand to their sorted images.
    queries: list[str] = []
    for q in args.query:
        queries.extend(collect_images([q]))
    extraction = index.extraction
    flip = bool(args.flip or extraction.get("flip", False))
    space = index.embedding_space()
    extractor, _info = build_extractor(args, flip=flip, normalize=space.normalized)
    space.check_same(extractor.space, f"index {args.index} (use the model it was built with)")
    feats = run_extraction(extractor, queries, skip_bad=False, desc="queries").features.numpy()
    res = index.search(feats, args.k)
    answers = []
    for qi, query in enumerate(queries):
        results = []
        for rank, (dist, gi) in enumerate(zip(res.distances[qi], res.indices[qi]), start=1):
            if gi < 0:
                break
            path = index.paths[gi] if index.paths is not None else None
            results.append({"path": path, "distance": float(dist), "rank": rank})
        answers.append({"query": query, "results": results})
    if args.json:
        print(json.dumps(answers, indent=2))
    else:
        for ans in answers:
            print(f"query {ans['query']}")
            for r in ans["results"]:
                print(f"  {r['rank']:3d}  {r['distance']:.6f}  {r['path']}")
    return 0
