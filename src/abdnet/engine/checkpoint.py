"""Atomic training checkpoints: ``RUN/checkpoints/{last,best}/``.

A checkpoint folder holds

* ``model.safetensors`` written by :func:`abdnet.models.io.save_model` (weights + the resolved
  Config in its metadata, so every tool can load it on its own);
* ``state.pt``: optimizer, scheduler, grad-scaler, sampler and RNG states (python, numpy,
  torch CPU, CUDA), epoch and step. Written with ``torch.save`` and read back with
  ``weights_only=True`` (only tensors and plain containers, no pickled code);
* ``meta.json``: epoch, step and metrics, human readable.

Atomicity: ``checkpoints/last`` is a symbolic link to a hidden folder ``.last-<token>``. A new
checkpoint is written into a fresh hidden folder, every file and the folder are fsync'ed, and
then a new link replaces the old one with ``os.replace`` (an atomic rename). A kill at any
moment therefore leaves ``last`` pointing at a complete checkpoint: the previous one until
the rename, the new one after it. Stale hidden folders of interrupted writes are removed by
the next write.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "MODEL_FILE",
    "STATE_FILE",
    "META_FILE",
    "Checkpoint",
    "atomic_directory",
    "checkpoint_path",
    "capture_rng_state",
    "restore_rng_state",
    "save_checkpoint",
    "load_checkpoint",
    "load_model_weights",
    "unwrap_model",
]

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
META_FILE = "meta.json"


def _fsync_path(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_path(run_dir: str | Path, name: str = "last") -> Path:
    """``RUN/checkpoints/<name>`` (a link to the current complete checkpoint folder)."""
    return Path(run_dir) / "checkpoints" / name


@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield an empty folder; on normal exit make ``target`` point at it atomically.

    If the body raises (or the process dies), ``target`` is untouched.
    """
    target = Path(target)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    tmp = parent / f".{target.name}-{token}"
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.iterdir():
            _fsync_path(f)
        _fsync_path(tmp)
        if target.exists() and not target.is_symlink():
            # A real folder (copied run): move it aside; the rename below is still atomic.
            target.rename(parent / f".{target.name}-old-{token}")
        link = parent / f".{target.name}.link-{token}"
        os.symlink(tmp.name, link)  # relative, so the run folder can be moved
        os.replace(link, target)
        _fsync_path(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # The previous checkpoint and leftovers of interrupted writes.
    current = os.readlink(target)
    for stale in parent.glob(f".{target.name}-*"):
        if stale.name != current:
            shutil.rmtree(stale, ignore_errors=True)
    for stale in parent.glob(f".{target.name}.link-*"):
        stale.unlink(missing_ok=True)


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch CPU and CUDA generator states (weights_only-loadable)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        # numpy's key array is stored as a tensor so that torch.load(weights_only=True) reads it
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    random.setstate(_to_tuple(state["python"]))
    npd = state["numpy"]
    key = npd["key"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", key, npd["pos"], npd["has_gauss"], npd["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(x: Any) -> Any:
    # random.setstate needs tuples; a round trip through some serializers gives lists.
    if isinstance(x, (list, tuple)):
        return tuple(_to_tuple(v) for v in x)
    return x


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DistributedDataParallel and/or torch.compile wrappers."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


@dataclass
class Checkpoint:
    """A checkpoint read back from disk (the weights stay in ``model_file``)."""

    path: Path  # the resolved checkpoint folder
    state: dict[str, Any]  # optimizer, scheduler, scaler, sampler, rng, epoch, step, ...
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
    *,
    model: torch.nn.Module,
    config: Any,
    state: dict[str, Any],
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``RUN/checkpoints/<name>`` atomically; returns the link path."""
    from abdnet.models.io import save_model  # lazy: engine sits above models

    target = checkpoint_path(run_dir, name)
    with atomic_directory(target) as tmp:
        save_model(tmp / MODEL_FILE, unwrap_model(model), config)
        torch.save(state, tmp / STATE_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta or {}, indent=2, sort_keys=True) + "\n")
    return target


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint folder (or ``RUN`` -> ``RUN/checkpoints/last``)."""
    p = Path(path)
    if (p / "checkpoints").is_dir():
        p = checkpoint_path(p, "last")
    if not (p / STATE_FILE).is_file() or not (p / MODEL_FILE).is_file():
        raise FileNotFoundError(
            f"{p}: not a training checkpoint (expected {MODEL_FILE} and {STATE_FILE})"
        )
    state = torch.load(p / STATE_FILE, map_location="cpu", weights_only=True)
    meta_file = p / META_FILE
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    return Checkpoint(path=p.resolve(), state=state, meta=meta)


def load_model_weights(model: torch.nn.Module, model_file: str | Path) -> None:
    """Copy the tensors of a ``model.safetensors`` into ``model`` (strict, exact)."""
    from safetensors.torch import load_file

    tensors = load_file(str(model_file))
    unwrap_model(model).load_state_dict(tensors, strict=True)
