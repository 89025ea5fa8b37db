"""``abdnet demo``: ABD-Net learning re-ID on the built-in synthetic data, on a CPU, in minutes.

Trains a ResNet-18 ABD-Net (paper preset: shallow CAM, CAM, PAM, O.F., O.W., triplet) with
the two-step schedule on synthetic pedestrians, evaluates it on the synthetic query/gallery
and compares it with the same network untrained (same seed, same initial weights). Writes
``DIR/metrics.json``, ``DIR/report.md`` and the run folder ``DIR/run``.

``abdnet demo --footage`` trains the same recipe, calibrates the run's link threshold on its
own test identities as ``abdnet train`` does (``DIR/run/threshold.json``, at ``--far``), renders the built-in
synthetic footage of two cameras with ground truth (``DIR/footage``: other people than the
training ones), tracks it, identifies the tracklets with cross-camera linking and without
(``DIR/tracked/linked``, ``DIR/tracked/unlinked``) and prints HOTA, IDF1 and MOTA per camera
and the multi-camera IDF1 of both (``DIR/footage.md``, ``DIR/footage.json``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

HELP = (
    "train ABD-Net on built-in synthetic data on the CPU and compare it with the untrained net "
    "(--footage: then track synthetic two-camera footage, linked and not linked)"
)

# The demo recipe: the paper's recipe (two steps, eq. 6, P x K batches, flip + erasing) with
# a ResNet-18 at 64x32 so that a 2-core CPU trains it in a few minutes. Two departures, both
# for time: Adam at 1e-3 (from scratch, no ImageNet weights) and O.W. on the stem conv only
# (O.W. on all 25 trunk convs costs ~60 GFLOP per step at any input size -- its Gram
# matrices depend on the weights only -- more than the network at 64x32). O.F. on
# F F^T / (H W) ("spatial") x128: the relative O.F. at x128 (the default until 2026-12-03, 4x the
# authors' expected gradient) over-regularizes a network trained from scratch on 40 identities
# (mAP 49.7% against 59.6%, docs/benchmarks.md); x128 is the scale the demo was measured at.
DEMO_CONFIG: dict = {
    "model": {
        "preset": "paper",
        "backbone": "resnet18",
        "pretrained": "none",
        "global_dim": 256,
        "attentive_dim": 256,
        "reduction_dim": 256,
        "ow_scope": "stem",
    },
    "data": {
        "name": "synthetic",
        "synthetic": {"ids": 40, "cams": 4, "per_id": 8, "height": 128, "width": 64, "seed": 0},
        "height": 64,
        "width": 32,
        "batch_size": 32,
        "num_instances": 4,
        "workers": 0,
    },
    "loss": {"of_gram_norm": "spatial", "of_paper_scale": 128.0},
    "optim": {"lr": 1.0e-3, "milestones": [56]},
    "train": {
        "frozen_epochs": 2,
        "epochs": 70,
        "device": "cpu",
        "precision": "auto",
        "channels_last": True,
        "eval_every": 0,
        "checkpoint_every": 10,
        "seed": 0,
    },
    # standard re-ID test-time options, applied to the trained and the untrained net alike
    "eval": {"flip": True, "normalize": True},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a value of the demo recipe, e.g. --set train.epochs=10",
    )
    parser.add_argument(
        "--footage",
        action="store_true",
        help="after training, track the built-in synthetic footage of two cameras and print "
        "HOTA, IDF1 and MOTA per camera and the multi-camera IDF1, with cross-camera linking "
        "and without (instead of the untrained-network comparison)",
    )
    parser.add_argument(
        "--far",
        type=float,
        default=0.1,
        help="--footage: false-accept rate of the link threshold calibrated on the run's test "
        "identities and kept as RUN/threshold.json, as 'abdnet train' does (default 0.1: "
        "the demo's one-minute network separates people too weakly for a tighter one)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import copy

    import torch

    from abdnet.config import apply_overrides, config_from_dict
    from abdnet.data import build_dataset
    from abdnet.engine import choose_precision, evaluate_model, seed_everything, train
    from abdnet.evaluation import RankResult
    from abdnet.layout import RunLayout
    from abdnet.models import build_model_from_config

    t0 = time.perf_counter()
    out = Path(args.out)
    cfg = config_from_dict(apply_overrides(copy.deepcopy(DEMO_CONFIG), args.overrides))
    run_dir = out / "run"
    if args.footage and not 0.0 < args.far < 1.0:
        raise ValueError(f"--far must be in (0, 1), got {args.far}")
    if run_dir.exists():
        if not RunLayout(run_dir).config.is_file():
            raise ValueError(
                f"--out {out}: {run_dir} exists and is not a run folder; not overwriting"
            )
        shutil.rmtree(run_dir)  # the previous demo's run
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.train.device)
    precision = choose_precision(device, cfg.train.precision)
    if args.footage:
        return _run_footage(args, cfg, out, run_dir, t0)

    # The untrained network: what train() starts from (same seed -> same initial weights).
    dataset = build_dataset(cfg.data)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    untrained = build_model_from_config(cfg.model, dataset.num_train_pids).to(device)
    before = evaluate_model(untrained, dataset, cfg.eval, cfg.data, device)
    del untrained

    result = train(cfg, run_dir, progress=not args.no_progress)
    if result.test is None:
        raise RuntimeError("demo: the training run reported no test metrics")
    after = result.test
    seconds = time.perf_counter() - t0
    metrics = {
        "abdnet": {k: after[k] for k in RankResult.METRIC_NAMES},
        "untrained": before.metrics(),
        "seconds": round(seconds, 1),
        "train_seconds": round(result.seconds, 1),
        "precision": precision.name,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    report = _report(cfg, metrics, dataset, result)
    (out / "report.md").write_text(report)
    print(report)
    print(f"wrote {out / 'metrics.json'}, {out / 'report.md'} and the run folder {run_dir}")
    return 0


def _report(cfg, metrics: dict, dataset, result) -> str:
    from abdnet.layout import RunLayout

    a, u = metrics["abdnet"], metrics["untrained"]
    # the table's columns: RankResult's metrics but rank10 (metrics.json has them all)
    shown = [k for k in a if k != "rank10"]
    s = cfg.data.synthetic
    lines = [
        "# abdnet demo",
        "",
        f"ABD-Net ({cfg.model.backbone}, paper preset: shallow CAM + CAM + PAM, O.F. + O.W., "
        f"triplet) trained from scratch on the built-in synthetic data set "
        f"({s.ids // 2} training identities, {len(dataset.train)} images, {s.cams} cameras; "
        f"input {cfg.data.height}x{cfg.data.width}) for {cfg.train.frozen_epochs} + "
        f"{cfg.train.epochs} epochs (two-step schedule) on {metrics['device']} "
        f"({metrics['threads']} threads, {metrics['precision']}).",
        "",
        f"Test split: {len(dataset.query)} queries, {len(dataset.gallery)} gallery images "
        "(unseen identities + distractors).",
        "",
        "| model | " + " | ".join(shown) + " |",
        "|---|" + "---|" * len(shown),
        "| ABD-Net, trained | " + " | ".join(f"{100 * a[k]:.1f}%" for k in shown) + " |",
        "| same network, untrained | " + " | ".join(f"{100 * u[k]:.1f}%" for k in shown) + " |",
        "",
        f"Training took {metrics['train_seconds']:.0f} s, the whole demo {metrics['seconds']:.0f} s. "
        f"Per-epoch losses: {RunLayout(result.run_dir).metrics}.",
        "",
    ]
    return "\n".join(lines)


def _run_footage(args: argparse.Namespace, cfg, out: Path, run_dir: Path, t0: float) -> int:
    """Train, calibrate, render footage, track it linked and not linked, print the table."""
    from abdnet.cli.calibrate import keep_run_threshold
    from abdnet.engine import train
    from abdnet.files import atomic_write
    from abdnet.layout import THRESHOLD_FILE
    from abdnet.retrieval import FeatureExtractor
    from abdnet.tracking.compare import compare_linking, comparison_table
    from abdnet.tracking.footage import FootageConfig, synthetic_appearance, write_footage

    footage, tracked = out / "footage", out / "tracked"
    for folder, marker in ((footage, "cam1/seqinfo.ini"), (tracked, "linked")):
        # a previous footage demo's folders are replaced (atomically); anything else is not
        if folder.exists() and not (folder / marker).exists():
            raise ValueError(f"--out {out}: {folder} exists and is not the demo's; not overwriting")
    result = train(cfg, run_dir, progress=not args.no_progress)
    # the threshold 'abdnet train' keeps with a run: calibrated on its own test identities
    threshold = keep_run_threshold(run_dir, far=args.far, show=not args.no_progress)
    if threshold is None:
        raise RuntimeError("demo --footage: no link threshold (the test split has no pairs)")
    extractor = FeatureExtractor(run_dir, device=cfg.train.device, flip=threshold.model.flip)
    # other people than those trained on: the synthetic generator's next seed
    seed = cfg.data.synthetic.seed + 1
    fcfg = FootageConfig(seed=seed)
    look = synthetic_appearance(seed=seed, cameras=fcfg.cameras)
    cameras = write_footage(footage, fcfg, appearance=look, force=True)
    comparison = compare_linking(
        cameras,
        embedder=extractor,
        threshold=threshold.threshold,
        stitch_threshold=threshold.stitch_threshold,
        far=args.far,
        out=tracked,
    )
    seconds = time.perf_counter() - t0
    table = comparison_table(comparison)
    doc = {
        "linked": _score_dict(comparison.linked),
        "unlinked": _score_dict(comparison.unlinked),
        "threshold": threshold.threshold,
        "far": args.far,
        "tracklets": comparison.tracklets,
        "identities": {
            "linked": comparison.identities_linked,
            "unlinked": comparison.identities_unlinked,
            "true": comparison.linked.gt_identities,
        },
        "seconds": round(seconds, 1),
        "train_seconds": round(result.seconds, 1),
    }
    atomic_write(out / "footage.json", json.dumps(doc, indent=2) + "\n")
    report = "\n".join(
        [
            "# abdnet demo --footage",
            "",
            f"ABD-Net ({cfg.model.backbone}) trained on the built-in synthetic data in "
            f"{result.seconds:.0f} s; link threshold {threshold.threshold:.4f} "
            f"({threshold.model.space.distance_name}, FAR {args.far:g} on the run's test "
            f"identities: {run_dir / THRESHOLD_FILE}).",
            "",
            f"Synthetic footage: {fcfg.cameras} cameras x {fcfg.frames} frames "
            f"({fcfg.width}x{fcfg.height}), {fcfg.people} people, some in one camera only "
            f"({comparison.linked.gt_identities} true identities); {comparison.tracklets} "
            f"tracklets, {comparison.crops_embedded} crops embedded; "
            f"{comparison.identities_linked} identities linked, "
            f"{comparison.identities_unlinked} without linking.",
            "",
            table,
            "",
            f"The whole demo took {seconds:.0f} s. Footage {footage}, results {tracked}.",
            "",
        ]
    )
    atomic_write(out / "footage.md", report)
    print(report)
    return 0


def _score_dict(score) -> dict:
    return {
        "cameras": {
            c.camera: {"HOTA": c.hota, "IDF1": c.idf1, "MOTA": c.mota} for c in score.cameras
        },
        "multi_camera_idf1": score.multi_camera_idf1,
    }
