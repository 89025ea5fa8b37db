"""``abdnet track``: camera footage to identities; ``abdnet track eval``: their metrics."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

HELP = "track people in camera footage and link them across cameras; 'track eval' scores it"


def _named(value: str, option: str) -> tuple[str, str]:
    name, sep, rest = value.partition("=")
    if not sep or not name or not rest:
        raise argparse.ArgumentTypeError(f"{option}: expected NAME=VALUE, got {value!r}")
    return name, rest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from abdnet.cli.extract import add_model_arguments
    from abdnet.tracking.tracker import DEFAULT_TRACKER, TRACKERS  # `abdnet track` only

    parser.description = (
        "Track each camera's people (Roboflow 'trackers', SORT by default) on given "
        "detections or those of a detector (--detector), embed a few good crops per tracklet with the model, stitch tracklets of "
        "one person inside each camera and link them across cameras with the calibrated "
        "threshold. Writes OUT/NAME.txt per camera (MOTChallenge 'frame,id,x,y,w,h,conf,-1,-1,"
        "-1', one id per person in every camera), OUT/identities.json and "
        "OUT/contact_sheet.png (and OUT/NAME.mp4 annotated videos with --video-out). 'abdnet track eval --gt ROOT --pred OUT' prints HOTA, IDF1 and "
        "MOTA per camera and the multi-camera IDF1."
    )
    parser.add_argument("action", nargs="?", choices=["eval"], help="eval: score a result folder")
    model = parser.add_argument_group("tracking (abdnet track)")
    add_model_arguments(model)
    for action in parser._actions:
        if getattr(action, "dest", "") in ("checkpoint", "onnx"):
            action.required = False
    parser._mutually_exclusive_groups[-1].required = False
    model.add_argument(
        "--camera",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a camera: a MOTChallenge sequence folder (seqinfo.ini, img1/, det/det.txt) or a "
        "video file PyAV reads; repeat for more cameras",
    )
    model.add_argument(
        "--detections",
        action="append",
        default=[],
        metavar="NAME=det.txt",
        help="MOTChallenge detections of camera NAME (default: its det/det.txt)",
    )
    model.add_argument(
        "--start",
        action="append",
        default=[],
        metavar="NAME=ISO8601",
        help="wall-clock time of camera NAME's first frame (times in identities.json)",
    )
    model.add_argument(
        "--threshold",
        metavar="FILE",
        help="threshold.json of 'abdnet calibrate' (default: RUN/threshold.json of --checkpoint)",
    )
    model.add_argument(
        "--tracker",
        default=DEFAULT_TRACKER,
        choices=[
            *TRACKERS,
            "boxmot:botsort",
            "boxmot:strongsort",
            "boxmot:deepocsort",
        ],
        help=f"tracker inside each camera (default {DEFAULT_TRACKER}; the first four are Roboflow "
        "'trackers'). boxmot:NAME is a BoxMOT appearance tracker with the run's model as its "
        "re-ID model; BoxMOT is AGPL-3.0 and abdnet does not install it (pip install boxmot)",
    )
    # --- detectors and the annotated video (footage without a detections file) ---
    det = parser.add_argument_group("detection (cameras without --detections)")
    det.add_argument(
        "--detector",
        metavar="NAME",
        help="detect people in every camera that has no --detections: "
        "fasterrcnn_mobilenet_v3_large_320_fpn, fasterrcnn_mobilenet_v3_large_fpn, "
        "ssdlite320_mobilenet_v3_large (torchvision, COCO weights downloaded once into the "
        "abdnet cache) or yolo (ultralytics, installed by the user; AGPL-3.0). Without it a "
        "sequence folder's det/det.txt is used",
    )
    det.add_argument(
        "--detector-weights",
        metavar="PATH|URL",
        help="the detector's weights: a file, https://...[#sha256=HEX] or hf://... (default: "
        "torchvision's COCO weights of the model; required for yolo)",
    )
    det.add_argument(
        "--detector-score",
        type=float,
        default=0.5,
        metavar="S",
        help="keep person boxes scoring >= S (default 0.5)",
    )
    det.add_argument(
        "--detector-batch",
        type=int,
        default=4,
        metavar="N",
        help="frames per detector call (default 4)",
    )
    det.add_argument(
        "--video-out",
        action="store_true",
        help="also write OUT/NAME.mp4 per camera: the footage with each box and its global "
        "identity id drawn, one colour per identity",
    )
    # --- end detectors ---
    model.add_argument(
        "--crops", type=int, default=6, help="crops embedded per tracklet (default 6)"
    )
    model.add_argument(
        "--no-link", action="store_true", help="no cross-camera linking (one id per camera person)"
    )
    model.add_argument(
        "--fill-gaps",
        type=float,
        default=None,
        metavar="SECONDS",
        help="interpolate each person's boxes across gaps of at most SECONDS inside a camera "
        "(hidden behind someone; not across the frame border) in the results (default "
        "2.0; 0: only the boxes the tracker reported)",
    )
    model.add_argument("--out", metavar="OUT", help="output folder")
    model.add_argument("--force", action="store_true", help="replace an existing OUT")
    model.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_gallery_arguments(parser)
    ev = parser.add_argument_group("scoring (abdnet track eval)")
    ev.add_argument(
        "--gt", metavar="ROOT", help="ground truth: ROOT/NAME/gt/gt.txt or ROOT/NAME.txt per camera"
    )
    ev.add_argument("--pred", metavar="OUT", help="a folder written by 'abdnet track'")
    ev.add_argument("--json", action="store_true", help="print the scores as JSON")


def run(args: argparse.Namespace) -> int:
    if args.action == "eval":
        return _run_eval(args)
    return _run_track(args)


def _cameras(args: argparse.Namespace):
    from abdnet.tracking import CameraInput

    if not args.camera:
        raise ValueError("--camera NAME=PATH: give at least one camera")
    cams: dict[str, Path] = {}
    for value in args.camera:
        name, path = _named(value, "--camera")
        if name in cams:
            raise ValueError(f"--camera {name}: camera named twice")
        if "/" in name or name.startswith(".") or name in ("identities", "contact_sheet"):
            raise ValueError(f"--camera {name}: not a usable camera name (it names a file)")
        cams[name] = Path(path)
    extra: dict[str, dict[str, str]] = {"--detections": {}, "--start": {}}
    for option, values in (("--detections", args.detections), ("--start", args.start)):
        for value in values:
            name, rest = _named(value, option)
            if name not in cams:
                raise ValueError(f"{option} {name}: no --camera {name}")
            if name in extra[option]:
                raise ValueError(f"{option} {name}: given twice")
            extra[option][name] = rest
    out = []
    for name, path in cams.items():
        start = None
        if name in extra["--start"]:
            try:
                start = datetime.fromisoformat(extra["--start"][name].replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(
                    f"--start {name}={extra['--start'][name]}: not an ISO 8601 time"
                ) from None
        det = extra["--detections"].get(name)
        out.append(CameraInput(name, path, Path(det) if det else None, start))
    return out


def _threshold(args: argparse.Namespace):
    from abdnet.gallery import load_threshold
    from abdnet.layout import THRESHOLD_FILE

    path = Path(args.threshold) if args.threshold else None
    if path is None and args.checkpoint and Path(args.checkpoint).is_dir():
        candidate = Path(args.checkpoint) / THRESHOLD_FILE
        if candidate.is_file():
            path = candidate
    if path is None:
        raise ValueError(
            f"no link threshold: {args.checkpoint or args.onnx} keeps no {THRESHOLD_FILE}; run "
            f"'abdnet calibrate --checkpoint RUN --data ROOT --out RUN/{THRESHOLD_FILE}' or "
            f"pass --threshold FILE"
        )
    return load_threshold(path), path


def _run_track(args: argparse.Namespace) -> int:
    from abdnet.cli.extract import build_extractor, progress_bar
    from abdnet.files import FolderLock, atomic_directory, check_output
    from abdnet.gallery import describe_extractor
    from abdnet.tracking import identify, track_camera, write_results
    from abdnet.tracking.pipeline import FILL_GAP_SECONDS

    if not (args.checkpoint or args.onnx):
        raise ValueError("--checkpoint RUN (or --onnx MODEL) is required")
    if not args.out:
        raise ValueError("--out OUT is required")
    if args.crops < 1:
        raise ValueError(f"--crops must be >= 1, got {args.crops}")
    if args.fill_gaps is not None and not args.fill_gaps >= 0:
        raise ValueError(f"--fill-gaps must be >= 0 seconds, got {args.fill_gaps}")
    cameras = _cameras(args)
    out = check_output(args.out, force=args.force, option="--out", folder=True)
    threshold, tpath = _threshold(args)
    # embed as the threshold was measured (its flip averaging), in its space
    extractor, info = build_extractor(args, flip=bool(args.flip or threshold.model.flip))
    model = describe_extractor(extractor, source=info["source"])
    threshold.model.check_same(model, f"threshold {tpath}")
    show = not args.no_progress
    _check_gallery(args, model, out)  # before the work: a gallery of another model is refused
    detector = _detector(args, extractor)
    tracks = []
    for cam in cameras:
        from abdnet.tracking.video import open_source

        total = open_source(cam.path).info.length or None
        with progress_bar(total, f"track {cam.name}", show) as bar:
            tracks.append(
                track_camera(
                    cam,
                    input_height=extractor.config.data.height,
                    tracker=args.tracker,
                    crops=args.crops,
                    detector=detector,
                    detector_name=args.detector or "",
                    embedder=extractor,
                    progress=bar.update,
                )
            )
    n_crops = sum(len(t.crops) for c in tracks for t in c.tracklets)
    with progress_bar(n_crops, "embed crops", show) as bar:
        identities = identify(
            tracks,
            embedder=extractor,
            threshold=threshold.threshold,
            stitch_threshold=threshold.stitch_threshold,
            far=threshold.far,
            link=not args.no_link,
            fill_gap=FILL_GAP_SECONDS if args.fill_gaps is None else args.fill_gaps,
            progress=bar.update,
        )
    record = _enrol(args, model, tracks, identities, show) if args.gallery else None
    with FolderLock(out, what="--out"), atomic_directory(out) as tmp:
        write_results(tmp, tracks, identities, model=model.short, gallery=record)
        if args.video_out:
            from abdnet.tracking import write_annotated_video

            for cam in tracks:
                with progress_bar(cam.frames, f"video {cam.camera.name}", show) as bar:
                    write_annotated_video(
                        tmp / f"{cam.camera.name}.mp4", cam, identities, progress=bar.update
                    )
    people = len(set(identities.labels.values()))
    multi = sum(
        1
        for p in set(identities.labels.values())
        if len({k.split("/")[0] for k, v in identities.labels.items() if v == p}) > 1
    )
    for cam in tracks:
        print(
            f"{cam.camera.name}: {cam.frames} frames, {cam.detections} detections, "
            f"{len(cam.tracklets)} tracklets"
        )
    print(
        f"{people} identities ({multi} seen by more than one camera); link threshold "
        f"{threshold.threshold:.4f} (FAR {threshold.far:g}, {tpath}); wrote {out}"
    )
    return 0


# -- abdnet track --gallery ----------------------------------------------------------------


def _add_gallery_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description += (
        " With --gallery, every identity's embedded crops are enrolled into the gallery "
        "(camera, time or frame, label PREFIX/ID), so that 'abdnet serve' answers where and "
        "when a person was seen (POST /search/sightings, the page's timeline)."
    )
    g = parser.add_argument_group("into the gallery (abdnet track --gallery)")
    g.add_argument(
        "--gallery",
        metavar="PATH.db|URI",
        help="also enrol every identity's embedded crops (camera, time or frame, label "
        "PREFIX/ID) into this gallery: a Milvus Lite file (created on first use) or a Milvus "
        "server (http://HOST:19530); a gallery of another model is refused",
    )
    g.add_argument(
        "--collection",
        default="abdnet_gallery",
        help="collection name in the gallery database (default abdnet_gallery)",
    )
    g.add_argument(
        "--gallery-crops",
        metavar="DIR|URL",
        help="where the gallery keeps crops (default: NAME.crops beside PATH.db; for a server, "
        "none unless given)",
    )
    g.add_argument(
        "--label-prefix",
        metavar="PREFIX",
        help="gallery labels are PREFIX/ID (default: OUT's name and the run's start time, "
        "OUTNAME@YYYYmmddTHHMMSSZ, unique to the run)",
    )


def _open_gallery(args: argparse.Namespace, model):
    from abdnet.gallery import Gallery

    return Gallery.open(
        args.gallery, model=model, create=True, crops=args.gallery_crops, collection=args.collection
    )


def _check_gallery(args: argparse.Namespace, model, out: Path) -> None:
    """Check the --gallery options, and that the gallery (created when new) is ``model``'s."""
    from abdnet.tracking.enrol import check_label_prefix, default_label_prefix

    if not args.gallery:
        for option in ("gallery_crops", "label_prefix"):
            if getattr(args, option):
                raise ValueError(f"--{option.replace('_', '-')} needs --gallery")
        return
    if args.label_prefix is None:
        args.label_prefix = default_label_prefix(out)
    check_label_prefix(args.label_prefix, 10**9)
    _open_gallery(args, model).close()


