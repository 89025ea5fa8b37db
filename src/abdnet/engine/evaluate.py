"""Query/gallery evaluation of a model: features through the one extraction loop, then
CMC / mAP / mINP through the evaluation package's evaluator.

Features come from the test transform (resize + normalize), optionally averaged with the
horizontally mirrored image (``eval.flip``), optionally L2-normalized; the metric, k-reciprocal
re-ranking and average query expansion are ``eval``'s. Evaluation runs in ``eval.precision``
(fp32 by default) whatever precision training used, so a run's recorded metrics and
``abdnet eval`` of its checkpoint agree.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

import torch

from abdnet.config import DataConfig, EvalConfig
from abdnet.data import ImageRecord, ReIDDataset, build_test_transform
from abdnet.engine.inference import Embedder, extract_records
from abdnet.engine.precision import Precision, choose_precision
from abdnet.evaluation import RankEvaluator, RankResult

__all__ = ["evaluate_model"]

log = logging.getLogger(__name__)


def evaluate_model(
    model: Embedder,
    dataset: ReIDDataset,
    eval_cfg: EvalConfig,
    data_cfg: DataConfig,
    device: torch.device | str,
    *,
    query: Sequence[ImageRecord] | None = None,
    gallery: Sequence[ImageRecord] | None = None,
    precision: Precision | None = None,
    progress: Callable[[int], None] | None = None,
) -> RankResult:
    """CMC/mAP/mINP of ``model`` on ``dataset``'s query/gallery (or the given records).

    ``precision`` defaults to ``eval_cfg.precision``. ``progress(n)`` is called after each
    batch of ``n`` images.
    """
    device = torch.device(device)
    query = list(dataset.query if query is None else query)
    gallery = list(dataset.gallery if gallery is None else gallery)
    if not query or not any(r.pid >= 0 for r in gallery):
        raise ValueError(
            f"data set {dataset.name}: nothing to evaluate "
            f"({len(query)} query, {len(gallery)} gallery images)"
        )
    if precision is None:
        precision = choose_precision(device, eval_cfg.precision)
    log.info("evaluating in %s (%s)", precision.name, precision.reason)
    records = query + [r for r in gallery if r.pid >= 0]  # pid -1: junk, never ranked
    feats = extract_records(
        model,
        records,
        dataset.read_image,
        build_test_transform(data_cfg),
        batch_size=eval_cfg.batch_size,
        device=device,
        precision=precision,
        flip=eval_cfg.flip,
        flip_mode=eval_cfg.flip_mode,
        progress=progress,
    )
    evaluator = RankEvaluator(
        len(query),
        metric=eval_cfg.metric,
        normalize=eval_cfg.normalize,
        max_rank=eval_cfg.max_rank,
        rerank=eval_cfg.rerank,
        aqe=eval_cfg.aqe,
    )
    evaluator.process(feats, [r.pid for r in records], [r.camid for r in records])
    result = evaluator.evaluate()
    return dataclasses.replace(result, num_gallery_skipped=len(gallery) - result.num_gallery)
