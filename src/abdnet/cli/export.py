"""``abdnet export onnx|hf``: an ONNX model checked against PyTorch (optionally INT8, checked
on a data set), or a Hugging-Face-style model folder with a model card."""

from __future__ import annotations

import argparse

from abdnet.cli.options import (
    CHECKPOINT_HELP,
    add_force_option,
    int_at_least,
    non_negative_float,
    positive_float,
    positive_int,
)

HELP = "export a checkpoint: ONNX (fp32 or INT8, verified) or a Hugging Face model folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="export_format", metavar="{onnx,hf}", required=True)
    p = sub.add_parser(
        "onnx",
        help="ONNX model: (B,3,H,W) normalized input -> raw (B,D) embedding",
        description="Export the eval-mode embedding network. Input: a (B, 3, H, W) float batch "
        "already resized and normalized with the checkpoint's mean/std (stored in the file's "
        "metadata, which 'abdnet extract --onnx' uses). Output: the raw, un-normalized "
        "embedding. The export is refused (nothing written) if ONNX Runtime differs from "
        "PyTorch by more than --atol x max(1, largest |embedding|) (max abs on the raw "
        "embedding: the plain --atol for embeddings of magnitude <= 1). With --quantize int8 "
        "the fp32 graph is quantized statically (activation ranges measured on crops of "
        "--calibration) and both are evaluated on that data set's query/gallery: the INT8 "
        "model is refused (nothing written) if its mAP is more than --max-map-drop points "
        "below fp32.",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        metavar="RUN|FILE|URL",
        help=CHECKPOINT_HELP,
    )
    p.add_argument("--out", required=True, metavar="MODEL.onnx")
    p.add_argument(
        "--opset", type=int_at_least(7), default=17, help="ONNX opset version (default 17)"
    )
    p.add_argument(
        "--dynamic-batch", action="store_true", help="allow any batch size (checked with 1 and 5)"
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=1,
        help="fixed batch size without --dynamic-batch (default 1)",
    )
    p.add_argument(
        "--flip", action="store_true", help="average with the mirrored image inside the graph"
    )
    p.add_argument(
        "--atol",
        type=positive_float,
        default=1e-4,
        help="parity tolerance: max abs difference, relative to the embedding scale when it exceeds 1 (default 1e-4)",
    )
    p.add_argument(
        "--quantize",
        choices=["int8"],
        help="static INT8 quantization (ONNX Runtime QDQ, per-channel weights); needs "
        "--calibration; the INT8 graph takes any batch size",
    )
    p.add_argument(
        "--calibration",
        metavar="ROOT",
        help="data set (any layout abdnet reads) whose training crops calibrate the INT8 "
        "activation ranges and whose query/gallery check its mAP",
    )
    p.add_argument(
        "--calibration-images",
        type=positive_int,
        default=256,
        metavar="N",
        help="crops sampled for calibration (default 256)",
    )
    p.add_argument(
        "--max-map-drop",
        type=non_negative_float,
        default=1.0,
        metavar="POINTS",
        help="largest INT8 mAP loss vs fp32 accepted, in percentage points (default 1)",
    )

    add_force_option(p, "an existing --out file")

    h = sub.add_parser(
        "hf",
        help="Hugging Face model folder: model.safetensors, config.yaml, README.md model card",
        description="Write a folder ready for `hf upload OWNER/REPO DIR`: the weights "
        "(model.safetensors, config in its metadata), config.yaml and a README.md model card "
        "(architecture, training data and recipe, the run's test metrics from metrics.jsonl, "
        "citation, licence). `--checkpoint hf://OWNER/REPO` loads it back.",
    )
    h.add_argument("--checkpoint", required=True, metavar="RUN|FILE|URL", help=CHECKPOINT_HELP)
    h.add_argument("--out", required=True, metavar="DIR", help="model folder to write")
    h.add_argument(
        "--repo",
        metavar="OWNER/REPO",
        help="Hub repository the folder is meant for (used in the card's usage examples)",
    )
    h.add_argument("--license", default="mit", help="Hub licence id of the weights (default mit)")
    add_force_option(h, "an existing --out folder")


def run(args: argparse.Namespace) -> int:
    if args.export_format == "hf":
        return _run_hf(args)
    return _run_onnx(args)


def _run_hf(args: argparse.Namespace) -> int:
    from abdnet.export import export_hf

    if args.repo is not None and args.repo.count("/") != 1:
        raise ValueError(f"--repo {args.repo}: expected OWNER/REPO")
    result = export_hf(
        args.checkpoint, args.out, repo_id=args.repo, license=args.license, force=args.force
    )
    m = result.metrics
    if m is None or not m.test:
        where = "no run folder" if m is None else f"epoch {m.epoch} has no test evaluation"
        metrics = f"no metrics in the card ({where})"
    else:
        metrics = f"test mAP {100 * m.test['mAP']:.2f}% (epoch {m.epoch})"
    print(f"wrote {result.path}: {', '.join(result.files)}; {result.feature_dim}-d; {metrics}")
    return 0


def _run_int8(args: argparse.Namespace) -> int:
    from abdnet.export import quantize_int8
    from abdnet.files import check_output

    if not args.calibration:
        raise ValueError("--quantize int8 needs --calibration ROOT (a data set to calibrate on)")
    if args.batch_size != 1:
        raise ValueError(
            "--batch-size is not used with --quantize: INT8 graphs take any batch size"
        )
    check_output(args.out, force=args.force)  # before loading, calibrating and evaluating
    r = quantize_int8(
        args.checkpoint,
        args.out,
        args.calibration,
        calibration_images=args.calibration_images,
        max_map_drop=args.max_map_drop,
        flip=args.flip,
        opset=args.opset,
        atol=args.atol,
    )
    print(
        f"wrote {r.path}: INT8, calibrated on {r.calibration_images} {r.calibration_split} "
        f"images; mAP {100 * r.map_int8:.2f}% vs fp32 {100 * r.map_fp32:.2f}% (drop "
        f"{r.map_drop:.2f} points, allowed {args.max_map_drop:g}); rank-1 "
        f"{100 * r.rank1_int8:.2f}% vs {100 * r.rank1_fp32:.2f}% on {r.num_query} query / "
        f"{r.num_gallery} gallery images"
    )
    return 0


def _run_onnx(args: argparse.Namespace) -> int:
    from abdnet.export import export_onnx
    from abdnet.files import check_output

    if args.quantize:
        return _run_int8(args)
    if args.calibration:
        raise ValueError("--calibration is only used with --quantize int8")
    check_output(args.out, force=args.force)  # before loading and exporting
    result = export_onnx(
        args.checkpoint,
        args.out,
        opset=args.opset,
        dynamic_batch=args.dynamic_batch,
        flip=args.flip,
        batch_size=args.batch_size,
        atol=args.atol,
    )
    c, h, w = result.input_shape
    batch = "B" if result.dynamic_batch else str(args.batch_size)
    print(
        f"wrote {result.path}: input ({batch}, {c}, {h}, {w}) -> embedding ({batch}, "
        f"{result.feature_dim}), opset {result.opset}, flip {result.flip}; max |onnxruntime - "
        f"pytorch| = {result.max_abs_diff:.2e} on batch sizes {list(result.batch_sizes)}"
    )
    return 0