def _enrol(args: argparse.Namespace, model, tracks, identities, show: bool) -> dict:
    """Enrol the identities' crops; print and return what ``identities.json`` records."""
    from abdnet.cli.extract import progress_bar
    from abdnet.tracking import camera_numbers, enrol_identities

    numbers = camera_numbers([c.camera.name for c in tracks])
    n_crops = sum(
        1 for c in tracks for t in c.tracklets for k in t.crops if k.embedding is not None
    )
    with _open_gallery(args, model) as gallery, progress_bar(n_crops, "enrol crops", show) as bar:
        report = enrol_identities(
            gallery,
            tracks,
            identities,
            model=model,
            label_prefix=args.label_prefix,
            numbers=numbers,
            progress=bar.update,
        )
    cams = ", ".join(f"{n}={i}" for n, i in numbers.items())
    print(
        f"gallery {gallery.uri}: {report.added} crops added, {report.skipped} already enrolled"
        + (f", {len(report.failed)} too small to enrol" if report.failed else "")
        + f"; labels {args.label_prefix}/ID; cameras {cams}"
    )
    return {
        "uri": gallery.uri,
        "collection": gallery.collection,
        "label_prefix": args.label_prefix,
        "cameras": numbers,
        "added": report.added,
        "already_enrolled": report.skipped,
        "not_enrolled": [{"crop": c, "reason": r} for c, r in report.failed],
    }


