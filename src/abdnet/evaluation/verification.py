"""Verification ("same person?") on a query/gallery split: ROC, TAR at a FAR, EER, thresholds.

Pairs are the cross-camera query/gallery pairs: *genuine* when both crops show the same
identity, *impostor* otherwise; pairs of one camera are left out, as the re-ID protocol
leaves out same-camera matches. A pair is **accepted when its distance is <= the
threshold**. For a threshold ``t``::

    TAR(t) = #genuine pairs with d <= t / #genuine       (true-accept rate)
    FAR(t) = #impostor pairs with d <= t / #impostor     (false-accept rate)

Everything is exact, ties included (pairs at the same float32 distance are accepted or
rejected together), and the ``Q x G`` pair list is never materialized: distances are
computed in blocks of queries, twice with the same blocks (the second pass counts the
impostors below each genuine distance). Memory is one block plus the genuine distances plus
the ``floor(f * #impostor) + 1`` smallest impostor distances for the largest requested FAR
``f``.

- ``TAR@FAR=f`` is the highest TAR of any threshold whose FAR is ``<= f``. With ``k =
  floor(f * #impostor)`` and ``b`` the ``(k+1)``-th smallest impostor distance, the accepted
  set is every pair closer than ``b``; the reported threshold is the midpoint between ``b``
  and the largest pair distance below it, so that it sits in the gap rather than on a pair.
- ``EER`` is the smallest error rate ``e`` such that one threshold has both ``FAR <= e`` and
  ``FRR = 1 - TAR <= e`` (min over thresholds of ``max(FAR, FRR)``; FRR only changes at
  genuine distances, so only those are candidates).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from abdnet.evaluation.distance import ArrayLike, IdsLike, pairwise_distance, row_blocks

__all__ = ["OperatingPoint", "VerificationResult", "evaluate_verification"]

log = logging.getLogger(__name__)

# Distances computed per block (queries x gallery): 16 Mi float32 = 64 MiB plus masks.
_BLOCK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold chosen for a target false-accept rate, and what it gives on the pairs."""

    far_target: float  # the FAR asked for
    threshold: float  # accept a pair when distance <= threshold
    tar: float  # true-accept rate at the threshold
    far: float  # false-accept rate at the threshold (<= far_target)

    def to_dict(self) -> dict[str, float]:
        return {
            "far_target": self.far_target,
            "threshold": self.threshold,
            "tar": self.tar,
            "far": self.far,
        }


@dataclass(frozen=True)
class VerificationResult:
    """ROC of the cross-camera pairs of a query/gallery split.

    ``thresholds`` (M,) are the distinct genuine distances, ascending; ``tar`` and ``far``
    (M,) the rates when accepting every pair at distance ``<= thresholds[i]``: the corners
    of the step ROC, exact. ``points`` are the operating points of the requested FARs.
    """

    thresholds: np.ndarray
    tar: np.ndarray
    far: np.ndarray
    num_genuine: int
    num_impostor: int
    eer: float
    eer_threshold: float
    points: tuple[OperatingPoint, ...]
    metric: str

    def at_far(self, far: float) -> OperatingPoint:
        """The operating point computed for target ``far``."""
        for p in self.points:
            if math.isclose(p.far_target, far, rel_tol=1e-9):
                return p
        have = ", ".join(f"{p.far_target:g}" for p in self.points) or "none"
        raise KeyError(f"no operating point for FAR={far:g} (computed: {have})")

    def to_dict(self) -> dict[str, float | int]:
        """Flat summary: ``tar@far=1e-03`` / ``threshold@far=1e-03`` per point, EER, counts."""
        out: dict[str, float | int] = {}
        for p in self.points:
            out[f"tar@far={p.far_target:.0e}"] = p.tar
            out[f"threshold@far={p.far_target:.0e}"] = p.threshold
        out["eer"] = self.eer
        out["eer_threshold"] = self.eer_threshold
        out["num_genuine_pairs"] = self.num_genuine
        out["num_impostor_pairs"] = self.num_impostor
        return out


