"""Query/gallery evaluation of an inference backend (ONNX Runtime, OpenVINO, ...).

A backend is a callable ``(B, 3, H, W)`` float32 tensor -> ``(B, D)`` raw embeddings (array
or tensor) with a ``config`` attribute (the transform). :class:`EmbedderModule` presents it
as an ``nn.Module`` so that the engine's one evaluation path (test transform, flip
averaging, normalization, metric, re-ranking, query expansion) runs it unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import nn

from abdnet.config import DataConfig, EvalConfig
from abdnet.engine import EvalReport, choose_precision, evaluate_model

__all__ = ["EmbedderModule", "evaluate_embedder"]


class EmbedderModule(nn.Module):
    """A backend callable as a module: ``forward(x)`` is its raw ``(B, D)`` float32 embedding."""

    def __init__(self, embedder: Any) -> None:
        super().__init__()
        self.embedder = embedder
        self.feature_dim = getattr(embedder, "feature_dim", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 3, H, W)
        out = self.embedder(x.float().cpu())
        if not torch.is_tensor(out):
            out = torch.from_numpy(np.asarray(out))
        return out.float()  # (B, D)


def evaluate_embedder(
    embedder: Any,
    dataset: Any,
    eval_cfg: EvalConfig | None = None,
    *,
    data_cfg: DataConfig | None = None,
    progress: bool = False,
) -> EvalReport:
    """CMC / mAP / mINP of a backend on ``dataset``'s query/gallery.

    ``eval_cfg`` and ``data_cfg`` default to the backend's ``config`` (the checkpoint's). A
    backend whose graph already flip-averages (``embedder.flip``) is not flipped again.
    PyTorch runs in fp32 around it (the backend decides its own precision).
    """
    config = getattr(embedder, "config", None)
    if eval_cfg is None or data_cfg is None:
        if config is None:
            raise ValueError(
                "evaluate_embedder: the backend has no config; pass eval_cfg and data_cfg"
            )
        eval_cfg = eval_cfg or config.eval
        data_cfg = data_cfg or config.data
    if getattr(embedder, "flip", False):
        eval_cfg = dataclasses.replace(eval_cfg, flip=False)
    return evaluate_model(
        EmbedderModule(embedder),
        dataset,
        eval_cfg,
        data_cfg,
        torch.device("cpu"),
        precision=choose_precision("cpu", "fp32"),
        progress=progress,
    )