def _detector(args: argparse.Namespace, extractor):
    """The --detector of the run, or None (every camera then needs a detections file)."""
    if not args.detector:
        if args.detector_weights:
            raise ValueError("--detector-weights needs --detector NAME")
        return None
    from abdnet.tracking import build_detector

    device = str(getattr(extractor, "device", "cpu"))
    return build_detector(
        args.detector,
        weights=args.detector_weights,
        score_threshold=args.detector_score,
        batch_size=args.detector_batch,
        device=device,
        progress=not args.no_progress,
    )


def _run_eval(args: argparse.Namespace) -> int:
    import json

    from abdnet.tracking import evaluate_tracking, find_ground_truth

    if not args.gt or not args.pred:
        raise ValueError("track eval: --gt ROOT and --pred OUT are required")
    pred_dir = Path(args.pred)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"--pred {pred_dir}: no such folder")
    pred = {p.stem: p for p in sorted(pred_dir.glob("*.txt"))}
    if not pred:
        raise ValueError(f"--pred {pred_dir}: no NAME.txt result files")
    gt = {name: find_ground_truth(args.gt, name) for name in pred}
    score = evaluate_tracking(gt=gt, pred=pred)
    if args.json:
        doc = {
            "cameras": {c.camera: c.__dict__ for c in score.cameras},
            "multi_camera_idf1": score.multi_camera_idf1,
            "gt_identities": score.gt_identities,
            "pred_identities": score.pred_identities,
        }
        print(json.dumps(doc, indent=2))
        return 0
    print(f"{'camera':12s} {'HOTA':>7s} {'IDF1':>7s} {'MOTA':>7s} {'IDSW':>5s}")
    for c in score.cameras:
        print(
            f"{c.camera:12s} {100 * c.hota:7.2f} {100 * c.idf1:7.2f} {100 * c.mota:7.2f} "
            f"{c.id_switches:5d}"
        )
    print(
        f"multi-camera IDF1 {100 * score.multi_camera_idf1:.2f} "
        f"({score.pred_identities} predicted / {score.gt_identities} true identities)",
        file=sys.stdout,
    )
    return 0
