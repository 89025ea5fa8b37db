"""One epoch's record (``EpochRecord``) and the run's log of them: ``metrics.jsonl`` (one
JSON object per line) and TensorBoard scalars, written by rank 0."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from abdnet.files import atomic_write
from abdnet.layout import RunLayout

__all__ = ["EpochRecord", "MetricsLog"]


@dataclass
class EpochRecord:
    """What one epoch did; ``to_json()`` is its line of ``metrics.jsonl``."""

    epoch: int  # 1-based
    stage: int  # step of the two-step schedule (1: backbone frozen, 2: all trained)
    lr: float
    of_factor: float  # the O.F. weight's factor this epoch (loss.of_schedule)
    ow_factor: float  # the O.W. weight's factor this epoch (loss.ow_schedule)
    loss: dict[str, float]  # LossTerms names (total, xent, triplet, of, ow), mean over steps
    steps: int
    images_per_s: float
    seconds: float  # training time of the epoch (evaluation not included)
    use_of: bool
    use_ow: bool
    step: int = 0  # optimizer steps of the run so far
    val: dict[str, float] | None = None  # validation ranking metrics, when evaluated
    test: dict[str, float] | None = None  # test ranking metrics, when evaluated

    def to_json(self) -> dict[str, Any]:
        """The JSON object (``val`` / ``test`` only when evaluated)."""
        d: dict[str, Any] = {
            "epoch": self.epoch,
            "stage": self.stage,
            "lr": self.lr,
            "of_factor": self.of_factor,
            "ow_factor": self.ow_factor,
            "loss": self.loss,
            "steps": self.steps,
            "images_per_s": self.images_per_s,
            "seconds": self.seconds,
            "use_of": self.use_of,
            "use_ow": self.use_ow,
            "step": self.step,
        }
        if self.val is not None:
            d["val"] = self.val
        if self.test is not None:
            d["test"] = self.test
        return d

    def checkpoint_meta(self) -> dict[str, Any]:
        """What a checkpoint saved after this epoch records about it."""
        d = self.to_json()
        return {k: d[k] for k in ("epoch", "stage", "lr", "loss", "val", "test") if k in d}


class MetricsLog:
    """``metrics.jsonl`` + TensorBoard scalars (rank 0 only: ``enabled``)."""

    def __init__(self, run: RunLayout, *, enabled: bool, resume_epoch: int) -> None:
        self.enabled = enabled
        self.path = run.metrics
        self.writer = None
        if not enabled:
            return
        if self.path.exists():
            # a killed run may have logged epochs after its last checkpoint: drop them
            keep = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["epoch"] <= resume_epoch
            ]
            atomic_write(self.path, "".join(line + "\n" for line in keep))
        from torch.utils.tensorboard import SummaryWriter  # lazy: heavy (tensorboard)

        self.writer = SummaryWriter(str(run.tb), purge_step=resume_epoch + 1)

    def write(self, record: EpochRecord) -> None:
        if not self.enabled:
            return
        d = record.to_json()
        with self.path.open("a") as f:
            f.write(json.dumps(d, sort_keys=True) + "\n")
        if self.writer is not None:
            for key, value in _flatten(d).items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record.epoch)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}/{k}" if prefix else k
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out
