"""Query/gallery evaluation of an :class:`~abdnet.engine.Embedder`: CMC / mAP / mINP through
the evaluation package's evaluator, and the verification ROC in the embedder's space.

Ranking follows ``eval`` (``metric``, ``normalize``, re-ranking, query expansion) on the
network's raw embeddings: with ``eval.normalize: false`` (the official protocol) the
squared Euclidean distance of raw embeddings ranks, whatever space the embedder declares.
The verification numbers, TAR at ``eval.verification_fars`` with their thresholds and the
EER, are distances of the **embedder's space** (:class:`~abdnet.engine.EmbeddingSpace`): the
thresholds ``abdnet eval`` prints are those ``abdnet calibrate`` writes and ``abdnet serve``
accepts. Evaluation runs in ``eval.precision`` (fp32 by default) whatever precision
training used, so a run's recorded metrics and ``abdnet eval`` of its checkpoint agree.

Video data sets (:class:`~abdnet.data.TrackletDataset`) are scored tracklet to tracklet
(:func:`evaluate_tracklets`), as torchreid does: a tracklet's feature is the mean of its
frames' raw embeddings (all frames, or a few spread evenly over it), ranked by the same
evaluator with the same cross-camera protocol.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image

from abdnet.config import Config, DataConfig, EvalConfig
from abdnet.data import ImageRecord, ReIDDataset, TrackletDataset, TrackletRecord, sample_frames
from abdnet.engine.embedder import Embedder, ModelEmbedder
from abdnet.engine.inference import Runner
from abdnet.engine.precision import Precision, choose_precision
from abdnet.evaluation import (
    RankEvaluator,
    RankResult,
    VerificationResult,
    evaluate_verification,
    is_junk,
)

__all__ = ["evaluate_embedder", "evaluate_model", "evaluate_tracklets", "verify_embedder"]

log = logging.getLogger(__name__)


class _RecordImages(Sequence[Any]):
    """The images of data-set records, read when the embedder reaches them."""

    def __init__(self, dataset: ReIDDataset, records: Sequence[ImageRecord]) -> None:
        self._dataset, self._records = dataset, records

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i: int) -> Image.Image:  # type: ignore[override]
        return self._dataset.read_image(self._records[i])


def _split(
    dataset: ReIDDataset,
    query: Sequence[ImageRecord] | None,
    gallery: Sequence[ImageRecord] | None,
) -> tuple[list[ImageRecord], list[ImageRecord], int]:
    """The query records, then the query + ranked gallery records (pid -1: junk, never
    ranked), and how many gallery records were left out."""
    query = list(dataset.query if query is None else query)
    gallery = list(dataset.gallery if gallery is None else gallery)
    if not query or all(is_junk(r.pid) for r in gallery):
        raise ValueError(
            f"data set {dataset.name}: nothing to evaluate "
            f"({len(query)} query, {len(gallery)} gallery images)"
        )
    ranked = [r for r in gallery if not is_junk(r.pid)]
    return query, query + ranked, len(gallery) - len(ranked)


def evaluate_embedder(
    embedder: Embedder,
    dataset: ReIDDataset,
    eval_cfg: EvalConfig,
    *,
    query: Sequence[ImageRecord] | None = None,
    gallery: Sequence[ImageRecord] | None = None,
    progress: Callable[[int], None] | None = None,
    verification: bool = True,
) -> RankResult:
    """CMC/mAP/mINP of ``embedder`` on ``dataset``'s query/gallery (or the given records),
    ranked as ``eval_cfg`` says, and TAR at ``eval_cfg.verification_fars`` and the EER in
    ``embedder.space`` unless ``verification=False``. ``progress(n)`` is called after each
    batch of ``n`` images."""
    query, records, left_out = _split(dataset, query, gallery)
    ext = embedder.embed(_RecordImages(dataset, records), progress=progress, keep_raw=True)
    pids, camids = [r.pid for r in records], [r.camid for r in records]
    evaluator = _rank_evaluator(len(query), eval_cfg)
    evaluator.process(ext.raw if ext.raw is not None else ext.features, pids, camids)
    result = evaluator.evaluate()
    roc = None
    if verification and eval_cfg.verification_fars:
        try:
            fars = eval_cfg.verification_fars
            roc = _verification(embedder, ext.features, records, len(query), fars)
        except ValueError as exc:  # no genuine or no impostor cross-camera pair
            log.warning("no verification metrics: %s", exc)
    return dataclasses.replace(result, verification=roc, num_gallery_skipped=left_out)


def _rank_evaluator(num_query: int, eval_cfg: EvalConfig) -> RankEvaluator:
    """The ranking of ``eval_cfg`` (metric, normalization, CMC length, re-ranking, query
    expansion) over ``num_query`` queries followed by the gallery."""
    return RankEvaluator(
        num_query,
        metric=eval_cfg.metric,
        normalize=eval_cfg.normalize,
        max_rank=eval_cfg.max_rank,
        rerank=eval_cfg.rerank,
        aqe=eval_cfg.aqe,
    )


def verify_embedder(
    embedder: Embedder,
    dataset: ReIDDataset,
    *,
    fars: Sequence[float],
    query: Sequence[ImageRecord] | None = None,
    gallery: Sequence[ImageRecord] | None = None,
    progress: Callable[[int], None] | None = None,
) -> VerificationResult:
    """The verification ROC (TAR at each of ``fars`` with its threshold, EER) of the
    cross-camera query/gallery pairs, in ``embedder.space``: what ``abdnet calibrate``
    writes, and the numbers :func:`evaluate_embedder` reports. Raises ``ValueError`` when
    there is no genuine or no impostor pair."""
    query, records, _ = _split(dataset, query, gallery)
    ext = embedder.embed(_RecordImages(dataset, records), progress=progress)
    return _verification(embedder, ext.features, records, len(query), fars)


def _verification(
    embedder: Embedder,
    features: torch.Tensor,
    records: Sequence[ImageRecord | TrackletRecord],
    num_query: int,
    fars: Sequence[float],
) -> VerificationResult:
    """The ROC of the plain distances of the embedder's space: re-ranking and query expansion
    change rankings, not the pair distances a threshold is set on."""
    n = num_query
    pids, camids = [r.pid for r in records], [r.camid for r in records]
    return evaluate_verification(
        features[:n],
        features[n:],
        pids[:n],
        pids[n:],
        camids[:n],
        camids[n:],
        fars=fars,
        metric=embedder.space.metric,
    )


# frames per embed call when pooling tracklets: bounds the memory of a data set's embeddings
_POOL_CHUNK = 2048


def evaluate_tracklets(
    embedder: Embedder,
    dataset: TrackletDataset,
    eval_cfg: EvalConfig,
    *,
    frames: int = 0,
    progress: Callable[[int], None] | None = None,
    verification: bool = True,
) -> RankResult:
    """CMC/mAP/mINP of ``dataset``'s query tracklets against its gallery tracklets.

    Each tracklet's feature is the mean of the raw embeddings of its frames (every frame,
    or ``frames`` of them spread evenly: :func:`~abdnet.data.sample_frames`), embedded as
    ``embedder`` does (its flip averaging); the means are ranked as ``eval_cfg`` says by the
    evaluator :func:`evaluate_embedder` uses. The verification ROC (TAR at
    ``eval_cfg.verification_fars``, EER) is of the means moved into ``embedder.space``.
    ``progress(n)`` is called after each batch of ``n`` frames."""
    query = list(dataset.query)
    ranked = [r for r in dataset.gallery if not is_junk(r.pid)]
    if not query or not ranked:
        raise ValueError(
            f"data set {dataset.name}: nothing to evaluate "
            f"({len(query)} query, {len(ranked)} gallery tracklets)"
        )
    records = query + ranked
    chosen = [[r.paths[i] for i in sample_frames(len(r), frames)] for r in records]
    pooled: list[torch.Tensor] = []
    start = 0
    while start < len(records):  # whole tracklets, about _POOL_CHUNK frames per call
        stop, n = start, 0
        while stop < len(records) and (n == 0 or n + len(chosen[stop]) <= _POOL_CHUNK):
            n += len(chosen[stop])
            stop += 1
        paths = [p for c in chosen[start:stop] for p in c]
        ext = embedder.embed(paths, progress=progress, keep_raw=True)
        raw = ext.raw if ext.raw is not None else ext.features  # (n, D)
        owner = torch.repeat_interleave(
            torch.arange(stop - start), torch.tensor([len(c) for c in chosen[start:stop]])
        )
        sums = torch.zeros(stop - start, raw.shape[1], dtype=raw.dtype).index_add_(0, owner, raw)
        pooled.append(sums / torch.bincount(owner).unsqueeze(1).to(raw.dtype))  # (T, D)
        start = stop
    features = torch.cat(pooled)  # (Q + G, D) mean raw embedding per tracklet
    evaluator = _rank_evaluator(len(query), eval_cfg)
    evaluator.process(features, [r.pid for r in records], [r.camid for r in records])
    result = evaluator.evaluate()
    roc = None
    if verification and eval_cfg.verification_fars:
        try:
            space = embedder.space.project(features)
            roc = _verification(embedder, space, records, len(query), eval_cfg.verification_fars)
        except ValueError as exc:  # no genuine or no impostor cross-camera pair
            log.warning("no verification metrics: %s", exc)
    left_out = len(dataset.gallery) - len(ranked)
    return dataclasses.replace(result, verification=roc, num_gallery_skipped=left_out)


def evaluate_model(
    model: Runner,
    dataset: ReIDDataset,
    eval_cfg: EvalConfig,
    data_cfg: DataConfig,
    device: torch.device | str,
    *,
    query: Sequence[ImageRecord] | None = None,
    gallery: Sequence[ImageRecord] | None = None,
    precision: Precision | None = None,
    progress: Callable[[int], None] | None = None,
    verification: bool = True,
) -> RankResult:
    """:func:`evaluate_embedder` of a network (or backend) embedded as ``eval_cfg`` says
    (flip averaging, batch size) with the test transform of ``data_cfg``, into the space of
    unit vectors every gallery, index and threshold uses. ``precision`` defaults to
    ``eval_cfg.precision``."""
    device = torch.device(device)
    if precision is None:
        precision = choose_precision(device, eval_cfg.precision)
    log.info("evaluating in %s (%s)", precision.name, precision.reason)
    embedder = ModelEmbedder(
        model,
        config=Config(data=data_cfg, eval=eval_cfg),
        device=device,
        batch_size=eval_cfg.batch_size,
        flip=eval_cfg.flip,
        flip_mode=eval_cfg.flip_mode,
        precision=precision,
    )
    return evaluate_embedder(
        embedder,
        dataset,
        eval_cfg,
        query=query,
        gallery=gallery,
        progress=progress,
        verification=verification,
    )
