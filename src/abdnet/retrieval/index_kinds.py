"""The three faiss index kinds and their options: built, trained, tuned and recognised.

Each computes the metric of the features' embedding space (``EmbeddingSpace.faiss_metric``:
``l2``, squared distances, for the squared-Euclidean spaces; ``inner_product`` for a cosine
space).

- ``flat``: exact search (``faiss.IndexFlat``), the reference the others are measured against.
- ``ivfpq``: inverted file with product quantization (``faiss.IndexIVFPQ``, needs training);
  optionally wrapped in ``faiss.IndexRefineFlat`` (or ``IndexRefine`` over an 8-bit / fp16
  copy) so that the ``k * k_factor`` candidates the compressed codes propose are re-ranked
  with exact distances.
- ``hnsw``: graph search (``faiss.IndexHNSWFlat``), no training, more memory than flat.

faiss is imported lazily (``load_faiss``): it is an optional dependency.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from abdnet.engine import FaissMetric

__all__ = [
    "INDEX_KINDS",
    "KIND_OPTIONS",
    "SEARCH_OPTIONS",
    "BuiltIndex",
    "FaissKind",
    "build_faiss_index",
    "check_kind",
    "faiss_metric_type",
    "default_ivfpq_params",
    "kind_of",
    "load_faiss",
    "set_search_params",
]

log = logging.getLogger(__name__)

INDEX_KINDS = ("flat", "ivfpq", "hnsw")

# Options each kind accepts, with their defaults (None: chosen from the data, see below).
KIND_OPTIONS: dict[str, dict[str, Any]] = {
    "flat": {},
    "ivfpq": {
        "nlist": None,  # inverted lists (coarse centroids); default ~4 sqrt(N), power of two
        "m": None,  # PQ sub-quantizers; must divide dim; default dim / 16 capped at 64
        "nbits": None,  # bits per sub-quantizer code; default 8, fewer below 256 vectors
        "nprobe": 32,  # lists visited per query (search-time, stored in meta.json)
        # Re-rank k * k_factor candidates: "flat" exact distances (IndexRefineFlat; keeps the
        # raw vectors, so more memory than flat), "sq8" / "fp16" (8-bit / half-precision
        # copies: 1/4 or 1/2 of flat's memory, near-exact) or "none" (PQ distances only).
        "refine": "flat",
        "k_factor": 8,  # candidates re-ranked = k * k_factor (refine only)
        "train_size": 200_000,  # at most this many vectors train the quantizers
        "seed": 0,
    },
    "hnsw": {
        "hnsw_m": 32,  # graph degree M
        "ef_construction": 100,
        "ef_search": 128,  # search-time, stored in meta.json
    },
}
# Scalar-quantizer types of the compressed re-ranking copies (looked up lazily in faiss).
_REFINE_SQ = {
    "sq8": lambda: load_faiss().ScalarQuantizer.QT_8bit,
    "fp16": lambda: load_faiss().ScalarQuantizer.QT_fp16,
}
# Options that only affect search; they may be changed on an existing index.
SEARCH_OPTIONS = {"nprobe", "k_factor", "ef_search"}


def load_faiss() -> Any:
    """The ``faiss`` module, or an ImportError saying which extra installs it."""
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "faiss is needed for the search index: pip install 'abdnet[retrieval]' (faiss-cpu)"
        ) from exc
    return faiss


def default_ivfpq_params(n: int, dim: int) -> dict[str, int]:
    """Data-dependent ``nlist``, ``m`` and ``nbits`` for IVF-PQ when the user gives none.

    nlist ~ 4 sqrt(N) (faiss's rule of thumb), rounded to a power of two, between 16 and
    65536, and no more than N / 39 so k-means has its recommended 39 points per centroid;
    a gallery of fewer than 16 vectors gets the largest power of two <= N.
    m = dim / 16 capped at 64 (16 dims per 1-byte code: the exact re-ranking recovers the
    precision, and fewer codes scan faster), lowered until it divides dim.
    nbits = 8 (one byte per code), or floor(log2 N) for fewer than 256 vectors: each
    sub-quantizer has 2**nbits centroids to train on N vectors.
    """
    if n < 2:
        raise ValueError(f"ivfpq: {n} vector(s) cannot train a quantizer; use --kind flat")
    nlist = 2 ** round(math.log2(max(16.0, 4.0 * math.sqrt(n))))
    while nlist > 16 and nlist * 39 > n:
        nlist //= 2
    while nlist > n:
        nlist //= 2
    nlist = int(min(nlist, 65536))
    m = max(1, min(64, dim // 16))
    while dim % m:
        m -= 1
    nbits = min(8, int(math.floor(math.log2(n))))
    return {"nlist": nlist, "m": m, "nbits": nbits}


def check_kind(kind: str) -> None:
    """Refuse a kind that is not one of ``INDEX_KINDS``."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"index kind {kind!r}: expected one of {', '.join(INDEX_KINDS)}")


@dataclass(frozen=True)
class BuiltIndex:
    """An empty (trained, where the kind needs it) faiss index and its complete options."""

    index: Any  # faiss.Index
    params: dict[str, Any]


def faiss_metric_type(metric: FaissMetric) -> int:
    """faiss's metric constant for an embedding space's ``faiss_metric``."""
    faiss = load_faiss()
    return {"l2": faiss.METRIC_L2, "inner_product": faiss.METRIC_INNER_PRODUCT}[metric]


def build_faiss_index(
    kind: str, features: np.ndarray, opts: dict[str, Any], metric: FaissMetric = "l2"
) -> BuiltIndex:
    """A new index of ``kind`` for ``features`` (N, D) float32, trained on them if needed,
    computing ``metric`` (the embedding space's :attr:`~abdnet.engine.EmbeddingSpace.faiss_metric`).

    ``opts`` are the caller's options (``None``: the default); unknown options are refused.
    """
    faiss = load_faiss()
    check_kind(kind)
    n, dim = features.shape
    allowed = KIND_OPTIONS[kind]
    unknown = sorted(k for k, v in opts.items() if v is not None and k not in allowed)
    if unknown:
        raise ValueError(
            f"index kind {kind!r} does not take option(s) {', '.join(unknown)}; "
            f"valid: {', '.join(allowed) or '(none)'}"
        )
    params = {k: (opts[k] if opts.get(k) is not None else v) for k, v in allowed.items()}
    mt = faiss_metric_type(metric)
    if kind == "flat":
        return BuiltIndex(faiss.IndexFlat(dim, mt), params)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, int(params["hnsw_m"]), mt)
        index.hnsw.efConstruction = int(params["ef_construction"])
        return BuiltIndex(index, params)
    return BuiltIndex(_trained_ivfpq(features, params, mt), params)


