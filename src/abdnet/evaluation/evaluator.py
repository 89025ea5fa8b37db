"""The re-ID evaluator: ``reset()``, ``process(features, pids, camids)``, ``evaluate()``.

Batches of features are processed as they are extracted; the first ``num_query`` items are
the queries and the rest the gallery (fast-reid's convention). Gallery items with pid -1
(Market-1501's "junk" label) are never a match nor a distractor and are left out, counted in
``num_gallery_skipped``. ``evaluate`` ranks with :func:`~abdnet.evaluation.rank.evaluate_features`
(chunked, optional L2 normalization, re-ranking, query expansion) and returns the one result
type, :class:`~abdnet.evaluation.rank.RankResult`; with ``verification_fars`` it also holds
the verification ROC of the same features (TAR at those FARs, EER).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from abdnet.evaluation.distance import ArrayLike, IdsLike, as_features
from abdnet.evaluation.labels import is_junk
from abdnet.evaluation.rank import RankResult, evaluate_features
from abdnet.evaluation.verification import evaluate_verification

log = logging.getLogger(__name__)

__all__ = ["RankEvaluator"]


class RankEvaluator:
    """Accumulates ``(features, pids, camids)`` and evaluates CMC / mAP / mINP.

    ``features`` batches are ``(B, D)`` (numpy or torch, kept on the CPU); ``pids`` and
    ``camids`` are ``(B,)`` integer arrays.
    """

    def __init__(
        self,
        num_query: int,
        *,
        metric: str = "euclidean",
        normalize: bool = False,
        max_rank: int = 50,
        rerank: bool = False,
        aqe: bool = False,
        verification_fars: tuple[float, ...] = (),
    ) -> None:
        if num_query < 1:
            raise ValueError(f"num_query: expected >= 1, got {num_query}")
        self.num_query = num_query
        self.metric, self.normalize, self.max_rank = metric, normalize, max_rank
        self.rerank, self.aqe = rerank, aqe
        self.verification_fars = tuple(verification_fars)
        self.reset()

    def reset(self) -> None:
        self._features: list[torch.Tensor] = []
        self._pids: list[np.ndarray] = []
        self._camids: list[np.ndarray] = []

    def process(self, features: ArrayLike, pids: IdsLike, camids: IdsLike) -> None:
        f = as_features(features, "features").cpu()
        p = np.asarray(pids.cpu() if isinstance(pids, torch.Tensor) else pids).reshape(-1)
        c = np.asarray(camids.cpu() if isinstance(camids, torch.Tensor) else camids).reshape(-1)
        if not len(p) == len(c) == f.shape[0]:
            raise ValueError(
                f"process: {f.shape[0]} features but {len(p)} pids and {len(c)} camids"
            )
        self._features.append(f)
        self._pids.append(p.astype(np.int64))
        self._camids.append(c.astype(np.int64))

    def evaluate(self) -> RankResult:
        if not self._features:
            raise ValueError("evaluate: nothing was processed")
        feats = torch.cat(self._features)
        pids = np.concatenate(self._pids)
        camids = np.concatenate(self._camids)
        n_q = self.num_query
        if feats.shape[0] <= n_q:
            raise ValueError(
                f"evaluate: {feats.shape[0]} items processed, but the first {n_q} are queries: "
                "no gallery"
            )
        if self.normalize:
            feats = torch.nn.functional.normalize(feats, dim=1)
        keep = n_q + np.flatnonzero(~is_junk(pids[n_q:]))
        if len(keep) == 0:
            raise ValueError("evaluate: every gallery item has pid -1 (junk): nothing to rank")
        # (query features, gallery features, query pids, gallery pids, query cams, gallery cams)
        split = (
            feats[:n_q],
            feats[torch.from_numpy(keep)],
            pids[:n_q],
            pids[keep],
            camids[:n_q],
            camids[keep],
        )
        result = evaluate_features(
            *split,
            max_rank=self.max_rank,
            metric=self.metric,
            rerank=self.rerank,
            aqe=self.aqe,
        )
        skipped = int(feats.shape[0] - n_q - len(keep))
        verification = None
        if self.verification_fars:
            # the plain feature distances: re-ranking and AQE change rankings, not the pair
            # distances a threshold is set on
            try:
                verification = evaluate_verification(
                    *split,
                    fars=self.verification_fars,
                    metric=self.metric,
                )
            except ValueError as exc:  # no genuine or no impostor cross-camera pair
                log.warning("no verification metrics: %s", exc)
        return RankResult(
            cmc=result.cmc,
            mAP=result.mAP,
            mINP=result.mINP,
            num_query_used=result.num_query_used,
            num_query_skipped=result.num_query_skipped,
            num_gallery=len(keep),
            num_gallery_skipped=skipped,
            verification=verification,
        )
