"""The training state a checkpoint holds, owned by one object.

:class:`TrainState` is everything the next epoch depends on: the model's weights (written as
``model.safetensors`` with the run's Config), the optimizer and grad-scaler states, the
epoch and step counters (the sampler and the learning rate are functions of the epoch), the
best validation metric so far, and the random generators (python, numpy, torch CPU and
CUDA). ``state_dict()`` / ``load_state_dict()`` hold all but the weights, in a form
``torch.load(weights_only=True)`` reads back (tensors and plain containers only).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn

__all__ = ["TrainState", "capture_rng_state", "restore_rng_state", "unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under DistributedDataParallel and/or torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = cast(nn.Module, model._orig_mod)
        else:
            return model


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch CPU and CUDA generator states (weights_only-loadable)."""
    # the legacy tuple: ("MT19937", keys, pos, has_gauss, cached_gaussian)
    np_state = cast("tuple[Any, ...]", np.random.get_state())
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


@dataclass
class TrainState:
    """Model, optimizer, scaler and counters of a run (see the module docstring)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    best_metric: float = -math.inf  # best validation mAP so far
    best_epoch: int | None = None  # the epoch (1-based) that reached it
    # the loss, when it has state of its own (the center loss's centers)
    objective: nn.Module | None = None

    def state_dict(self) -> dict[str, Any]:
        """Everything but the weights; captures the random generators now."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "rng": capture_rng_state(),
            **({"objective": loss_state} if (loss_state := self._objective_state()) else {}),
        }

    def _objective_state(self) -> dict[str, Any]:
        """The loss's own state (buffers such as the center-loss centers); {} when none."""
        return dict(self.objective.state_dict()) if self.objective is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` captured (the random generators included)."""
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.best_metric = float(state["best_metric"])
        self.best_epoch = state["best_epoch"]
        restore_rng_state(state["rng"])
        if self.objective is not None and self._objective_state():
            if "objective" not in state:
                raise ValueError("checkpoint: has no loss state (center-loss centers) to resume")
            self.objective.load_state_dict(state["objective"])
