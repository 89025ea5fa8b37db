"""The run folder's policy: which config a run trains, what a new run replaces, what a
resume refuses, and the precision fixed once per run.

A new run refuses a folder holding another run unless ``force`` (then only the run's own
files are removed, after every check has passed); ``resume`` continues with the config saved
in the folder and refuses a ``checkpoints/last`` whose target is missing instead of starting
over. Only rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Sequence

import torch

from abdnet.config import Config, dump_config, load_config
from abdnet.engine import distributed as D
from abdnet.engine.precision import Precision, choose_precision
from abdnet.files import atomic_write, check_output
from abdnet.layout import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    LAST,
    METRICS_FILE,
    PRECISION_FILE,
    SKIPPED_FILE,
    RunLayout,
)

__all__ = [
    "check_resumable",
    "clear_run",
    "device_of",
    "run_config",
    "run_precision",
    "start_run_folder",
]


def device_of(cfg: Config | None, run: RunLayout, *, resume: bool) -> str:
    """The device the run asks for: the config's, or (resume) the saved config's."""
    if cfg is not None:
        return cfg.train.device
    if resume and run.config.is_file():
        return load_config(run.config).train.device
    return "auto"


def run_config(cfg: Config | None, run: RunLayout, *, resume: bool, force: bool) -> Config:
    """The run's config: the given one, or (resume) the one saved in the run folder."""
    if resume:
        if not run.config.is_file():
            raise FileNotFoundError(f"--resume {run.root}: no {run.config.name} (not a run folder)")
        saved = load_config(run.config)
        if cfg is not None and cfg != saved:
            raise ValueError(
                f"--resume {run.root}: the given config differs from the run's "
                f"{run.config.name}; resume with the run's own config"
            )
        return saved
    if cfg is None:
        raise ValueError("train: a config is needed unless resuming")
    # the files of a run; anything else in the folder (a scheduler's log) is not ours
    check_output(
        run.root,
        force=force,
        folder=True,
        members=(CONFIG_FILE, CHECKPOINTS_DIR, METRICS_FILE, PRECISION_FILE, SKIPPED_FILE),
        hint=f"use --resume {run.root} to continue it, another folder",
    )
    return cfg


def check_resumable(run: RunLayout, *, resume: bool) -> None:
    """Refuse to resume a run whose ``checkpoints/last`` points to a missing folder."""
    last = run.checkpoint(LAST)
    if resume and last.is_symlink() and not last.exists():
        raise FileNotFoundError(
            f"--resume {run.root}: checkpoints/last points to a missing folder "
            f"({last.readlink()}); refusing to start over and overwrite the run's history"
        )


def start_run_folder(
    run: RunLayout,
    cfg: Config,
    *,
    resume: bool,
    is_main: bool,
    skipped: Sequence[tuple[str, str]],
) -> None:
    """Create (or replace) the run folder with its config, and list the skipped images."""
    if not is_main:
        return
    if not resume:
        clear_run(run)  # a run --force replaces; run_config refused one otherwise
        run.root.mkdir(parents=True, exist_ok=True)
        atomic_write(run.config, dump_config(cfg))
    if skipped:
        atomic_write(run.skipped, "".join(f"{p}\t{why}\n" for p, why in skipped))


def clear_run(run: RunLayout) -> None:
    """Remove the files of a run ``--force`` replaces (after every check has passed)."""
    for p in (run.config, run.metrics, run.precision, run.skipped):
        p.unlink(missing_ok=True)
    shutil.rmtree(run.checkpoints, ignore_errors=True)
    shutil.rmtree(run.tb, ignore_errors=True)


def run_precision(
    cfg: Config, run: RunLayout, device: torch.device, ctx: D.DistContext, *, resume: bool
) -> Precision:
    """The run's precision, fixed once: "auto" may measure, and a resumed run or another
    rank must not decide differently (the weights would no longer be reproducible)."""
    if resume and run.precision.is_file():
        saved = json.loads(run.precision.read_text())["precision"]
        return choose_precision(device, saved)
    chosen = choose_precision(device, cfg.train.precision) if ctx.is_main else None
    choice = [chosen.name if chosen else None, chosen.reason if chosen else None]
    if ctx.enabled:
        torch.distributed.broadcast_object_list(choice, src=0)
    name, reason = choice  # set on every rank: chosen on rank 0, broadcast to the others
    assert name is not None and reason is not None
    precision = dataclasses.replace(choose_precision(device, name), reason=reason)
    if ctx.is_main:
        atomic_write(
            run.precision,
            json.dumps({"precision": precision.name, "requested": cfg.train.precision}),
        )
    return precision
