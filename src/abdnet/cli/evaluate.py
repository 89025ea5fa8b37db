"""``abdnet eval``: CMC / mAP / mINP of a trained model on a data set's query/gallery."""

from __future__ import annotations

import argparse
import json

from abdnet.cli.options import CHECKPOINT_HELP, positive_int

HELP = (
    "evaluate a checkpoint (run folder, file, URL, hf://) or an exported ONNX model on "
    "query/gallery: CMC, mAP, mINP, TAR@FAR and EER"
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
        help="data set folder (layout detected); default: the data set the model was trained on",
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
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from abdnet.config import replace_checked, with_data_root
    from abdnet.data import build_dataset
    from abdnet.engine import choose_precision, evaluate_model, resolve_device

    if args.onnx:
        from abdnet.export import OnnxEmbedder

        embedder = OnnxEmbedder(args.onnx)
        cfg = embedder.config
    else:
        from abdnet.models import load_model

        loaded = load_model(args.checkpoint)
        cfg = loaded.config
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
    dataset = build_dataset(data_cfg)
    bar = None
    if not (args.no_progress or args.json):
        from tqdm.auto import tqdm

        bar = tqdm(total=len(dataset.query) + len(dataset.gallery), desc="extract", leave=False)
    progress = bar.update if bar is not None else None
    try:
        if args.onnx:
            from abdnet.export import evaluate_backend

            result = evaluate_backend(
                embedder, dataset, eval_cfg, data_cfg=data_cfg, progress=progress
            )
            quantized = "quantization" in embedder.metadata
            precision_name = "int8" if quantized else "fp32"
            precision_reason = f"ONNX model {args.onnx}, run as exported"
        else:
            device = resolve_device(args.device)
            precision = choose_precision(device, eval_cfg.precision)
            result = evaluate_model(
                loaded.model.to(device).eval(),
                dataset,
                eval_cfg,
                data_cfg,
                device,
                precision=precision,
                progress=progress,
            )
            precision_name, precision_reason = precision.name, precision.reason
    finally:
        if bar is not None:
            bar.close()
    d = result.to_dict()
    d["precision"] = precision_name
    if args.json:
        print(json.dumps(d))
        return 0
    print(f"{dataset.name}: {d['num_query']} queries, {d['num_gallery']} gallery images")
    print(f"  precision {precision_name} ({precision_reason})")
    print(f"  mAP    {100 * d['mAP']:6.2f}%")
    print(f"  mINP   {100 * d['mINP']:6.2f}%")
    for k in (1, 5, 10):
        print(f"  rank-{k:<2} {100 * d[f'rank{k}']:6.2f}%")
    if result.verification is not None:
        v = result.verification
        for p in v.points:
            print(
                f"  TAR@FAR={p.far_target:.0e} {100 * p.tar:6.2f}%  (distance <= {p.threshold:.4f})"
            )
        print(
            f"  EER    {100 * v.eer:6.2f}%  ({v.num_genuine} genuine / {v.num_impostor} impostor cross-camera pairs)"
        )
    if d["num_query_skipped"]:
        print(f"  ({d['num_query_skipped']} queries without a valid gallery match skipped)")
    return 0