def _trained_ivfpq(arr: np.ndarray, params: dict[str, Any], metric_type: int) -> Any:
    """An IVF-PQ index (with its re-ranking wrapper) trained on ``arr``; fills ``params``."""
    faiss = load_faiss()
    n, dim = arr.shape
    defaults = default_ivfpq_params(n, dim)
    chosen = [name for name in ("nlist", "m", "nbits") if params[name] is None]
    for name in chosen:
        params[name] = defaults[name]
    nlist, m, nbits = int(params["nlist"]), int(params["m"]), int(params["nbits"])
    small = [f"{name}={params[name]}" for name in chosen if name in ("nlist", "nbits")]
    if n < 16 * 39 and small:
        log.info(
            "ivfpq on a small gallery (%d vectors): %s chosen for its size (a quantizer "
            "needs at least as many training vectors as centroids); at this size --kind flat "
            "is exact and as fast",
            n,
            ", ".join(small),
        )
    if dim % m:
        raise ValueError(f"ivfpq: m={m} must divide the feature dimension {dim}")
    needed = max(nlist, 2**nbits)
    train_size = int(params["train_size"])
    if min(n, train_size) < needed:
        raise ValueError(
            f"ivfpq: too few training vectors: {min(n, train_size)} given, at least {needed} "
            f"needed (nlist={nlist}, 2**nbits={2**nbits}); leave --nlist / --nbits unset to "
            f"have them chosen by the gallery's size, lower them, or use --kind flat or hnsw"
        )
    quantizer = faiss.IndexFlat(dim, metric_type)
    ivf = faiss.IndexIVFPQ(quantizer, dim, nlist, m, nbits, metric_type)
    ivf.cp.seed = int(params["seed"])
    # (faiss's Python wrapper keeps the quantizer / wrapped index alive with their owner.)
    refine = params["refine"]
    if refine is True or refine is False:
        refine = params["refine"] = "flat" if refine else "none"
    if refine == "flat":
        index = faiss.IndexRefineFlat(ivf)
    elif refine in _REFINE_SQ:
        index = faiss.IndexRefine(ivf, faiss.IndexScalarQuantizer(dim, _REFINE_SQ[refine]()))
    elif refine == "none":
        index = ivf
    else:
        raise ValueError(f"ivfpq: refine={refine!r}; expected flat, sq8, fp16 or none")
    rng = np.random.default_rng(int(params["seed"]))
    sample = arr if n <= train_size else arr[np.sort(rng.choice(n, train_size, replace=False))]
    log.info(
        "training ivfpq (nlist=%d, m=%d, nbits=%d) on %d vectors", nlist, m, nbits, len(sample)
    )
    index.train(sample)
    return index


def set_search_params(index: Any, kind: str, params: dict[str, Any]) -> None:
    """Put the search-time options of ``params`` (``nprobe``, ``k_factor``, ``ef_search``)
    into the faiss ``index`` of ``kind``."""
    faiss = load_faiss()
    if kind == "ivfpq":
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
        if params.get("refine", "none") != "none":
            index.k_factor = float(params["k_factor"])
    elif kind == "hnsw":
        index.hnsw.efSearch = int(params["ef_search"])


class FaissKind(NamedTuple):
    """What a faiss index is, as :func:`build_faiss_index` makes them."""

    kind: str | None  # one of INDEX_KINDS, None: not one of ours
    refine: str  # "flat", "sq" (8-bit or fp16 copy) or "none"


def kind_of(index: Any) -> FaissKind:
    """The kind and re-ranking of a faiss index read from a file."""
    faiss = load_faiss()
    if isinstance(index, faiss.IndexHNSWFlat):
        return FaissKind("hnsw", "none")
    if isinstance(index, faiss.IndexFlat):
        return FaissKind("flat", "none")
    if isinstance(index, faiss.IndexIVFPQ):
        return FaissKind("ivfpq", "none")
    if isinstance(index, (faiss.IndexRefineFlat, faiss.IndexRefine)):
        base = faiss.downcast_index(index.base_index)
        if isinstance(base, faiss.IndexIVFPQ):
            refine = "flat" if isinstance(index, faiss.IndexRefineFlat) else "sq"
            return FaissKind("ivfpq", refine)
    return FaissKind(None, "none")
