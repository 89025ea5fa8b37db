"""Market-1501 ranking metrics: CMC and mAP as torchreid computes them, mINP as fast-reid.

Protocol (torchreid ``eval_market1501``): for each query, gallery images with the query's
pid *and* camera are removed ("junk"); a query left with no gallery image of its pid is
skipped (and counted); CMC is averaged over the valid queries; the AP of a query is
``mean_i (i / rank_i)`` over its matches (``rank_i`` 1-based among the kept gallery);
INP (Ye et al., "Deep Learning for Person Re-identification: A Survey", eq. of mINP, as
fast-reid's ``rank.py``) is ``num_matches / rank_of_the_hardest_match``.

How it is computed without sorting every row
--------------------------------------------
Every metric above is a function of the 0-based positions ``p_0 < p_1 < ...`` of a query's
matches in its kept gallery list, and ``p_k = k + #{negatives closer than the k-th
match}``. So per query we only need, for each of its few matches (the "thresholds"), the
number of gallery distances below it. On the CPU the row is quantized to ``uint16`` keys by
a monotone affine map focused on the matches' distance range; one ``bincount`` gives the
exact count of keys below each threshold's key, and the few gallery items whose key equals
a threshold's key are compared exactly. On CUDA the row is sorted (fast there) and the
thresholds are located by ``searchsorted``. Both give exact counts of ``<`` and ``<=``.

Ties (a match and a kept non-match at exactly the same float32 distance), two orders:

- ``ties="torchreid"`` (default of ``evaluate_rank``): the order ``np.argsort`` gives
  (numpy's default kind, not stable), which is what torchreid does. Rows with such a tie,
  and rows with non-finite distances, are recomputed by torchreid's own procedure on
  ``np.argsort`` of the float32 row, so results equal torchreid's, ties included.
- ``ties="stable"`` (default of ``evaluate_features``): items at equal distance are ranked
  by gallery index (``np.argsort(kind="stable")``); resolved from the few items that share
  a key with a match, with no sort. This is the default for features because float32 ties
  are *not* rare at scale: with random 2048-d features and an MSMT17-sized gallery
  (squared distances around 4096, float32 spacing 0.0005) nearly every query has a match
  tied with some non-match, and torchreid's order would need a full argsort of each row.
  The two orders move a match by at most the size of its tie group.

Distances are compared in float32, as torchreid's compiled ``evaluate_cy`` casts them.

One concept in one file (over 450 lines): the Market-1501 ranking metrics, their exact
fast paths and the torchreid fallback they are checked against.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from abdnet.evaluation.distance import (
    ArrayLike,
    IdsLike,
    as_features,
    distance_block,
    prepare,
    row_blocks,
)
from abdnet.evaluation.query_expansion import average_query_expansion
from abdnet.evaluation.rerank import k_reciprocal_rerank

if TYPE_CHECKING:  # a type only: verification imports this module's distances
    from abdnet.evaluation.verification import VerificationResult

__all__ = ["RankResult", "evaluate_rank", "evaluate_features"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankResult:
    """The result of a query/gallery evaluation: CMC, mAP, mINP (fractions in 0..1) and,
    when asked for, the verification numbers of the same features (TAR@FAR, EER).

    The one result type of abdnet's evaluation: its field names (``mAP``, ``mINP``,
    ``rank1``, ``rank5``, ``rank10``, the counts) are the keys of ``to_dict()`` and so of
    ``abdnet eval --json``, ``metrics.jsonl``, the ablation tables and the logs.
    ``cmc[k - 1]`` is the rank-k accuracy; ``num_query_used`` queries had a valid match and
    were averaged, ``num_query_skipped`` had none.
    """

    # The ranking metrics, by name: the one list of them (tables, logs, model cards); the
    # first keys of ``to_dict()``.
    METRIC_NAMES: ClassVar[tuple[str, ...]] = ("rank1", "rank5", "rank10", "mAP", "mINP")

    cmc: np.ndarray  # (max_rank,) float64
    mAP: float
    mINP: float
    num_query_used: int
    num_query_skipped: int
    num_gallery: int = 0  # gallery items ranked
    num_gallery_skipped: int = 0  # gallery items left out (junk, pid -1)
    # TAR@FAR, EER of the cross-camera pairs (verification.VerificationResult), when computed
    verification: VerificationResult | None = None

    def rank(self, k: int) -> float:
        """Rank-``k`` accuracy (``k`` is 1-based)."""
        if not 1 <= k <= len(self.cmc):
            raise ValueError(f"rank k={k} is outside the CMC curve (1..{len(self.cmc)})")
        return float(self.cmc[k - 1])

    def _rank_or_nan(self, k: int) -> float:
        # a gallery smaller than k truncates the curve (as torchreid does)
        return float(self.cmc[k - 1]) if k <= len(self.cmc) else float("nan")

    @property
    def rank1(self) -> float:
        return self._rank_or_nan(1)

    @property
    def rank5(self) -> float:
        """NaN when the gallery has fewer than 5 items."""
        return self._rank_or_nan(5)

    @property
    def rank10(self) -> float:
        """NaN when the gallery has fewer than 10 items."""
        return self._rank_or_nan(10)

    @property
    def num_query(self) -> int:
        return self.num_query_used + self.num_query_skipped

    def metrics(self) -> dict[str, float]:
        """The ranking metrics by name, in the order of ``METRIC_NAMES``."""
        return {k: float(getattr(self, k)) for k in self.METRIC_NAMES}

    def to_dict(self) -> dict[str, float | int]:
        """The metrics and counts as a flat JSON-ready dict (the CMC curve left out)."""
        return {
            **self.metrics(),
            "num_query": self.num_query,
            "num_query_used": self.num_query_used,
            "num_query_skipped": self.num_query_skipped,
            "num_gallery": self.num_gallery,
            "num_gallery_skipped": self.num_gallery_skipped,
            **(self.verification.to_dict() if self.verification is not None else {}),
        }


# ---------------------------------------------------------------------------------------
# inputs


def _ids(x: IdsLike, name: str) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of integers, got shape {tuple(a.shape)}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.equal(np.mod(a, 1), 0)):
            raise ValueError(
                f"{name}: expected integer ids, got dtype {a.dtype} with fractional values"
            )
    return a.astype(np.int64, copy=False)


def _check_ids(
    num_q: int,
    num_g: int,
    q_pids: IdsLike,
    g_pids: IdsLike,
    q_camids: IdsLike,
    g_camids: IdsLike,
    what: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    arrays = (
        _ids(q_pids, "q_pids"),
        _ids(g_pids, "g_pids"),
        _ids(q_camids, "q_camids"),
        _ids(g_camids, "g_camids"),
    )
    for name, arr, n, side in zip(
        ("q_pids", "g_pids", "q_camids", "g_camids"),
        arrays,
        (num_q, num_g, num_q, num_g),
        ("query", "gallery") * 2,
    ):
        if len(arr) != n:
            raise ValueError(f"{name}: has {len(arr)} entries but {what} has {n} {side} items")
    return arrays


def _max_rank(max_rank: int, num_g: int) -> int:
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    if num_g < max_rank:
        # torchreid does the same (and prints a note).
        logger.info("gallery has only %d items: CMC truncated to max_rank=%d", num_g, num_g)
        return num_g
    return max_rank


class _SamePid:
    """For each query, the gallery items sharing its pid (matches and junk), padded."""

    def __init__(
        self, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray, g_camids: np.ndarray
    ):
        self.q_pids, self.g_pids, self.q_camids, self.g_camids = q_pids, g_pids, q_camids, g_camids
        self.order = np.argsort(g_pids, kind="stable")
        uniq, starts, counts = np.unique(g_pids[self.order], return_index=True, return_counts=True)
        # the gallery is non-empty (checked by the callers), so uniq is too
        where = np.searchsorted(uniq, q_pids).clip(max=len(uniq) - 1)
        found = uniq[where] == q_pids
        self.start = np.where(found, starts[where], 0)
        self.count = np.where(found, counts[where], 0)

    def block(self, rows: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(sidx, valid, pos)`` each ``(R, S)``: gallery index, padding mask, match mask."""
        count = self.count[rows]
        smax = max(int(count.max(initial=0)), 1)
        ar = np.arange(smax)
        valid = ar[None, :] < count[:, None]  # (R, S)
        sidx = self.order[np.where(valid, self.start[rows, None] + ar[None, :], 0)]  # (R, S)
        junk = valid & (self.g_camids[sidx] == self.q_camids[rows, None])
        return sidx, valid, valid & ~junk


