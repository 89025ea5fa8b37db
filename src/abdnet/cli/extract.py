"""``abdnet extract``: embeddings of a folder / list of images into a .npz feature file."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from abdnet.cli.options import CHECKPOINT_HELP, add_force_option, positive_int
from abdnet.config import BackendName, choices

BACKENDS = choices(BackendName)

HELP = "extract L2-normalized embeddings of images into a .npz (features, paths, pids/camids)"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--checkpoint / --onnx and the extraction options shared by extract and search."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--checkpoint",
        metavar="RUN|FILE|URL",
        help=CHECKPOINT_HELP,
    )
    src.add_argument(
        "--onnx",
        metavar="MODEL.onnx",
        help="a model written by 'abdnet export onnx' (no PyTorch checkpoint needed)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=64, help="images per forward pass (default 64)"
    )
    parser.add_argument(
        "--flip",
        action="store_true",
        help="average the raw embeddings of each image and its mirror, then normalize "
        "(an ONNX model exported with --flip always does this)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA if available), cpu, cuda, cuda:1 ... (PyTorch only)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="what runs the model: torch (PyTorch fp32, the default with --checkpoint), onnx "
        "(ONNX Runtime on the exported, parity-checked graph; the default with --onnx), "
        "openvino (needs the openvino package), or auto: the fastest of these (and PyTorch "
        "bf16 on CPUs with native bf16) whose features stay within cosine 0.999 of fp32 "
        "PyTorch, measured once per machine and model and cached in $ABDNET_CACHE/backends",
    )
    parser.add_argument(
        "--remeasure",
        action="store_true",
        help="with --backend auto: measure the backends again instead of using the cached choice",
    )


def build_extractor(
    args: argparse.Namespace,
    *,
    normalize: bool = True,
    flip: bool | None = None,
    device: Any = None,
):
    """The FeatureExtractor the arguments describe, and a dict recording how it extracts.

    ``device`` overrides ``--device`` (a torchrun rank's own GPU)."""
    from abdnet.retrieval import FeatureExtractor

    flip = bool(args.flip) if flip is None else flip
    if args.remeasure and args.backend != "auto":
        raise ValueError("--remeasure: only with --backend auto")
    if args.onnx:
        from abdnet.export import OnnxEmbedder, OpenVinoEmbedder

        if args.backend not in (None, "onnx", "openvino"):
            raise ValueError(
                f"--backend {args.backend} with --onnx: an ONNX file runs with --backend onnx "
                f"(ONNX Runtime, the default) or openvino"
            )
        if args.backend == "openvino":
            embedder = OpenVinoEmbedder(args.onnx)
        else:
            embedder = OnnxEmbedder(args.onnx)
        # A graph exported with flip already averages; flipping again outside would be wrong.
        extractor = FeatureExtractor(
            embedder,
            batch_size=args.batch_size,
            flip=flip and not embedder.flip,
            normalize=normalize,
            config=embedder.config,
        )
        backend = "openvino fp32" if args.backend == "openvino" else "onnxruntime fp32"
        info = {"source": str(args.onnx), "backend": backend, "flip": flip or embedder.flip}
    else:
        extractor = FeatureExtractor(
            args.checkpoint,
            device=device if device is not None else args.device,
            batch_size=args.batch_size,
            flip=flip,
            normalize=normalize,
            backend=args.backend or "torch",
            remeasure=args.remeasure,
        )
        info = {"source": str(args.checkpoint), "backend": extractor.backend_name, "flip": flip}
    info["normalize"] = normalize
    info["space"] = extractor.space.to_dict()  # what an index of these features searches in
    return extractor, info


def progress_bar(total: int | None, desc: str, show: bool = True):
    """A tqdm progress bar on stderr (hidden when not ``show``)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, leave=False, disable=not show)


def run_extraction(extractor, paths: list[str], *, skip_bad: bool, desc: str):
    """Extract ``paths`` with a tqdm progress bar on stderr; returns the Extraction."""
    with progress_bar(len(paths), desc) as bar:
        return extractor.extract(paths, skip_bad=skip_bad, progress=bar.update)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Scale out with torchrun: 'torchrun --nproc_per_node N -m abdnet.cli.main extract ...' "
        "gives each process a contiguous share of the images and writes the same --out file "
        "as one process (rank 0 merges the shares; a failed rank fails the run and nothing "
        "is written)."
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--images",
        nargs="+",
        required=True,
        metavar="DIR|FILE",
        help="image files and/or folders (searched recursively for .jpg/.jpeg/.png/.bmp/...)",
    )
    parser.add_argument("--out", required=True, metavar="FEATS.npz", help="output feature file")
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip (and list) unreadable images instead of failing",
    )
    parser.add_argument(
        "--raw", action="store_true", help="store raw embeddings (no L2 normalization)"
    )
    add_force_option(parser, "an existing --out file")


def run(args: argparse.Namespace) -> int:
    import torch

    from abdnet.engine import cleanup, init_distributed, resolve_device
    from abdnet.files import check_output
    from abdnet.retrieval import ShardFailedError, collect_images, extract_feature_file

    # before any work: an existing or unwritable --out fails now, not after the extraction
    check_output(args.out, force=args.force)
    paths = collect_images(args.images)
    if not paths:
        raise ValueError(f"--images {' '.join(args.images)}: no image files found")
    # under torchrun: join the process group (gloo on the CPU), each rank its share
    ctx, device = init_distributed(
        resolve_device(args.device) if args.checkpoint else torch.device("cpu")
    )
    try:
        extractor, info = build_extractor(args, normalize=not args.raw, device=device)
        with progress_bar(len(paths) if not ctx.enabled else None, "extract", ctx.is_main) as bar:
            result = extract_feature_file(
                extractor,
                paths,
                args.out,
                meta=info,
                skip_bad=args.skip_bad,
                ctx=ctx,
                progress=bar.update,
            )
    except ShardFailedError as exc:
        print(f"abdnet extract: error: {exc}", file=sys.stderr)
        return 1
    finally:
        cleanup(ctx)
    if result.features is None:  # a rank other than 0: rank 0 reports
        return 0
    for item, reason in result.skipped:
        print(f"skipped {item}: {reason}", file=sys.stderr)
    feats = result.features
    n, d = feats.features.shape
    extra = f", skipped {len(result.skipped)}" if result.skipped else ""
    labels = ", with pids/camids" if feats.pids is not None else ""
    print(f"wrote {result.path}: {n} x {d} features{labels}{extra}")
    return 0
