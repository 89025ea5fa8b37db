"""Query/gallery evaluation of an inference backend (ONNX Runtime, OpenVINO, ...).

A backend is a callable ``(B, 3, H, W)`` float32 tensor -> ``(B, D)`` raw embeddings (array
or tensor) with a ``config`` attribute (the transform); it is embedded through the one
:class:`~abdnet.engine.Embedder` and evaluated by :func:`abdnet.engine.evaluate_embedder`
(test transform, flip averaging, the space's normalisation, metric, re-ranking, query
expansion).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from abdnet.config import Config, DataConfig, EvalConfig
from abdnet.engine import ModelEmbedder, evaluate_embedder
from abdnet.evaluation import RankResult

__all__ = ["evaluate_backend"]


def evaluate_backend(
    backend: Any,
    dataset: Any,
    eval_cfg: EvalConfig | None = None,
    *,
    data_cfg: DataConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> RankResult:
    """CMC / mAP / mINP (and TAR@FAR, EER in the space of unit vectors) of a backend on
    ``dataset``'s query/gallery.

    ``eval_cfg`` and ``data_cfg`` default to the backend's ``config`` (the checkpoint's). A
    backend whose graph already flip-averages (``backend.flip``) is not flipped again.
    PyTorch adds nothing but the transform and the metrics (the backend decides its own
    arithmetic).
    """
    config = getattr(backend, "config", None)
    if eval_cfg is None or data_cfg is None:
        if config is None:
            raise ValueError(
                "evaluate_backend: the backend has no config; pass eval_cfg and data_cfg"
            )
        eval_cfg = eval_cfg or config.eval
        data_cfg = data_cfg or config.data
    if getattr(backend, "flip", False):
        eval_cfg = dataclasses.replace(eval_cfg, flip=False)
    embedder = ModelEmbedder(
        backend,
        config=Config(data=data_cfg, eval=eval_cfg),
        device="cpu",
        batch_size=eval_cfg.batch_size,
        flip=eval_cfg.flip,
        flip_mode=eval_cfg.flip_mode,
        precision="fp32",
    )
    return evaluate_embedder(embedder, dataset, eval_cfg, progress=progress)