# ---------------------------------------------------------------------------------------
# per-block statistics: AP, INP, position of the first match, tie flag


@dataclass
class _Stats:
    ap: np.ndarray  # (Q,) float64
    inp: np.ndarray  # (Q,) float64
    first: np.ndarray  # (Q,) int64, 0-based position of the first match among kept items
    valid: np.ndarray  # (Q,) bool

    @classmethod
    def empty(cls, n: int) -> _Stats:
        return cls(np.zeros(n), np.zeros(n), np.zeros(n, np.int64), np.zeros(n, bool))

    def put(self, rows: np.ndarray, positions: list[np.ndarray]) -> None:
        for r, p in zip(rows, positions):
            k = np.arange(1, len(p) + 1)
            self.ap[r] = np.mean(k / (p + 1.0))
            self.inp[r] = len(p) / (p[-1] + 1.0)
            self.first[r] = p[0]
            self.valid[r] = True


def _torchreid_rows(
    dist: np.ndarray,
    q_pids: np.ndarray,
    q_camids: np.ndarray,
    g_pids: np.ndarray,
    g_camids: np.ndarray,
    ties: str = "torchreid",
) -> list[np.ndarray | None]:
    """Positions of the matches per row by torchreid's own procedure (``np.argsort``).

    ``dist`` is ``(R, G)`` float32: argsort of the float32 row reproduces torchreid's tie
    order. Returns, per row, the sorted 0-based positions among kept items (None: no match).
    """
    # numpy's default kind, as torchreid (or stable: gallery-index order among ties)
    order = np.argsort(dist, axis=1, kind="stable" if ties == "stable" else None)
    match = g_pids[order] == q_pids[:, None]  # (R, G) in ranked order
    keep = ~(match & (g_camids[order] == q_camids[:, None]))
    kept_pos = np.cumsum(keep, axis=1) - 1  # position among kept items
    out: list[np.ndarray | None] = []
    for r in range(len(dist)):
        p = kept_pos[r][match[r] & keep[r]]
        out.append(p.astype(np.int64) if len(p) else None)
    return out


