"""Atomic training checkpoints: ``RUN/checkpoints/{last,best}/`` (layout in ``abdnet.layout``).

A checkpoint folder holds ``model.safetensors`` (weights + the resolved Config in its
metadata, written by :func:`abdnet.models.save_model`, so every tool can load it on its own),
``state.pt`` (:meth:`TrainState.state_dict`, read back with ``weights_only=True``) and
``meta.json`` (epoch and metrics, human readable).

Atomicity: ``checkpoints/last`` is a link to a hidden folder, replaced as a whole with
:func:`abdnet.files.atomic_directory`; a kill at any moment leaves ``last`` pointing at a
complete checkpoint: the previous one until the link swap, the new one after it.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from abdnet.config import Config
from abdnet.engine.state import TrainState, unwrap_model
from abdnet.files import atomic_directory, atomic_write
from abdnet.layout import BEST, LAST, META_FILE, MODEL_FILE, STATE_FILE, RunLayout
from abdnet.models import save_model

__all__ = [
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "restore_checkpoint",
    "drop_training_state",
]


@dataclass
class Checkpoint:
    """A checkpoint read back from disk (the weights stay in ``model_file``)."""

    path: Path  # the resolved checkpoint folder
    state: dict[str, Any]  # TrainState.state_dict()
    meta: dict[str, Any]

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def epoch(self) -> int:
        return int(self.state["epoch"])


def save_checkpoint(
    run_dir: str | Path,
    name: str,
    state: TrainState,
    config: Config,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``RUN/checkpoints/<name>`` atomically; returns the link path."""
    target = RunLayout(run_dir).checkpoint(name)
    with atomic_directory(target) as tmp:
        save_model(tmp / MODEL_FILE, unwrap_model(state.model), config)
        torch.save(state.state_dict(), tmp / STATE_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta or {}, indent=2, sort_keys=True) + "\n")
    return target


# in a checkpoint folder whose state.pt drop_training_state removed
DROPPED_FILE = "state-dropped.txt"


def drop_training_state(run_dir: str | Path) -> int:
    """Remove the training state (``state.pt``: optimizer, LR schedule and RNG state, twice
    the weights' size with Adam) from the ``last`` and ``best`` checkpoints of a finished
    run; returns the bytes freed. The weights, config and metrics stay, so the run is
    evaluated, exported and searched with as before; resuming it is refused with an error
    naming the checkpoint. A marker file is written before the state goes, so a kill in
    between leaves a checkpoint that says what happened to it."""
    run = RunLayout(run_dir)
    freed = 0
    for name in (LAST, BEST):
        folder = run.checkpoint(name)
        state = folder / STATE_FILE
        if not state.is_file():
            continue
        size = state.stat().st_size
        atomic_write(
            folder / DROPPED_FILE,
            "state.pt was removed when this run finished (the weights are complete);\n"
            "train a new run to continue from these weights.\n",
        )
        state.unlink()
        freed += size
    return freed


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint folder (or ``RUN`` -> ``RUN/checkpoints/last``).

    A checkpoint that is missing, incomplete, or whose ``state.pt`` holds anything but
    tensors and plain containers is refused with an error naming the file.
    """
    p = Path(path)
    run = RunLayout(p)
    if run.checkpoints.is_dir():
        p = run.checkpoint(LAST)
    if p.is_symlink() and not p.exists():
        raise FileNotFoundError(
            f"{p}: the link points to a missing folder ({p.readlink()}); the checkpoint is gone"
        )
    if (p / MODEL_FILE).is_file() and (p / DROPPED_FILE).is_file():
        raise FileNotFoundError(
            f"{p}: holds the weights of a finished run whose training state was dropped "
            f"({DROPPED_FILE}); it can be evaluated, exported and searched with, not resumed"
        )
    if not (p / STATE_FILE).is_file() or not (p / MODEL_FILE).is_file():
        raise FileNotFoundError(
            f"{p}: not a training checkpoint (expected {MODEL_FILE} and {STATE_FILE})"
        )
    try:
        state = torch.load(p / STATE_FILE, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{p / STATE_FILE}: refused: it holds Python objects other than tensors and plain "
            f"containers (loading those can run code): {str(exc).splitlines()[0]}"
        ) from None
    except (RuntimeError, OSError, EOFError) as exc:
        raise ValueError(f"{p / STATE_FILE}: not a readable training state: {exc}") from None
    if not isinstance(state, dict) or "epoch" not in state:
        raise ValueError(f"{p / STATE_FILE}: not a training state written by abdnet")
    meta_file = p / META_FILE
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    return Checkpoint(path=p.resolve(), state=state, meta=meta)


def restore_checkpoint(path: str | Path, state: TrainState) -> Checkpoint:
    """Load a checkpoint's weights into ``state.model`` and the rest into ``state``."""
    ckpt = load_checkpoint(path)
    try:
        tensors = load_file(str(ckpt.model_file))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{ckpt.model_file}: not a readable safetensors file: {exc}") from None
    unwrap_model(state.model).load_state_dict(tensors, strict=True)
    state.load_state_dict(ckpt.state)
    return ckpt
