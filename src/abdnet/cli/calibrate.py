"""``abdnet calibrate``: the "same person?" threshold for a target false-accept rate."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

from abdnet.cli.extract import add_model_arguments, build_extractor, progress_bar

HELP = "choose the distance threshold for a false-accept rate on a labelled query/gallery set"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Embed the query and gallery images of a labelled data set, build the verification "
        "ROC of the cross-camera pairs (genuine: same identity; impostor: different), and "
        "write the distance threshold whose false-accept rate is at most --far, with the TAR "
        "it gives, the EER and a ROC plot. 'abdnet serve --threshold' and 'abdnet gallery "
        "search --threshold' use the file."
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--data",
        required=True,
        metavar="ROOT",
        help="labelled data set (layout detected, as for 'abdnet eval'); not the training data",
    )
    parser.add_argument(
        "--far", type=float, default=1e-3, help="target false-accept rate (default 1e-3)"
    )
    parser.add_argument("--out", required=True, metavar="threshold.json", help="output file")
    parser.add_argument("--roc", metavar="PNG", help="ROC plot (default: the --out path with .png)")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from abdnet.config import with_data_root
    from abdnet.data import build_dataset
    from abdnet.engine import verify_embedder
    from abdnet.evaluation import is_junk
    from abdnet.files import check_output
    from abdnet.gallery import (
        Threshold,
        calibration_fars,
        describe_extractor,
        format_time,
        save_threshold,
    )
    from abdnet.viz import plot_roc

    if not 0.0 < args.far < 1.0:
        raise ValueError(f"--far must be in (0, 1), got {args.far}")
    out = check_output(args.out, force=args.force, option="--out")
    roc = check_output(
        args.roc or Path(args.out).with_suffix(".png"), force=args.force, option="--roc"
    )
    extractor, info = build_extractor(args)
    model = describe_extractor(extractor, source=info["source"])
    dataset = build_dataset(with_data_root(extractor.config.data, args.data))
    fars = calibration_fars(args.far)
    total = len(dataset.query) + sum(not is_junk(r.pid) for r in dataset.gallery)
    with progress_bar(total, "embed", show=not args.no_progress) as bar:
        result = verify_embedder(extractor, dataset, fars=fars, progress=bar.update)
    threshold = Threshold.from_verification(
        result,
        far=args.far,
        model=model,
        data=str(args.data),
        created=format_time(datetime.now(timezone.utc)) or "",
    )
    save_threshold(out, threshold)
    plot_roc(result, roc, title=f"verification ROC, {dataset.name}")
    print(
        f"{dataset.name}: {len(dataset.query)} query x {total - len(dataset.query)} gallery "
        f"images, {result.num_genuine} genuine / {result.num_impostor} impostor cross-camera "
        f"pairs; distances: {model.space.rule}"
    )
    for p in result.points:
        print(
            f"  FAR <= {p.far_target:g}: threshold {p.threshold:.6f}  TAR {100 * p.tar:6.2f}%  "
            f"(FAR on these pairs {p.far:.2e})"
        )
    print(f"  EER {100 * result.eer:.2f}% at distance {result.eer_threshold:.6f}")
    if result.num_impostor * args.far < 10:
        print(
            f"note: --far {args.far:g} allows only {result.num_impostor * args.far:.1f} of "
            f"{result.num_impostor} impostor pairs; the threshold is uncertain (use more data)",
            file=sys.stderr,
        )
    print(f"wrote {out} and {roc}")
    return 0


def keep_run_threshold(run_dir, *, far: float, show: bool = True):
    """Calibrate the run's model on its own test split (the config's query/gallery) and
    keep the threshold in ``RUN/threshold.json``, the one ``abdnet track`` uses by default.
    Returns the threshold, or None (with the reason on stderr) when the split has no
    genuine or no impostor pair."""
    from abdnet.cli.extract import progress_bar
    from abdnet.data import build_dataset
    from abdnet.engine import verify_embedder
    from abdnet.evaluation import is_junk
    from abdnet.gallery import (
        Threshold,
        calibration_fars,
        describe_extractor,
        format_time,
        save_threshold,
    )
    from abdnet.layout import THRESHOLD_FILE
    from abdnet.models import load_model
    from abdnet.retrieval import FeatureExtractor

    run = Path(run_dir)
    loaded = load_model(run, map_location="cpu")
    extractor = FeatureExtractor(loaded, flip=bool(loaded.config.eval.flip))
    model = describe_extractor(extractor, source=str(run))
    dataset = build_dataset(extractor.config.data)
    total = len(dataset.query) + sum(not is_junk(r.pid) for r in dataset.gallery)
    try:
        with progress_bar(total, "calibrate", show=show) as bar:
            roc = verify_embedder(
                extractor,
                dataset,
                fars=calibration_fars(far),
                progress=bar.update,
            )
    except ValueError as exc:
        print(f"no threshold kept with the run: {exc}", file=sys.stderr)
        return None
    threshold = Threshold.from_verification(
        roc,
        far=far,
        model=model,
        data=f"{dataset.name} test split (query/gallery) of {run}",
        created=format_time(datetime.now(timezone.utc)) or "",
    )
    save_threshold(run / THRESHOLD_FILE, threshold)
    return threshold