def _quantize(
    x: np.ndarray, a: np.ndarray, b: np.ndarray, nbins: int, out: np.ndarray
) -> np.ndarray:
    """Monotone map to uint16 keys: ``clip(x * a + b, 0, nbins - 1)`` (float32 arithmetic).

    Used identically for the row and its thresholds, so ``key(v) < key(t)`` implies
    ``v < t`` and ``key(v) > key(t)`` implies ``v > t``; only equal keys need a look.
    """
    # errstate is per thread; inf * 0 and nan only occur in rows the exact path recomputes
    with np.errstate(invalid="ignore", over="ignore"):
        np.multiply(x, a, out=out)
        np.add(out, b, out=out)
        np.clip(out, 0, nbins - 1, out=out)
        return out.astype(np.uint16)


def _quantize_rows(x: np.ndarray, a: np.ndarray, b: np.ndarray, nbins: int) -> np.ndarray:
    """``_quantize`` of a large block, its two row halves in parallel threads."""
    half = (len(x) + 1) // 2
    if half < 2:
        return _quantize(x, a, b, nbins, np.empty_like(x))
    parts = [slice(0, half), slice(half, len(x))]
    out = np.empty(x.shape, np.uint16)
    # numpy ufuncs release the GIL; a pool per call stays safe across fork()
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(_quantize, x[s], a[s], b[s], nbins, np.empty_like(x[s])) for s in parts
        ]
        for s, f in zip(parts, futures):
            out[s] = f.result()
    return out


