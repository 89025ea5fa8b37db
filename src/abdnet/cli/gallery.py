"""``abdnet gallery add|search|delete|info``: the persistent gallery (Milvus / Milvus Lite)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from abdnet.cli.extract import add_model_arguments, build_extractor, progress_bar
from abdnet.cli.options import add_k_option, int_at_least

HELP = (
    "enrol crops into a persistent gallery (Milvus Lite file or Milvus server), search, "
    "delete, copy"
)


def add_min_side_option(parser: argparse.ArgumentParser) -> None:
    """--min-side: the least width and height of a crop that is enrolled."""
    from abdnet.gallery import DEFAULT_MIN_SIDE  # imports torch: not at the top level

    parser.add_argument(
        "--min-side",
        type=int_at_least(1),
        default=DEFAULT_MIN_SIDE,
        metavar="PX",
        help=f"refuse crops less than PX pixels wide or high (default {DEFAULT_MIN_SIDE}; "
        "1 accepts any image)",
    )


def add_gallery_arguments(parser: argparse.ArgumentParser, *, creating: bool = False) -> None:
    """--gallery, --collection, --crops (and --index where a gallery may be created)."""
    parser.add_argument(
        "--gallery",
        required=True,
        metavar="PATH.db|URI",
        help="a Milvus Lite file (PATH.db, created on first use) or a Milvus server "
        "(http://HOST:19530)",
    )
    parser.add_argument(
        "--collection",
        default="abdnet_gallery",
        help="collection name in the database (default abdnet_gallery)",
    )
    parser.add_argument(
        "--crops",
        metavar="DIR|URL",
        help="where crops are kept: a folder, or an fsspec URL (s3://bucket/prefix, gs://..., "
        "file:///...) that several machines share (default: NAME.crops beside PATH.db; for a "
        "server, no crops are kept unless given)",
    )
    if creating:
        parser.add_argument(
            "--index",
            choices=("flat", "hnsw"),
            default="flat",
            help="vector index when the gallery is created: flat (exact, default) or hnsw "
            "(approximate, for very large galleries on a server)",
        )


def open_gallery_for_model(
    args: argparse.Namespace, *, create: bool, flip: bool | None = None, device: Any = None
) -> tuple[Any, Any, Any]:
    """``(gallery, extractor, model_info)`` for the model the arguments name.

    ``flip`` defaults to :func:`gallery_flip`; ``device`` overrides ``--device``.
    """
    from abdnet.gallery import Gallery, describe_extractor

    extractor, info = build_extractor(
        args, flip=gallery_flip(args) if flip is None else flip, device=device
    )
    model = describe_extractor(extractor, source=info["source"])
    gallery = Gallery.open(
        args.gallery,
        model=model,
        create=create,
        crops=args.crops,
        collection=args.collection,
        index=getattr(args, "index", "flat"),
    )
    return gallery, extractor, model


def gallery_flip(args: argparse.Namespace) -> bool:
    """Whether to flip-average: --flip, or an existing gallery built with flip averaging (it
    is searched and extended the same way without repeating --flip; any other difference
    from the gallery's model is an error when it is opened)."""
    if args.flip:
        return True
    stored = _stored_model(args)
    return stored is not None and stored.flip


def _stored_model(args: argparse.Namespace):
    """The model recorded in an existing gallery, or None (no gallery yet)."""
    from abdnet.gallery import Gallery, GalleryError, is_embedded

    if is_embedded(args.gallery):
        from pathlib import Path

        if not Path(args.gallery).exists():
            return None
    try:
        with Gallery.open(args.gallery, collection=args.collection, crops=args.crops) as g:
            return g.model
    except GalleryError as exc:
        if "has no collection" in str(exc):
            return None
        raise


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from abdnet.cli.gallery_copy import add_copy_parser
    from abdnet.gallery.records import FIRST_CAMERA  # imports torch: not at the top level

    sub = parser.add_subparsers(dest="gallery_command", metavar="{add,search,delete,info,copy}")
    sub.required = True

    a = sub.add_parser(
        "add",
        help="enrol image files (skips crops already enrolled; an interrupted run resumes)",
        description="Embed image files and add them to the gallery (created on first use). "
        "A crop already enrolled (same bytes) is skipped, so running the same command again "
        "after an interruption continues where it stopped. Cameras are numbered from 1, as "
        "Market/Duke-style names write them. The camera comes from --camera or, when not "
        "given, from Market/Duke-style file names (0002_c1s1_000451_03.jpg: camera 1, frame "
        "451); the frame number a name carries is kept as the entry's frame (never turned "
        "into a date); the capture time is --timestamp, or none.",
        epilog="Scale out with torchrun: 'torchrun --nproc_per_node N -m abdnet.cli.main "
        "gallery add ...' gives the same gallery as one process. Rank 0 opens the gallery and "
        "lists the images not enrolled yet, every process embeds a contiguous share of them, "
        "and rank 0 enrols them all; a failed process fails the run and nothing is added.",
    )
    add_gallery_arguments(a, creating=True)
    add_model_arguments(a)
    a.add_argument(
        "--images", nargs="+", required=True, metavar="DIR|FILE", help="image files and/or folders"
    )
    a.add_argument(
        "--camera",
        type=int_at_least(FIRST_CAMERA),
        help="camera number of every image, from 1 (default: from the names, c1 -> 1)",
    )
    a.add_argument("--timestamp", metavar="ISO8601", help="capture time of every image")
    a.add_argument("--label", help="label of every image (a track, a person's name)")
    a.add_argument(
        "--label-from-name",
        action="store_true",
        help="label each image with the identity in its Market/Duke-style name",
    )
    add_min_side_option(a)
    a.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip (and list) unreadable images and those below --min-side",
    )
    a.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = sub.add_parser(
        "search",
        help="the k nearest gallery crops of query images",
        description="Distances are squared Euclidean between L2-normalized embeddings "
        "(2 - 2 cos); scores are cosine similarities.",
    )
    add_gallery_arguments(s)
    add_model_arguments(s)
    s.add_argument("--query", nargs="+", required=True, metavar="IMG", help="query images")
    add_k_option(s)
    s.add_argument(
        "--camera",
        type=int_at_least(FIRST_CAMERA),
        help="the queries' camera, from 1 (default: from Market/Duke-style names, c1 -> 1)",
    )
    s.add_argument(
        "--same-camera",
        action="store_true",
        help="also return crops of the query's own camera (left out by default)",
    )
    s.add_argument("--after", metavar="ISO8601", help="only crops captured at or after")
    s.add_argument("--before", metavar="ISO8601", help="only crops captured at or before")
    s.add_argument("--label", help="only crops with this label")
    s.add_argument(
        "--threshold", metavar="FILE", help="threshold.json of 'abdnet calibrate': mark matches"
    )
    s.add_argument("--json", action="store_true", help="print JSON")

    d = sub.add_parser("delete", help="remove entries and their crops")
    add_gallery_arguments(d)
    d.add_argument("ids", nargs="+", metavar="ID", help="entry ids")

    i = sub.add_parser("info", help="size, model and storage of a gallery")
    add_gallery_arguments(i)
    i.add_argument("--json", action="store_true", help="print JSON")
    add_copy_parser(sub)


