"""Query/gallery evaluation of a model: feature extraction + CMC/mAP/mINP.

Features come from the test transform (resize + normalize), optionally averaged with the
horizontally mirrored image (``eval.flip``), optionally L2-normalized; ranking, k-reciprocal
re-ranking and average query expansion are the evaluation package's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from abdnet.config import DataConfig, EvalConfig
from abdnet.engine.precision import Precision, choose_precision

__all__ = ["EvalReport", "extract_features", "evaluate_model"]

log = logging.getLogger(__name__)

# False-accept rates whose TAR `abdnet eval` reports beside CMC / mAP / mINP.
VERIFICATION_FARS = (1e-2, 1e-3)


@dataclass
class EvalReport:
    """Ranking metrics on one query/gallery split (fractions in 0..1)."""

    result: Any  # abdnet.evaluation.RankResult (cmc, mAP, mINP, num_valid, num_skipped)
    num_query: int  # query images given
    num_gallery: int  # gallery images used
    num_gallery_skipped: int  # gallery images left out (junk label -1)
    seconds: float
    # abdnet.evaluation.VerificationResult of the cross-camera pairs (TAR@FAR, EER), or None
    # when the split has no genuine or no impostor cross-camera pair.
    verification: Any = None

    @property
    def mAP(self) -> float:
        return float(self.result.mAP)

    @property
    def mINP(self) -> float:
        return float(self.result.mINP)

    @property
    def cmc(self) -> np.ndarray:
        return self.result.cmc

    def rank(self, k: int) -> float:
        cmc = self.result.cmc
        return float(cmc[min(k, len(cmc)) - 1])

    def to_dict(self) -> dict[str, float | int]:
        """The ``abdnet eval --json`` object."""
        return {
            "mAP": self.mAP,
            "mINP": self.mINP,
            "rank1": self.rank(1),
            "rank5": self.rank(5),
            "rank10": self.rank(10),
            "num_query": self.num_query,
            "num_query_used": int(self.result.num_valid),
            "num_query_skipped": int(self.result.num_skipped),
            "num_gallery": self.num_gallery,
            "num_gallery_skipped": self.num_gallery_skipped,
            **(self.verification.to_dict() if self.verification is not None else {}),
        }


@torch.no_grad()
def extract_features(
    model: nn.Module,
    records: Sequence[Any],
    reader: Any,
    transform: Any,
    *,
    device: torch.device,
    batch_size: int = 128,
    flip: bool = False,
    flip_mode: str = "raw",
    precision: Precision | None = None,
    channels_last: bool = False,
    progress: bool = False,
    desc: str = "extract",
) -> torch.Tensor:
    """Embeddings ``(N, D)`` (fp32, CPU) of ``records`` in order; the model's mode is restored."""
    from torch.utils.data import DataLoader

    from abdnet.data import ImageDataset

    if flip:
        from abdnet.evaluation import flip_average
    precision = precision or Precision("fp32", device.type, False, "default")
    loader = DataLoader(
        ImageDataset(list(records), reader, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=0,
        pin_memory=device.type == "cuda",
    )
    was_training = model.training
    model.eval()
    feats: list[torch.Tensor] = []
    try:
        bar = _progress(loader, progress, desc)
        for batch in bar:
            images = batch[0].to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with precision.autocast():
                f = model(images).float()  # (B, D)
                if flip:
                    f_flip = model(torch.flip(images, dims=[3])).float()
                    f = flip_average(f, f_flip, flip_mode)
            feats.append(f.cpu())
    finally:
        model.train(was_training)
    if not feats:
        return torch.zeros(0, 0)
    return torch.cat(feats)  # (N, D)


def _progress(it: Any, enabled: bool, desc: str) -> Any:
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, leave=False, dynamic_ncols=True)


def evaluate_model(
    model: nn.Module,
    dataset: Any,
    eval_cfg: EvalConfig,
    data_cfg: DataConfig,
    device: torch.device | str,
    *,
    query: Sequence[Any] | None = None,
    gallery: Sequence[Any] | None = None,
    precision: Precision | None = None,
    progress: bool = False,
) -> EvalReport:
    """CMC/mAP/mINP of ``model`` on ``dataset``'s query/gallery (or the given records).

    ``eval_cfg`` says flip averaging, L2 normalization, metric, re-ranking and AQE.
    """
    from abdnet.data import build_test_transform
    from abdnet.evaluation import evaluate_features, evaluate_verification

    device = torch.device(device)
    t0 = time.perf_counter()
    query = list(dataset.query if query is None else query)
    gallery_all = list(dataset.gallery if gallery is None else gallery)
    gallery = [r for r in gallery_all if r.pid >= 0]  # -1: junk, never a match or a distractor
    if not query or not gallery:
        raise ValueError(
            f"data set {getattr(dataset, 'name', '?')}: nothing to evaluate "
            f"({len(query)} query, {len(gallery)} gallery images)"
        )
    if precision is None:
        precision = choose_precision(device, "auto")
    transform = build_test_transform(data_cfg)
    kw = dict(
        device=device,
        batch_size=eval_cfg.batch_size,
        flip=eval_cfg.flip,
        flip_mode=eval_cfg.flip_mode,
        precision=precision,
        progress=progress,
    )
    qf = extract_features(model, query, dataset.read_image, transform, desc="query", **kw)
    gf = extract_features(model, gallery, dataset.read_image, transform, desc="gallery", **kw)
    if eval_cfg.normalize:
        qf = nn.functional.normalize(qf, dim=1)
        gf = nn.functional.normalize(gf, dim=1)
    result = evaluate_features(
        qf,
        gf,
        np.array([r.pid for r in query]),
        np.array([r.pid for r in gallery]),
        np.array([r.camid for r in query]),
        np.array([r.camid for r in gallery]),
        metric=eval_cfg.metric,
        max_rank=eval_cfg.max_rank,
        rerank=eval_cfg.rerank,
        aqe=eval_cfg.aqe,
    )
    # Verification of the plain feature distances (re-ranking and AQE change rankings, not
    # pair distances a threshold could be set on).
    try:
        verification = evaluate_verification(
            qf,
            gf,
            np.array([r.pid for r in query]),
            np.array([r.pid for r in gallery]),
            np.array([r.camid for r in query]),
            np.array([r.camid for r in gallery]),
            fars=VERIFICATION_FARS,
            metric=eval_cfg.metric,
        )
    except ValueError as exc:
        log.warning("no verification metrics: %s", exc)
        verification = None
    return EvalReport(
        result=result,
        num_query=len(query),
        num_gallery=len(gallery),
        num_gallery_skipped=len(gallery_all) - len(gallery),
        seconds=time.perf_counter() - t0,
        verification=verification,
    )