def _block_positions_cpu(
    dist: np.ndarray,
    sidx: np.ndarray,
    valid: np.ndarray,
    pos: np.ndarray,
    g_pids: np.ndarray,
    q_pids: np.ndarray,
    ties: str,
) -> tuple[list[np.ndarray | None], np.ndarray]:
    """Match positions per row of a float32 block ``(R, G)``; also the rows needing argsort.

    ``ties="stable"`` orders items at equal distance by gallery index; ``"torchreid"``
    flags rows where a match ties with a non-match (their order needs ``np.argsort``).
    """
    num_r, num_g = dist.shape
    nbins = int(min(1 << 16, max(256, 1 << int(np.ceil(np.log2(max(num_g, 2)))))))
    rows = np.arange(num_r)[:, None]
    dsame = dist[rows, sidx]  # (R, S) distances of same-pid items
    n_pos = pos.sum(1)
    # matches first, ascending by (distance, gallery index): the stable order among them
    order = np.lexsort((np.where(pos, sidx, num_g), np.where(pos, dsame, np.inf)), axis=1)
    thr = np.take_along_axis(np.where(pos, dsame, np.inf), order, 1)  # (R, S)
    thr_g = np.take_along_axis(sidx, order, 1)  # (R, S) gallery index of each threshold
    # a non-finite row sum flags rows holding inf/nan (or overflowing: harmless, exact path)
    with np.errstate(over="ignore", invalid="ignore"):
        finite = np.isfinite(np.add.reduce(dist, axis=1, dtype=np.float32))
    fallback = ~finite & (n_pos > 0)

    # Affine map focused on [first match, last match]: resolution where it is needed.
    lo = thr[:, 0].astype(np.float64)
    hi = thr[np.arange(num_r), np.maximum(n_pos - 1, 0)].astype(np.float64)
    with np.errstate(all="ignore"):
        a = (nbins - 3) / (hi - lo)
        b = 1.5 - lo * a
        bad = ~(np.isfinite(a) & np.isfinite(b) & (a > 0))
        if bad.any():  # one match, or all matches at one distance: use the row's range
            rmin = dist[bad].min(axis=1).astype(np.float64)
            rmax = dist[bad].max(axis=1).astype(np.float64)
            a[bad] = (nbins - 3) / (rmax - rmin)
            b[bad] = 1.5 - rmin * a[bad]
        bad = ~(np.isfinite(a) & np.isfinite(b) & (a > 0))
        a[bad], b[bad] = 0.0, 0.0  # constant map: every item is looked at exactly
    a32 = a.astype(np.float32)[:, None]
    b32 = b.astype(np.float32)[:, None]
    with np.errstate(invalid="ignore", over="ignore"):
        keys = _quantize_rows(dist, a32, b32, nbins)  # (R, G) uint16
        tkeys = _quantize(thr, a32, b32, nbins, np.empty_like(thr)).astype(np.int64)  # (R, S)
        skeys = _quantize(dsame, a32, b32, nbins, np.empty_like(dsame)).astype(np.int64)  # (R, S)

    # same-pid items (matches and junk) with a key below each threshold's key: they are in
    # the histogram counts and must come out (vectorized when the padded width is small)
    skeys = np.where(valid, skeys, nbins)  # padding never counts
    if skeys.shape[1] <= 96:
        same_below = (skeys[:, None, :] < tkeys[:, :, None]).sum(-1)  # (R, S)
    else:
        same_below = np.stack([np.searchsorted(np.sort(sk), tk) for sk, tk in zip(skeys, tkeys)])

    positions: list[np.ndarray | None] = [None] * num_r
    flag = np.zeros(nbins, dtype=bool)
    csum = np.zeros(nbins + 1, dtype=np.int64)  # csum[k] = #{items with key < k}
    for r in np.flatnonzero((n_pos > 0) & finite):
        n = int(n_pos[r])
        t, tk = thr[r, :n], tkeys[r, :n]
        kr = keys[r]
        np.cumsum(np.bincount(kr, minlength=nbins), out=csum[1:])
        lt = csum[tk] - same_below[r, :n]  # negatives with a smaller key
        flag[tk] = True
        amb = np.flatnonzero(np.take(flag, kr))  # items sharing a key with some threshold
        flag[tk] = False
        amb = amb[g_pids[amb] != q_pids[r]]  # negatives only
        if len(amb):
            same_key = kr[amb][:, None] == tk[None, :]  # (A, n)
            vals = dist[r, amb][:, None]
            lt += (same_key & (vals < t[None, :])).sum(0)
            tied = same_key & (vals == t[None, :])  # (A, n) non-matches at a match's distance
            if tied.any():
                if ties == "torchreid":
                    fallback[r] = True
                    continue
                lt += (tied & (amb[:, None] < thr_g[r, :n][None, :])).sum(0)  # gallery-index order
        positions[r] = lt + np.arange(n)
    return positions, fallback


