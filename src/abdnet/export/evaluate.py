"""Query/gallery evaluation of an inference backend (ONNX Runtime, OpenVINO, ...).

A backend is a callable ``(B, 3, H, W)`` float32 tensor -> ``(B, D)`` raw embeddings (array
or tensor) with a ``config`` attribute (the transform); the engine's one evaluation path
(test transform, flip averaging, normalization, metric, re-ranking, query expansion) runs it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from abdnet.config import DataConfig, EvalConfig
from abdnet.engine import choose_precision, evaluate_model
from abdnet.evaluation import RankResult

__all__ = ["evaluate_embedder"]


def evaluate_embedder(
    embedder: Any,
    dataset: Any,
    eval_cfg: EvalConfig | None = None,
    *,
    data_cfg: DataConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> RankResult:
    """CMC / mAP / mINP of a backend on ``dataset``'s query/gallery.

    ``eval_cfg`` and ``data_cfg`` default to the backend's ``config`` (the checkpoint's). A
    backend whose graph already flip-averages (``embedder.flip``) is not flipped again.
    PyTorch adds nothing but the transform and the metrics (the backend decides its own
    arithmetic).
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
        embedder,
        dataset,
        eval_cfg,
        data_cfg,
        "cpu",
        precision=choose_precision("cpu", "fp32"),
        progress=progress,
    )
