"""``abdnet export onnx``: the embedding network as an ONNX model, checked against PyTorch."""

from __future__ import annotations

import argparse

from abdnet.cli.options import add_force_option, int_at_least, positive_float, positive_int

HELP = "export a checkpoint's embedding network (to ONNX), verified against PyTorch"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="export_format", metavar="{onnx}", required=True)
    p = sub.add_parser(
        "onnx",
        help="ONNX model: (B,3,H,W) normalized input -> raw (B,D) embedding",
        description="Export the eval-mode embedding network. Input: a (B, 3, H, W) float batch "
        "already resized and normalized with the checkpoint's mean/std (stored in the file's "
        "metadata, which 'abdnet extract --onnx' uses). Output: the raw, un-normalized "
        "embedding. The export is refused (nothing written) if ONNX Runtime differs from "
        "PyTorch by more than --atol x max(1, largest |embedding|) (max abs on the raw "
        "embedding: the plain --atol for embeddings of magnitude <= 1).",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        metavar="RUN|FILE",
        help="run folder, checkpoint folder, model.safetensors or official .pth.tar",
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
    add_force_option(p, "an existing --out file")


def run(args: argparse.Namespace) -> int:
    from abdnet.export import export_onnx
    from abdnet.files import check_output

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
