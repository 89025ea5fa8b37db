"""``abdnet train``: train from a config, or resume a run folder."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

from abdnet.cli.options import positive_int

HELP = "train a model from a YAML config (or --resume a run folder)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="C", help="YAML config (e.g. configs/paper.yaml)")
    parser.add_argument("--out", metavar="RUN", help="run folder to create")
    parser.add_argument(
        "--resume",
        metavar="RUN",
        help="continue the run in RUN from RUN/checkpoints/last (uses RUN/config.yaml)",
    )
    parser.add_argument(
        "--data",
        metavar="ROOT",
        help="data set folder (Market-1501 / DukeMTMC-reID / MSMT17 root, folder tree, CSV "
        "or `abdnet synth` output; layout detected) replacing the config's data set",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.lr=1e-4 (repeatable)",
    )
    parser.add_argument(
        "--trick",
        action="append",
        default=[],
        metavar="NAME",
        help="apply a named re-ID training trick (repeatable, before --set; see abdnet cv "
        "--trick list)",
    )
    parser.add_argument(
        "--max-epochs",
        type=positive_int,
        default=None,
        metavar="N",
        help="stop after N epochs in total (resume later to finish the schedule)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace a run already in --out (its config, checkpoints and metrics are deleted; "
        "other files in the folder are kept)",
    )
    parser.add_argument(
        "--far",
        type=float,
        default=1e-2,
        help="false-accept rate of the 'same person?' threshold calibrated on the test split "
        "when training ends and kept as RUN/threshold.json ('abdnet track' links with it; "
        "default 1e-2; 0: none)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from abdnet.config import load_config, with_data_root
    from abdnet.engine import train

    progress = not args.no_progress
    if args.resume:
        if args.config or args.data or args.overrides or args.trick or args.out or args.force:
            raise ValueError(
                "--resume RUN takes its config from RUN/config.yaml; "
                "do not combine it with --config/--data/--set/--trick/--out/--force"
            )
        result = train(
            None, args.resume, resume=True, progress=progress, max_epochs=args.max_epochs
        )
    else:
        if not args.config or not args.out:
            raise ValueError("--config C and --out RUN are required (or --resume RUN)")
        from abdnet.tricks import trick_overrides

        cfg = load_config(args.config, [*trick_overrides(args.trick), *args.overrides])
        if args.data:
            # the data set changes, the input size/augmentation of the config stay
            data = with_data_root(cfg.data, args.data)
            cfg = dataclasses.replace(cfg, data=data)
        if args.force:
            from abdnet.layout import THRESHOLD_FILE

            # a replaced run's threshold belongs to its old model
            (Path(args.out) / THRESHOLD_FILE).unlink(missing_ok=True)
        result = train(
            cfg, args.out, force=args.force, progress=progress, max_epochs=args.max_epochs
        )
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun only rank 0 reports
    kept = None
    if args.far and result.test is not None:
        from abdnet.cli.calibrate import keep_run_threshold

        kept = keep_run_threshold(result.run_dir, far=args.far, show=progress)
    summary = {
        "run_dir": str(result.run_dir),
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "test": result.test,
        "seconds": round(result.seconds, 1),
        **({"threshold": kept.threshold, "threshold_far": kept.far} if kept else {}),
    }
    print(json.dumps(summary, indent=2, default=str))
    return 0
