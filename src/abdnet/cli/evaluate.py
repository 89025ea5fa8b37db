"""``abdnet eval``: CMC / mAP / mINP of a trained model on a data set's query/gallery."""

from __future__ import annotations

import argparse
import json

from abdnet.cli.options import CHECKPOINT_HELP, positive_int

HELP = (
    "evaluate a checkpoint (run folder, file, URL, hf://) or an exported ONNX model on "
    "query/gallery (images, or the tracklets of a video data set): CMC, mAP, mINP, TAR@FAR "
    "and EER"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="RUN|FILE|URL", help=CHECKPOINT_HELP)
    source.add_argument(
        "--onnx",
        metavar="MODEL.onnx",
        help="a model written by 'abdnet export onnx' (fp32 or INT8), run with ONNX Runtime; "
        "its metadata carries the config",
    )
    parser.add_argument(
        "--data",
        metavar="ROOT",
        help="data set folder (layout detected; MARS, DukeMTMC-VideoReID, iLIDS-VID and "
        "PRID2011 are scored tracklet to tracklet); default: the data set the model was "
        "trained on",
    )
    parser.add_argument(
        "--frames",
        type=int,
        default=0,
        metavar="N",
        help="video data sets: pool N frames per tracklet, spread evenly (torchreid's "
        "'evenly'); default 0: every frame ('all')",
    )
    parser.add_argument(
        "--split",
        type=int,
        default=0,
        metavar="K",
        help="video data sets: the train/test split of iLIDS-VID and PRID2011 (default 0)",
    )
    parser.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")
    parser.add_argument("--aqe", action="store_true", help="average query expansion")
    parser.add_argument("--flip", action="store_true", help="average with mirrored images")
    parser.add_argument(
        "--metric", choices=["euclidean", "cosine"], default=None, help="distance (default: config)"
    )
    parser.add_argument(
        "--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (PyTorch only)"
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16", "auto"],
        default=None,
        help="arithmetic of the forward passes (default: the run's eval.precision, fp32 unless "
        "the config says otherwise, so the numbers match what training recorded; PyTorch only: "
        "an ONNX model runs as exported)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=None, help="images per forward pass"
    )
    parser.add_argument(
        "--threshold-out",
        metavar="threshold.json",
        help="also write the threshold for --far, as 'abdnet calibrate' does (same distance, "
        "same file: 'abdnet serve --threshold' takes it)",
    )
    parser.add_argument(
        "--far",
        type=float,
        default=1e-3,
        help="target false-accept rate of --threshold-out (default 1e-3)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite --threshold-out")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from abdnet.config import replace_checked, with_data_root
    from abdnet.data import build_dataset, detect_video_layout, open_video_dataset
    from abdnet.engine import (
        choose_precision,
        evaluate_embedder,
        evaluate_tracklets,
        resolve_device,
    )
    from abdnet.retrieval import FeatureExtractor

    if args.frames < 0:
        raise ValueError(f"--frames must be >= 0 (0: every frame), got {args.frames}")
    video = detect_video_layout(args.data) if args.data else None
    if video is None and (args.frames or args.split):
        raise ValueError(
            f"--frames / --split: only for a video data set (--data {args.data or '(none)'} "
            "holds none)"
        )
    out = None
    if args.threshold_out:
        from abdnet.files import check_output

        if not 0.0 < args.far < 1.0:
            raise ValueError(f"--far must be in (0, 1), got {args.far}")
        out = check_output(args.threshold_out, force=args.force, option="--threshold-out")
    if args.onnx:
        from abdnet.export import OnnxEmbedder

        source: object = OnnxEmbedder(args.onnx)
        cfg = source.config  # type: ignore[attr-defined]
    else:
        from abdnet.models import load_model

        source = load_model(args.checkpoint)
        cfg = source.config  # type: ignore[attr-defined]
    data_cfg = cfg.data
    if args.data:
        data_cfg = with_data_root(data_cfg, args.data)
    changes: dict[str, object] = {}
    if args.rerank:
        changes["rerank"] = True
    if args.aqe:
        changes["aqe"] = True
    if args.flip:
        changes["flip"] = True
    if args.metric:
        changes["metric"] = args.metric
    if args.batch_size:
        changes["batch_size"] = args.batch_size
    if args.precision:
        changes["precision"] = args.precision
    eval_cfg = replace_checked(cfg.eval, "eval", **changes)
    if out is not None:
        from abdnet.gallery import calibration_fars

        more = [f for f in calibration_fars(args.far) if f not in eval_cfg.verification_fars]
        if more:
            eval_cfg = replace_checked(
                eval_cfg, "eval", verification_fars=(*eval_cfg.verification_fars, *more)
            )
    if args.onnx:
        quantized = "quantization" in source.metadata  # type: ignore[attr-defined]
        precision_name = "int8" if quantized else "fp32"
        precision_reason = f"ONNX model {args.onnx}, run as exported"
        # A graph exported with flip already averages; flipping again outside would be wrong.
        flip = eval_cfg.flip and not source.flip  # type: ignore[attr-defined]
        extractor = FeatureExtractor(
            source, device="cpu", batch_size=eval_cfg.batch_size, flip=flip,
            flip_mode=eval_cfg.flip_mode, config=cfg,
        )  # fmt: skip
    else:
        device = resolve_device(args.device)
        precision = choose_precision(device, eval_cfg.precision)
        precision_name, precision_reason = precision.name, precision.reason
        extractor = FeatureExtractor(
            source, device=device, batch_size=eval_cfg.batch_size, flip=eval_cfg.flip,
            flip_mode=eval_cfg.flip_mode, precision=precision.name,
        )  # fmt: skip
    if video is not None:
        from abdnet.data import sample_frames

        dataset = open_video_dataset(video[1], split=args.split)
        unit = "tracklets"
        total = sum(
            len(sample_frames(len(r), args.frames)) for r in dataset.query + dataset.gallery
        )
    else:
        dataset = build_dataset(data_cfg)
        unit = "images"
        total = len(dataset.query) + len(dataset.gallery)
    bar = None
    if not (args.no_progress or args.json):
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="extract", leave=False)
    try:
        update = bar.update if bar is not None else None
        if video is not None:
            result = evaluate_tracklets(
                extractor, dataset, eval_cfg, frames=args.frames, progress=update
            )
        else:
            result = evaluate_embedder(extractor, dataset, eval_cfg, progress=update)
    finally:
        if bar is not None:
            bar.close()
    space = extractor.space
    d = result.to_dict()
    d["precision"] = precision_name
    d["distance"] = space.distance_name
    if out is not None:
        _write_threshold(args, out, result, extractor, dataset_root=str(data_cfg.root))
    if video is not None:
        d["unit"] = "tracklet"
        d["frames_per_tracklet"] = args.frames or "all"
    if args.json:
        print(json.dumps(d))
        return 0
    print(f"{dataset.name}: {d['num_query']} queries, {d['num_gallery']} gallery {unit}")
    if video is not None:
        pooled = f"{args.frames} frames spread evenly" if args.frames else "every frame"
        print(f"  tracklet features: mean of the raw embeddings of {pooled}")
    print(f"  precision {precision_name} ({precision_reason})")
    print(f"  mAP    {100 * d['mAP']:6.2f}%")
    print(f"  mINP   {100 * d['mINP']:6.2f}%")
    for k in (1, 5, 10):
        print(f"  rank-{k:<2} {100 * d[f'rank{k}']:6.2f}%")
    if result.verification is not None:
        v = result.verification
        print(f"  verification distances: {space.rule}, as 'abdnet calibrate' and 'serve'")
        for p in v.points:
            print(
                f"  TAR@FAR={p.far_target:.0e} {100 * p.tar:6.2f}%  (threshold {p.threshold:.6f})"
            )
        print(
            f"  EER    {100 * v.eer:6.2f}%  ({v.num_genuine} genuine / {v.num_impostor} impostor "
            f"cross-camera pairs)"
        )
    if d["num_query_skipped"]:
        print(f"  ({d['num_query_skipped']} queries without a valid gallery match skipped)")
    if out is not None:
        print(f"wrote {out}")
    return 0


def _write_threshold(args, out, result, extractor, *, dataset_root: str) -> None:
    """``threshold.json`` for ``--far`` from the ROC just computed, as calibrate writes it."""
    from datetime import datetime, timezone

    from abdnet.gallery import Threshold, describe_extractor, format_time, save_threshold

    if result.verification is None:
        raise ValueError(
            "--threshold-out: no verification ROC (no genuine or no impostor cross-camera pair)"
        )
    source = str(args.onnx or args.checkpoint)
    threshold = Threshold.from_verification(
        result.verification,
        far=args.far,
        model=describe_extractor(extractor, source=source),
        data=str(args.data or dataset_root),
        created=format_time(datetime.now(timezone.utc)) or "",
    )
    save_threshold(out, threshold)
