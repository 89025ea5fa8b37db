"""``abdnet serve``: the HTTP API and web page over a gallery (FastAPI on uvicorn)."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from abdnet.cli.extract import add_model_arguments
from abdnet.cli.gallery import add_gallery_arguments, add_min_side_option, open_gallery_for_model

if TYPE_CHECKING:
    from abdnet.service import AccessPolicy, ServiceSettings

HELP = "serve a gallery over HTTP: enrol, search, verify, browse, and a web page"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Serve the gallery (created on first use) with an HTTP API and a web page at /. "
        "Writes (enrol, delete) need a bearer key from --api-key-file; reads are open to the "
        "local host only unless --public-read. See docs/service.md."
    )
    add_gallery_arguments(parser, creating=True)
    add_model_arguments(parser)
    parser.add_argument(
        "--threshold",
        metavar="FILE",
        help="threshold.json from 'abdnet calibrate': results get match true/false",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument(
        "--api-key-file",
        metavar="FILE",
        help="bearer keys allowed to write (one per line, at least 16 characters)",
    )
    auth.add_argument(
        "--no-auth",
        action="store_true",
        help="let anyone who may read also write (without a key file writes are refused)",
    )
    parser.add_argument(
        "--public-read",
        action="store_true",
        help="let any client search and browse without a key (default: local host only)",
    )
    parser.add_argument(
        "--max-batch", type=int, default=32, help="images embedded together (default 32)"
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="how long a batch waits for more requests (default 5 ms)",
    )
    parser.add_argument(
        "--max-upload-mb", type=float, default=16.0, help="request body limit (default 16 MiB)"
    )
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=4096 * 4096,
        help="pixel limit per image; larger images are refused (default 4096*4096)",
    )
    add_min_side_option(parser)
    parser.add_argument(
        "--threads",
        type=int,
        help="PyTorch intra-op threads for the model (default: PyTorch's choice)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )


def service_settings(args: argparse.Namespace) -> ServiceSettings:
    """The service limits the options ask for; a bad --port, --max-batch, --max-wait-ms,
    --max-upload-mb or --threads is a ValueError naming it."""
    from abdnet.service import ServiceSettings

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    if args.max_batch < 1 or args.max_wait_ms < 0 or args.max_upload_mb <= 0:
        raise ValueError("--max-batch must be >= 1, --max-wait-ms >= 0, --max-upload-mb > 0")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    return ServiceSettings(
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_image_pixels=args.max_image_pixels,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        min_crop_side=args.min_side,
    )


def access_policy(args: argparse.Namespace) -> AccessPolicy:
    """Who may read and write: --api-key-file (its keys are read), --no-auth, --public-read."""
    from abdnet.service import AccessPolicy, load_api_keys

    keys = load_api_keys(args.api_key_file) if args.api_key_file else None
    return AccessPolicy(keys=keys, no_auth=args.no_auth, public_read=args.public_read)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from abdnet.gallery import load_threshold
    from abdnet.service import create_app

    settings = service_settings(args)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    policy = access_policy(args)
    gallery, extractor, model = open_gallery_for_model(args, create=True)
    try:
        threshold = None
        if args.threshold:
            threshold = load_threshold(args.threshold)
            threshold.model.check_same(model, f"--threshold {args.threshold}")
        app = create_app(
            extractor=extractor,
            gallery=gallery,
            model=model,
            policy=policy,
            threshold=threshold,
            settings=settings,
        )
        print(
            f"serving {args.gallery} ({gallery.size()} entries, model {model.short}) on "
            f"http://{args.host}:{args.port}/  writes: {policy.writes}, reads: "
            f"{'public' if args.public_read else 'local host or key'}",
            flush=True,
        )
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            access_log=args.log_level == "debug",
            limit_concurrency=512,
            timeout_graceful_shutdown=10,
        )
    finally:
        gallery.close()
    return 0