def _as_ids(x: IdsLike, name: str, n: int) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), got {tuple(a.shape)}")
    return a.astype(np.int64, copy=False)


def _count_matches(query_keys: np.ndarray, gallery_keys: np.ndarray) -> np.ndarray:
    """For each query key (a value or a row), how many gallery keys equal it."""
    keys, counts = np.unique(gallery_keys, axis=0, return_counts=True)
    where = {k.tobytes() if k.ndim else k.item(): int(c) for k, c in zip(keys, counts)}
    return np.array(
        [where.get(k.tobytes() if k.ndim else k.item(), 0) for k in query_keys], dtype=np.int64
    )


def _smallest(values: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` smallest of ``values`` (unordered), or all of them."""
    if values.size <= k:
        return values
    return np.partition(values, k - 1)[:k]


def evaluate_verification(
    qf: ArrayLike,
    gf: ArrayLike,
    q_pids: IdsLike,
    g_pids: IdsLike,
    q_camids: IdsLike,
    g_camids: IdsLike,
    *,
    fars: Sequence[float] = (1e-2, 1e-3),
    metric: str = "euclidean",
    chunk_size: int | None = None,
) -> VerificationResult:
    """ROC, TAR at each FAR of ``fars``, EER and thresholds of the cross-camera pairs.

    ``qf (Q, D)`` and ``gf (G, D)`` are features; distances are ``pairwise_distance(...,
    metric)`` (squared Euclidean or ``1 - cos``), so thresholds are in that distance. Raises
    ``ValueError`` when there is no genuine or no impostor cross-camera pair.
    """
    qf_t = qf if isinstance(qf, torch.Tensor) else torch.from_numpy(np.asarray(qf))
    gf_t = gf if isinstance(gf, torch.Tensor) else torch.from_numpy(np.asarray(gf))
    if qf_t.ndim != 2 or gf_t.ndim != 2:
        raise ValueError(
            f"qf {tuple(qf_t.shape)} / gf {tuple(gf_t.shape)}: expected 2-D feature matrices"
        )
    nq, ng = qf_t.shape[0], gf_t.shape[0]
    qp, gp = _as_ids(q_pids, "q_pids", nq), _as_ids(g_pids, "g_pids", ng)
    qc, gc = _as_ids(q_camids, "q_camids", nq), _as_ids(g_camids, "g_camids", ng)
    fars = tuple(float(f) for f in fars)
    for f in fars:
        if not 0.0 < f <= 1.0:
            raise ValueError(f"fars: each target FAR must be in (0, 1], got {f}")

    # Pair counts from the ids alone: #cross-camera pairs minus #genuine ones.
    num_cross = nq * ng - int(_count_matches(qc, gc).sum())
    num_gen_cross = int(_count_matches(qp, gp).sum()) - int(
        _count_matches(np.stack([qp, qc], 1), np.stack([gp, gc], 1)).sum()
    )
    num_imp_expected = num_cross - num_gen_cross
    keep = max((math.floor(f * num_imp_expected + 1e-9) + 1 for f in fars), default=1)

    # Pass 1: every genuine distance, and the `keep` smallest impostor distances.
    blocks = list(row_blocks(nq, ng, chunk_size, _BLOCK_ELEMENTS))
    genuine_parts: list[np.ndarray] = []
    smallest_imp = np.empty(0, dtype=np.float32)
    for rows in blocks:
        d, gen, imp = _block(qf_t, gf_t, qp, gp, qc, gc, rows, metric)
        genuine_parts.append(d[gen])
        smallest_imp = _smallest(np.concatenate([smallest_imp, d[imp]]), keep)
    genuine = np.sort(np.concatenate(genuine_parts)) if genuine_parts else np.empty(0, np.float32)
    num_gen = int(genuine.size)
    if num_gen == 0 or num_imp_expected == 0:
        raise ValueError(
            f"verification needs genuine and impostor cross-camera pairs; found {num_gen} "
            f"genuine and {num_imp_expected} impostor pairs (are query and gallery ids and "
            f"cameras right?)"
        )
    smallest_imp = np.sort(smallest_imp)

    # Pass 2: impostors at or below each distinct genuine distance (same blocks, so the
    # same float32 values: a product's rounding depends on its shape).
    uniq = np.unique(genuine)  # (M,) ascending
    imp_at_or_below = np.zeros(uniq.size, dtype=np.int64)
    num_imp = 0
    for rows, part in zip(blocks, genuine_parts):
        d, gen, imp = _block(qf_t, gf_t, qp, gp, qc, gc, rows, metric)
        if not np.array_equal(d[gen], part):
            log.warning("verification: distances differ between two identical passes")
        imp_d = np.sort(d[imp])  # sorting the block beats searching each impostor
        num_imp += imp_d.size
        imp_at_or_below += np.searchsorted(imp_d, uniq, side="right")
    if num_imp != num_imp_expected:
        raise RuntimeError(f"impostor pair count {num_imp} != expected {num_imp_expected}")
    gen_at_or_below = np.searchsorted(genuine, uniq, side="right")  # (M,)
    tar = gen_at_or_below / num_gen
    far = imp_at_or_below / num_imp

    # EER: min over genuine thresholds of max(FAR, FRR); FRR = 1 at thresholds below all.
    worst = np.maximum(far, 1.0 - tar)
    best = int(np.argmin(worst))
    eer, eer_threshold = float(worst[best]), float(uniq[best])
    if eer >= 1.0:
        eer_threshold = float(uniq[0])

    points = tuple(_operating_point(f, genuine, smallest_imp, num_imp) for f in fars)
    return VerificationResult(
        thresholds=uniq,
        tar=tar,
        far=far,
        num_genuine=num_gen,
        num_impostor=num_imp,
        eer=eer,
        eer_threshold=eer_threshold,
        points=points,
        metric=metric,
    )


def _block(
    qf: torch.Tensor,
    gf: torch.Tensor,
    qp: np.ndarray,
    gp: np.ndarray,
    qc: np.ndarray,
    gc: np.ndarray,
    rows: slice,
    metric: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distances ``(R, G)`` float32 of a query block, with genuine and impostor masks."""
    d = pairwise_distance(qf[rows], gf, metric).float().cpu().numpy()  # (R, G)
    cross = qc[rows, None] != gc[None, :]  # (R, G)
    same = qp[rows, None] == gp[None, :]
    return d, cross & same, cross & ~same


def _operating_point(
    far_target: float, genuine: np.ndarray, smallest_imp: np.ndarray, num_imp: int
) -> OperatingPoint:
    """Best TAR with FAR <= ``far_target``; ``genuine`` and ``smallest_imp`` sorted."""
    k = math.floor(far_target * num_imp + 1e-9)  # impostors that may be accepted
    if k >= num_imp:  # every pair may be accepted
        top = float(max(genuine[-1], smallest_imp[-1]))
        return OperatingPoint(far_target, top, 1.0, 1.0)
    bound = smallest_imp[k]  # the (k+1)-th smallest impostor distance: must be rejected
    accepted_imp = int(np.searchsorted(smallest_imp, bound, side="left"))
    accepted_gen = int(np.searchsorted(genuine, bound, side="left"))
    below = [smallest_imp[accepted_imp - 1]] if accepted_imp else []
    if accepted_gen:
        below.append(genuine[accepted_gen - 1])
    if below:
        threshold = (float(max(below)) + float(bound)) / 2.0
        # The midpoint of two adjacent float32 values may round onto the upper one.
        if np.float32(threshold) >= bound:
            threshold = float(max(below))
    else:
        threshold = float(np.nextafter(np.float32(bound), np.float32(-np.inf)))
    return OperatingPoint(
        far_target=far_target,
        threshold=threshold,
        tar=accepted_gen / genuine.size,
        far=accepted_imp / num_imp,
    )