def _block_positions_torch(
    dist: torch.Tensor, sidx: np.ndarray, valid: np.ndarray, pos: np.ndarray, ties: str
) -> tuple[list[np.ndarray | None], np.ndarray]:
    """As ``_block_positions_cpu`` by a stable sort of each row (for CUDA tensors)."""
    dev = dist.device
    num_r, num_g = dist.shape
    sidx_t = torch.from_numpy(sidx).to(dev)
    srt, order = dist.sort(dim=1, stable=True)  # (R, G)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(num_g, device=dev).expand(num_r, num_g))  # stable rank
    rank_s = rank.gather(1, sidx_t).cpu().numpy()  # (R, S) stable rank of same-pid items
    n_pos = pos.sum(1)
    finite = torch.isfinite(dist).all(1).cpu().numpy()
    fallback = ~finite & (n_pos > 0)
    if ties == "torchreid":
        # a match tied with a non-match: #items equal to its distance > #same-pid items equal
        d_st = dist.gather(1, sidx_t)  # (R, S)
        n_eq = (
            (torch.searchsorted(srt, d_st, right=True) - torch.searchsorted(srt, d_st, right=False))
            .cpu()
            .numpy()
        )
        d_s = d_st.cpu().numpy()
    positions: list[np.ndarray | None] = [None] * num_r
    for r in np.flatnonzero((n_pos > 0) & finite):
        if ties == "torchreid":
            vs = d_s[r, valid[r]]
            same_eq = (vs[:, None] == d_s[r, pos[r]][None, :]).sum(0)
            if np.any(n_eq[r, pos[r]] > same_eq):
                fallback[r] = True
                continue
        junk = np.sort(rank_s[r, valid[r] & ~pos[r]])
        rp = np.sort(rank_s[r, pos[r]])
        positions[r] = rp - np.searchsorted(junk, rp)  # drop the junk ranked before each match
    return positions, fallback


def _accumulate(
    stats: _Stats, same: _SamePid, rows: slice, dist: torch.Tensor | np.ndarray, ties: str
) -> None:
    """Fill ``stats`` for the query ``rows`` of a ``(R, G)`` distance block."""
    sidx, valid, pos = same.block(rows)
    idx = np.arange(rows.start, rows.stop)
    if isinstance(dist, torch.Tensor) and dist.device.type != "cpu":
        dist = dist.float()
        positions, fallback = _block_positions_torch(dist, sidx, valid, pos, ties)
        dist_np = None
    else:
        dist_np = dist.detach().cpu().numpy() if isinstance(dist, torch.Tensor) else dist
        dist_np = np.ascontiguousarray(dist_np, dtype=np.float32)
        q_pids = same.q_pids[idx]
        positions, fallback = _block_positions_cpu(
            dist_np, sidx, valid, pos, same.g_pids, q_pids, ties
        )
    if fallback.any():
        fb = np.flatnonzero(fallback)
        rows_np = (
            dist_np[fb]
            if dist_np is not None
            else dist[torch.from_numpy(fb).to(dist.device)].cpu().numpy()
        )
        exact = _torchreid_rows(
            rows_np, same.q_pids[idx[fb]], same.q_camids[idx[fb]], same.g_pids, same.g_camids, ties
        )
        for r, p in zip(fb, exact):
            positions[r] = p
    found = [(i, p) for i, p in enumerate(positions) if p is not None]
    stats.put(idx[[i for i, _ in found]], [p for _, p in found])


def _finish(stats: _Stats, max_rank: int, num_gallery: int) -> RankResult:
    num_valid = int(stats.valid.sum())
    if num_valid == 0:
        raise ValueError("no query has a gallery match from another camera: nothing to evaluate")
    first = stats.first[stats.valid]
    hits = np.bincount(np.minimum(first, max_rank), minlength=max_rank + 1)[:max_rank]
    cmc = np.cumsum(hits) / num_valid
    return RankResult(
        cmc=cmc.astype(np.float64),
        mAP=float(stats.ap[stats.valid].mean()),
        mINP=float(stats.inp[stats.valid].mean()),
        num_query_used=num_valid,
        num_query_skipped=int(len(stats.valid) - num_valid),
        num_gallery=num_gallery,
    )


_TIES = ("torchreid", "stable")


def _check_ties(ties: str) -> None:
    if ties not in _TIES:
        raise ValueError(f"ties: expected one of {_TIES}, got {ties!r}")


# ---------------------------------------------------------------------------------------
# public API


