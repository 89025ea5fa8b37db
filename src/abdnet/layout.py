"""The run folder, defined once; every module that reads or writes one imports it from here.

::

    RUN/
      config.yaml          the resolved Config the run trains with
      precision.json       the precision "auto" resolved to (reused on resume)
      metrics.jsonl        one JSON object per epoch (losses, validation/test metrics)
      skipped_images.txt   images left out as unreadable (data.skip_bad), "path<TAB>reason"
      threshold.json       the run's calibrated "same person?" threshold (abdnet calibrate)
      tb/                  TensorBoard events
      checkpoints/
        last -> .last-<token>/   the latest epoch's checkpoint (a link swapped atomically)
        best -> .best-<token>/   the epoch with the best validation mAP (with a validation split)
            model.safetensors    weights + the Config in the safetensors metadata
            state.pt             optimizer, scaler, epoch, step, RNG (engine.state.TrainState)
            meta.json            epoch and metrics, human readable

This module imports nothing else of abdnet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CONFIG_FILE",
    "PRECISION_FILE",
    "METRICS_FILE",
    "SKIPPED_FILE",
    "THRESHOLD_FILE",
    "TB_DIR",
    "CHECKPOINTS_DIR",
    "MODEL_FILE",
    "STATE_FILE",
    "META_FILE",
    "LAST",
    "BEST",
    "OFFICIAL_SUFFIXES",
    "RunLayout",
    "resolve_checkpoint",
]

CONFIG_FILE = "config.yaml"
PRECISION_FILE = "precision.json"
METRICS_FILE = "metrics.jsonl"
SKIPPED_FILE = "skipped_images.txt"
THRESHOLD_FILE = "threshold.json"
TB_DIR = "tb"
CHECKPOINTS_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
META_FILE = "meta.json"
# The checkpoints a run keeps (RUN/checkpoints/<name>): the latest epoch and the best one.
LAST = "last"
BEST = "best"
# Files written by the authors' code (torch.save of a dict with a state dict).
OFFICIAL_SUFFIXES = (".pth.tar", ".pth", ".pt", ".tar")


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run folder."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def precision(self) -> Path:
        return self.root / PRECISION_FILE

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def skipped(self) -> Path:
        return self.root / SKIPPED_FILE

    @property
    def tb(self) -> Path:
        return self.root / TB_DIR

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    def checkpoint(self, name: str = LAST) -> Path:
        """``RUN/checkpoints/<name>``: a link to the current complete checkpoint folder."""
        return self.checkpoints / name

    def model_file(self, name: str = LAST) -> Path:
        return self.checkpoint(name) / MODEL_FILE


def resolve_checkpoint(path: str | Path) -> Path:
    """The weights file a local path stands for.

    - a ``.safetensors`` or official ``.pth.tar`` file: itself;
    - a checkpoint folder: its ``model.safetensors``;
    - a run folder: ``checkpoints/best/model.safetensors`` if present, else ``checkpoints/last``.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    if p.is_file():
        if p.suffix == ".safetensors" or p.name.endswith(OFFICIAL_SUFFIXES):
            return p
        raise ValueError(
            f"{p}: not a checkpoint: expected a .safetensors file, an official .pth.tar, "
            f"a checkpoint folder or a run folder"
        )
    run = RunLayout(p)
    candidates = [p / MODEL_FILE, run.model_file(BEST), run.model_file(LAST)]
    for c in candidates:
        if c.is_file():
            return c
    if run.checkpoint(LAST).is_symlink():
        raise ValueError(
            f"{p}: checkpoints/last points to a missing folder "
            f"({run.checkpoint(LAST).readlink()}); the run's weights are gone"
        )
    raise ValueError(
        f"{p}: not a checkpoint: none of {', '.join(str(c.relative_to(p)) for c in candidates)} "
        f"exists in this folder"
    )