def run(args: argparse.Namespace) -> int:
    from abdnet.cli.gallery_copy import run_copy

    commands = {"add": _add, "search": _search, "delete": _delete, "info": _info, "copy": run_copy}
    return commands[args.gallery_command](args)


def _add(args: argparse.Namespace) -> int:
    import torch

    from abdnet.engine import cleanup, init_distributed, resolve_device
    from abdnet.gallery import parse_time
    from abdnet.retrieval import ShardFailedError, collect_images

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    when = parse_time(args.timestamp, "--timestamp") if args.timestamp else None
    paths = collect_images(args.images)
    if not paths:
        raise ValueError(f"--images {' '.join(args.images)}: no image files found")
    options = dict(
        camera=args.camera,
        timestamp=when,
        label=args.label,
        label_from_pid=args.label_from_name,
        batch_size=args.batch_size,
        skip_bad=args.skip_bad,
        min_side=args.min_side,
    )
    # under torchrun: join the process group (gloo on the CPU), each rank embeds its share
    ctx, device = init_distributed(
        resolve_device(args.device) if args.checkpoint else torch.device("cpu")
    )
    try:
        if ctx.enabled:
            result = _add_sharded(args, paths, options, ctx, device)
        else:
            result = _add_single(args, paths, options)
    except ShardFailedError as exc:
        print(f"abdnet gallery: error: {args.gallery}: {exc}", file=sys.stderr)
        return 1
    finally:
        cleanup(ctx)
    if result is None:  # a rank other than 0: rank 0 reports
        return 0
    report, size = result
    for item, reason in report.failed:
        print(f"skipped {item}: {reason}", file=sys.stderr)
    print(
        f"{args.gallery}: added {report.added}, already enrolled {report.skipped}"
        + (f", unreadable {len(report.failed)}" if report.failed else "")
        + f"; {size} entries"
    )
    return 1 if report.failed else 0


def _add_single(args: argparse.Namespace, paths: list[str], options: dict[str, Any]):
    from abdnet.gallery import enrol_files

    gallery, extractor, _ = open_gallery_for_model(args, create=True)
    with gallery, progress_bar(len(paths), "enrol", not args.no_progress) as bar:
        report = enrol_files(gallery, extractor, paths, progress=bar.update, **options)
        return report, gallery.size()


