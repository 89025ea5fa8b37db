"""``abdnet eval``: CMC / mAP / mINP of a trained model on a data set's query/gallery."""

from __future__ import annotations

import argparse
import dataclasses
import json

from abdnet.cli.options import CHECKPOINT_HELP

HELP = "evaluate a checkpoint (run folder, file, URL, hf://) or an exported ONNX model on query/gallery"


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
    parser.add_argument("--batch-size", type=int, default=None, help="images per forward pass")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from abdnet.data import build_dataset
    from abdnet.engine import evaluate_model, resolve_device

    if args.onnx:
        from abdnet.export import OnnxEmbedder

        embedder = OnnxEmbedder(args.onnx)
        cfg = embedder.config
    else:
        from abdnet.models.io import load_model

        loaded = load_model(args.checkpoint)
        cfg = loaded.config
    data_cfg = cfg.data
    if args.data:
        data_cfg = dataclasses.replace(data_cfg, name="auto", root=str(args.data))
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
    eval_cfg = dataclasses.replace(cfg.eval, **changes)
    dataset = build_dataset(data_cfg)
    progress = not (args.no_progress or args.json)
    if args.onnx:
        from abdnet.export import evaluate_embedder

        report = evaluate_embedder(
            embedder, dataset, eval_cfg, data_cfg=data_cfg, progress=progress
        )
    else:
        device = resolve_device(args.device)
        model = loaded.model.to(device).eval()
        report = evaluate_model(model, dataset, eval_cfg, data_cfg, device, progress=progress)
    d = report.to_dict()
    if args.json:
        print(json.dumps(d))
        return 0
    print(f"{dataset.name}: {d['num_query']} queries, {d['num_gallery']} gallery images")
    print(f"  mAP    {100 * d['mAP']:6.2f}%")
    print(f"  mINP   {100 * d['mINP']:6.2f}%")
    for k in (1, 5, 10):
        print(f"  rank-{k:<2} {100 * d[f'rank{k}']:6.2f}%")
    if d["num_query_skipped"]:
        print(f"  ({d['num_query_skipped']} queries without a valid gallery match skipped)")
    return 0