def evaluate_rank(
    distmat: ArrayLike,
    q_pids: IdsLike,
    g_pids: IdsLike,
    q_camids: IdsLike,
    g_camids: IdsLike,
    max_rank: int = 50,
    *,
    ties: str = "torchreid",
    chunk_size: int | None = None,
) -> RankResult:
    """CMC/mAP/mINP of a ``(num_query, num_gallery)`` distance matrix, Market-1501 protocol.

    With ``ties="torchreid"`` (default) equals torchreid's ``evaluate_rank`` (CMC, mAP) and
    fast-reid's mINP, ties included; ``ties="stable"`` ranks equal distances by gallery
    index (see the module docstring). ``distmat`` may be a numpy array or a torch tensor (CPU or
    CUDA); it is compared in float32. The CMC has ``min(max_rank, num_gallery)`` entries.
    """
    dist: torch.Tensor | np.ndarray
    if isinstance(distmat, torch.Tensor):
        dist = distmat.detach()
    else:
        dist = np.asarray(distmat)
    if dist.ndim != 2:
        raise ValueError(
            f"distmat: expected a 2-D (num_query, num_gallery) matrix, got shape {tuple(dist.shape)}"
        )
    num_q, num_g = dist.shape
    ids = _check_ids(
        num_q, num_g, q_pids, g_pids, q_camids, g_camids, f"distmat {tuple(dist.shape)}"
    )
    if num_q == 0 or num_g == 0:
        raise ValueError(f"distmat: empty query or gallery (shape {tuple(dist.shape)})")
    max_rank = _max_rank(max_rank, num_g)
    same = _SamePid(*ids)
    stats = _Stats.empty(num_q)
    _check_ties(ties)
    for rows in row_blocks(num_q, num_g, chunk_size):
        _accumulate(stats, same, rows, dist[rows], ties)
    return _finish(stats, max_rank, num_g)


def evaluate_features(
    qf: ArrayLike,
    gf: ArrayLike,
    q_pids: IdsLike,
    g_pids: IdsLike,
    q_camids: IdsLike,
    g_camids: IdsLike,
    max_rank: int = 50,
    metric: str = "euclidean",
    *,
    ties: str = "stable",
    chunk_size: int | None = None,
    rerank: bool = False,
    aqe: bool = False,
) -> RankResult:
    """``evaluate_rank`` of the ``metric`` distances of ``qf (Q, D)`` to ``gf (G, D)``, chunked.

    Never holds the full distance matrix: distances are computed ``chunk_size`` queries at
    a time (default: about 16 Mi distances per block) on the features' device, and each
    block is reduced to the positions of its queries' matches. Results equal
    ``evaluate_rank(pairwise_distance(qf, gf, metric), ..., ties=ties)``; note the default
    ``ties="stable"`` here (float32 ties are common at scale, see the module docstring);
    ``ties="torchreid"`` reproduces torchreid's order at the cost of an argsort per tied row.

    ``aqe=True`` first applies average query expansion (``query_expansion.average_query_expansion``);
    ``rerank=True`` uses k-reciprocal re-ranking (``rerank.k_reciprocal_rerank``), which
    needs the query+gallery neighbourhoods and therefore a full (float32) distance matrix.
    """
    _check_ties(ties)
    q, g = as_features(qf, "qf"), as_features(gf, "gf")
    ids = _check_ids(
        q.shape[0],
        g.shape[0],
        q_pids,
        g_pids,
        q_camids,
        g_camids,
        f"qf/gf {q.shape[0]}x{g.shape[0]}",
    )
    if q.shape[0] == 0 or g.shape[0] == 0:
        raise ValueError(f"empty query ({q.shape[0]}) or gallery ({g.shape[0]}) features")
    if aqe:
        q = average_query_expansion(q, g, metric=metric)
    if rerank:
        dist = k_reciprocal_rerank(q, g, metric=metric)
        return evaluate_rank(dist, *ids, max_rank=max_rank, ties=ties)
    q, g, g_sq = prepare(q, g, metric)
    max_rank = _max_rank(max_rank, g.shape[0])
    same = _SamePid(*ids)
    stats = _Stats.empty(q.shape[0])
    with torch.no_grad():
        for rows in row_blocks(q.shape[0], g.shape[0], chunk_size):
            _accumulate(stats, same, rows, distance_block(q[rows], g, g_sq, metric), ties)
    return _finish(stats, max_rank, g.shape[0])