def _add_sharded(args: argparse.Namespace, paths: list[str], options: dict[str, Any], ctx, device):
    """Rank 0 opens the gallery and tells the others the flip setting; every rank builds its
    extractor; :func:`abdnet.gallery.enrol_sharded` does the rest."""
    from abdnet.engine import broadcast_object, failed_ranks
    from abdnet.gallery import enrol_sharded
    from abdnet.retrieval import ShardFailedError

    gallery = extractor = None
    flip: bool | None = None
    error: BaseException | None = None
    if ctx.is_main:
        try:
            flip = gallery_flip(args)
            gallery, extractor, _ = open_gallery_for_model(
                args, create=True, flip=flip, device=device
            )
        except Exception as exc:  # the other ranks learn it from the broadcast
            error = exc
    flip = broadcast_object(flip if error is None else None, ctx)
    if error is not None:
        raise error
    if flip is None:
        raise ShardFailedError(
            f"rank 0 of {ctx.world_size} could not open the gallery (see its error); "
            f"nothing enrolled"
        )
    try:
        if not ctx.is_main:
            extractor, _ = build_extractor(args, flip=flip, device=device)
    except Exception as exc:
        error = exc
    try:
        failed = failed_ranks(error is None, ctx)
        if error is not None:
            raise error
        if failed:
            raise ShardFailedError(
                f"rank(s) {', '.join(map(str, failed))} of {ctx.world_size} could not load the "
                f"model (see their errors); nothing enrolled"
            )
        show = ctx.is_main and not args.no_progress
        with progress_bar(None, "embed", show) as bar:
            report = enrol_sharded(gallery, extractor, paths, ctx, progress=bar.update, **options)
        if gallery is None:
            return None
        return report, gallery.size()
    finally:
        if gallery is not None:
            gallery.close()


def _search(args: argparse.Namespace) -> int:
    from abdnet.cli.extract import run_extraction
    from abdnet.gallery import SearchFilter, load_threshold, name_metadata, parse_time
    from abdnet.retrieval import collect_images

    after = parse_time(args.after, "--after") if args.after else None
    before = parse_time(args.before, "--before") if args.before else None
    queries: list[str] = []
    for q in args.query:
        queries.extend(collect_images([q]))
    gallery, extractor, model = open_gallery_for_model(args, create=False)
    threshold = None
    if args.threshold:
        threshold = load_threshold(args.threshold)
        threshold.model.check_same(model, f"--threshold {args.threshold}")
    with gallery:
        feats = run_extraction(extractor, queries, skip_bad=False, desc="queries").features
        filters = []
        cameras = []
        for q in queries:
            cam = args.camera if args.camera is not None else name_metadata(q).camera
            cameras.append(cam)
            filters.append(
                SearchFilter(
                    exclude_camera=None if args.same_camera else cam,
                    after=after,
                    before=before,
                    label=args.label,
                )
            )
        results = gallery.search(feats.numpy(), args.k, filters)
    answers = []
    for q, cam, hits in zip(queries, cameras, results):
        rows = []
        for rank, h in enumerate(hits, start=1):
            row = {"rank": rank, "distance": h.distance, "score": h.score, **h.entry.to_dict()}
            row["match"] = None if threshold is None else threshold.matches(h.distance)
            rows.append(row)
        answers.append({"query": q, "camera": cam, "results": rows})
    if args.json:
        print(json.dumps(answers, indent=2))
        return 0
    for ans in answers:
        print(
            f"query {ans['query']}"
            + (f" (camera {ans['camera']})" if ans["camera"] is not None else "")
        )
        for r in ans["results"]:
            mark = "" if r["match"] is None else ("  match" if r["match"] else "  -")
            print(
                f"  {r['rank']:3d}  {r['distance']:.6f}  {r['score']:+.4f}  {r['id']}  "
                f"{describe_place(r)}  {r['label'] or ''}{mark}  {r['source']}"
            )
    return 0


def _delete(args: argparse.Namespace) -> int:
    from abdnet.gallery import Gallery

    with Gallery.open(args.gallery, collection=args.collection, crops=args.crops) as g:
        removed = g.delete(args.ids)
        size = g.size()
    missing = [i for i in args.ids if i not in set(removed)]
    for i in removed:
        print(f"deleted {i}")
    for i in missing:
        print(f"no entry {i}", file=sys.stderr)
    print(f"{args.gallery}: {size} entries")
    return 1 if missing else 0


def _info(args: argparse.Namespace) -> int:
    from abdnet.gallery import Gallery

    with Gallery.open(args.gallery, collection=args.collection, crops=args.crops) as g:
        info = g.info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    m = info["model"]
    print(f"{info['gallery']} ({info['backend']}, collection {info['collection']})")
    print(f"  entries   {info['entries']}")
    print(f"  created   {info['created']}")
    print(f"  index     {info['index']}")
    print(
        f"  model     {m['fingerprint'][:12]}  {m['dim']}-d  input {m['height']}x{m['width']}"
        f"  flip {'on' if m['flip'] else 'off'}  ({m['source']})"
    )
    if info["crops"]:
        print(
            f"  crops     {info['crops']}: {info['crop_files']} files, "
            f"{info['crop_bytes'] / 2**20:.1f} MiB"
        )
    else:
        print("  crops     not kept")
    if info.get("server_version"):
        print(f"  server    {info['server_version']}")
    return 0


def describe_place(entry: dict[str, Any]) -> str:
    """``cam 3  2024-05-01T12:30:00.000Z  frame 451`` for an entry's JSON: camera (or ``?``),
    the capture time (or ``-``) and the frame number when known."""
    cam = "?" if entry["camera"] is None else entry["camera"]
    frame = "" if entry["frame"] is None else f"  frame {entry['frame']}"
    return f"cam {cam}  {entry['timestamp'] or '-'}{frame}"
