"""Nearest-neighbour index over gallery embeddings, stored in a folder.

Three kinds, all returning **squared Euclidean distances** (the official code's test
metric; on L2-normalized features it equals ``2 - 2 cos``):

- ``flat``: exact search (``faiss.IndexFlatL2``), the reference the others are measured against.
- ``ivfpq``: inverted file with product quantization (``faiss.IndexIVFPQ``, needs training);
  optionally wrapped in ``faiss.IndexRefineFlat`` so that the ``k * k_factor`` candidates the
  compressed codes propose are re-ranked with exact distances. Scales to millions of crops
  at a fraction of flat's memory.
- ``hnsw``: graph search (``faiss.IndexHNSWFlat``), no training, more memory than flat.

An index folder holds::

    index.faiss   the faiss index (faiss.write_index)
    paths.txt     one gallery path per line, in index order (only when paths were given)
    labels.npz    pids / camids arrays (only when every gallery item carried them)
    meta.json     format version, dim, kind, params, count, optional extraction info

faiss is imported lazily (inside the functions), so importing ``abdnet.retrieval`` stays
cheap and faiss remains an optional dependency (``pip install abdnet[retrieval]``).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "INDEX_KINDS",
    "FeatureIndex",
    "SearchResult",
    "build_index",
    "open_index",
    "default_ivfpq_params",
]

log = logging.getLogger(__name__)

INDEX_FORMAT_VERSION = 1
INDEX_KINDS = ("flat", "ivfpq", "hnsw")

_INDEX_FILE = "index.faiss"
_PATHS_FILE = "paths.txt"
_LABELS_FILE = "labels.npz"
_META_FILE = "meta.json"

# Options each kind accepts, with their defaults (None: chosen from the data, see below).
_KIND_OPTIONS: dict[str, dict[str, Any]] = {
    "flat": {},
    "ivfpq": {
        "nlist": None,  # inverted lists (coarse centroids); default ~4 sqrt(N), power of two
        "m": None,  # PQ sub-quantizers; must divide dim; default dim / 16 capped at 64
        "nbits": 8,  # bits per sub-quantizer code
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
    "sq8": lambda: _faiss().ScalarQuantizer.QT_8bit,
    "fp16": lambda: _faiss().ScalarQuantizer.QT_fp16,
}
# Options that only affect search; they may be changed on an existing index.
_SEARCH_OPTIONS = {"nprobe", "k_factor", "ef_search"}


class SearchResult(NamedTuple):
    """``distances`` (Q, k) float32 squared Euclidean, ``indices`` (Q, k) int64 (-1: no result)."""

    distances: np.ndarray
    indices: np.ndarray


def _faiss():
    # faiss logs every CPU-feature probe at INFO on first import; keep the CLI output clean.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "faiss is needed for the search index: pip install 'abdnet[retrieval]' (faiss-cpu)"
        ) from exc
    return faiss


def _as_matrix(features: Any, what: str) -> np.ndarray:
    """float32 C-contiguous (N, D) array from a numpy array or torch tensor."""
    if hasattr(features, "detach"):  # torch.Tensor, without importing torch here
        features = features.detach().cpu().numpy()
    arr = np.asarray(features)
    if arr.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D (N, D) array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{what}: expected floating-point features, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: features contain NaN or infinity")
    return arr


def default_ivfpq_params(n: int, dim: int) -> dict[str, int]:
    """Data-dependent ``nlist`` and ``m`` for IVF-PQ when the user gives none.

    nlist ~ 4 sqrt(N) (faiss's rule of thumb), rounded to a power of two, between 16 and
    65536, and no more than N / 39 so k-means has its recommended 39 points per centroid.
    m = dim / 16 capped at 64 (16 dims per 1-byte code: the exact re-ranking recovers the
    precision, and fewer codes scan faster), lowered until it divides dim.
    """
    nlist = 2 ** round(math.log2(max(16.0, 4.0 * math.sqrt(max(n, 1)))))
    while nlist > 16 and nlist * 39 > n:
        nlist //= 2
    nlist = int(min(nlist, 65536))
    m = max(1, min(64, dim // 16))
    while dim % m:
        m -= 1
    return {"nlist": nlist, "m": m}


@dataclass
class FeatureIndex:
    """A faiss index with the gallery's paths and labels; see the module docstring.

    Build one with :func:`build_index`, open a saved one with :func:`open_index`.
    ``search`` returns squared Euclidean distances, smallest first.
    """

    index: Any  # faiss.Index
    kind: str
    dim: int
    params: dict[str, Any]
    paths: list[str] | None = None
    pids: np.ndarray | None = None
    camids: np.ndarray | None = None
    extraction: dict[str, Any] = field(default_factory=dict)  # how the features were made
    directory: Path | None = None

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def _where(self) -> str:
        return f"index {self.directory}" if self.directory is not None else "index (in memory)"

    def _check_dim(self, arr: np.ndarray, what: str) -> None:
        if arr.shape[1] != self.dim:
            raise ValueError(
                f"{what} have dimension {arr.shape[1]} but {self._where()} has dimension "
                f"{self.dim}; features must come from the same model as the index"
            )

    def apply_search_params(self, **opts: Any) -> None:
        """Set search-time options (``nprobe``, ``k_factor``, ``ef_search``) of this kind."""
        faiss = _faiss()
        for name, value in opts.items():
            if value is None:
                continue
            if name not in _SEARCH_OPTIONS or name not in _KIND_OPTIONS[self.kind]:
                raise ValueError(
                    f"{self._where()}: option {name!r} does not apply to kind {self.kind!r}"
                )
            if int(value) < 1:
                raise ValueError(f"{self._where()}: {name} must be >= 1, got {value}")
            self.params[name] = int(value)
        if self.kind == "ivfpq":
            faiss.extract_index_ivf(self.index).nprobe = int(self.params["nprobe"])
            if self.params.get("refine", "none") != "none":
                self.index.k_factor = float(self.params["k_factor"])
        elif self.kind == "hnsw":
            self.index.hnsw.efSearch = int(self.params["ef_search"])

    def add(
        self,
        features: Any,
        paths: list[str] | None = None,
        pids: Any = None,
        camids: Any = None,
    ) -> None:
        """Append features (N, D) with their paths / labels, in index order."""
        arr = _as_matrix(features, "added features")
        self._check_dim(arr, "added features")
        n = arr.shape[0]
        if paths is not None:
            if len(paths) != n:
                raise ValueError(f"added features: {n} rows but {len(paths)} paths")
            _check_paths(paths)
        if self.paths is not None:
            if paths is None:
                raise ValueError(
                    f"{self._where()} stores gallery paths: give the paths of the added features"
                )
        elif paths is not None and self.count > 0:
            raise ValueError(
                f"{self._where()} was built without paths; cannot add features with paths"
            )
        if self.pids is not None:
            if pids is None or camids is None:
                log.warning(
                    "%s: added items carry no pid/camid; dropping the labels", self._where()
                )
                self.pids = self.camids = None
            else:
                pids_arr = _as_labels(pids, n, "pids")
                camids_arr = _as_labels(camids, n, "camids")
                self.pids = np.concatenate([self.pids, pids_arr])
                self.camids = np.concatenate([self.camids, camids_arr])
        elif self.count == 0 and pids is not None and camids is not None:
            self.pids = _as_labels(pids, n, "pids")
            self.camids = _as_labels(camids, n, "camids")
        self.index.add(arr)
        if paths is not None:
            self.paths = (self.paths or []) + [str(p) for p in paths]

    def search(self, queries: Any, k: int = 10) -> SearchResult:
        """The ``k`` nearest gallery items of each query: squared Euclidean distances, ascending.

        ``k`` larger than the gallery is clipped to its size; approximate kinds may still
        return fewer than ``k`` hits, marked with index -1 and distance +inf.
        """
        q = _as_matrix(queries, "queries")
        self._check_dim(q, "queries")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if self.count == 0:
            raise ValueError(f"{self._where()} is empty")
        k = min(k, self.count)
        distances, indices = self.index.search(q, k)
        indices = indices.astype(np.int64)
        distances = np.where(indices < 0, np.inf, distances).astype(np.float32)
        return SearchResult(distances, indices)

    def memory_bytes(self) -> int:
        """Size of the serialized faiss index (what it occupies in RAM, to within a few %)."""
        return int(_faiss().serialize_index(self.index).size)

    def save(self, directory: str | Path | None = None) -> Path:
        """Write the index folder (each file atomically, meta.json last)."""
        faiss = _faiss()
        out = Path(directory) if directory is not None else self.directory
        if out is None:
            raise ValueError("FeatureIndex.save: no directory given and the index has none")
        if out.exists() and not out.is_dir():
            raise ValueError(f"index output {out} exists and is not a folder")
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".{_INDEX_FILE}.tmp{os.getpid()}"
        faiss.write_index(self.index, str(tmp))
        os.replace(tmp, out / _INDEX_FILE)
        if self.paths is not None:
            _atomic_write_text(out / _PATHS_FILE, "".join(p + "\n" for p in self.paths))
        elif (out / _PATHS_FILE).exists():
            (out / _PATHS_FILE).unlink()
        if self.pids is not None and self.camids is not None:
            tmp = out / f".labels.tmp{os.getpid()}.npz"
            np.savez(tmp, pids=self.pids, camids=self.camids)
            os.replace(tmp, out / _LABELS_FILE)
        elif (out / _LABELS_FILE).exists():
            (out / _LABELS_FILE).unlink()
        meta = {
            "format": "abdnet-index",
            "format_version": INDEX_FORMAT_VERSION,
            "kind": self.kind,
            "dim": self.dim,
            "count": self.count,
            "metric": "squared_l2",
            "params": self.params,
            "has_paths": self.paths is not None,
            "has_labels": self.pids is not None,
            "extraction": self.extraction,
        }
        _atomic_write_text(out / _META_FILE, json.dumps(meta, indent=2) + "\n")
        self.directory = out
        return out


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _check_paths(paths: list[str]) -> None:
    for p in paths:
        if "\n" in str(p) or "\r" in str(p):
            raise ValueError(f"gallery path {p!r} contains a line break; cannot store it")


def _as_labels(values: Any, n: int, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise ValueError(f"{what}: expected {n} values, got shape {arr.shape}")
    return arr.astype(np.int64)


def build_index(
    features: Any,
    kind: str = "flat",
    *,
    paths: list[str] | None = None,
    pids: Any = None,
    camids: Any = None,
    out_dir: str | Path | None = None,
    extraction: dict[str, Any] | None = None,
    **opts: Any,
) -> FeatureIndex:
    """Build an index of ``kind`` over ``features`` (N, D); save it to ``out_dir`` if given.

    Features should be L2-normalized (what :class:`FeatureExtractor` returns by default):
    distances are then squared Euclidean on the unit sphere. Options per kind:

    - ivfpq: ``nlist``, ``m`` (divides D), ``nbits``, ``nprobe``, ``refine`` ("flat": exact
      re-ranking of ``k * k_factor`` candidates, "sq8", "fp16" or "none"), ``k_factor``,
      ``train_size``, ``seed``;
      needs at least ``max(nlist, 2**nbits)`` training vectors.
    - hnsw: ``hnsw_m``, ``ef_construction``, ``ef_search``.
    """
    faiss = _faiss()
    if kind not in INDEX_KINDS:
        raise ValueError(f"index kind {kind!r}: expected one of {', '.join(INDEX_KINDS)}")
    arr = _as_matrix(features, "features")
    n, dim = arr.shape
    if n == 0:
        raise ValueError("features: cannot build an index from 0 vectors")
    allowed = _KIND_OPTIONS[kind]
    unknown = sorted(k for k, v in opts.items() if v is not None and k not in allowed)
    if unknown:
        raise ValueError(
            f"index kind {kind!r} does not take option(s) {', '.join(unknown)}; "
            f"valid: {', '.join(allowed) or '(none)'}"
        )
    params = {k: (opts[k] if opts.get(k) is not None else v) for k, v in allowed.items()}

    if kind == "flat":
        index = faiss.IndexFlatL2(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, int(params["hnsw_m"]))
        index.hnsw.efConstruction = int(params["ef_construction"])
    else:
        defaults = default_ivfpq_params(n, dim)
        for name in ("nlist", "m"):
            if params[name] is None:
                params[name] = defaults[name]
        nlist, m, nbits = int(params["nlist"]), int(params["m"]), int(params["nbits"])
        if dim % m:
            raise ValueError(f"ivfpq: m={m} must divide the feature dimension {dim}")
        needed = max(nlist, 2**nbits)
        train_size = int(params["train_size"])
        if min(n, train_size) < needed:
            raise ValueError(
                f"ivfpq: too few training vectors: {min(n, train_size)} given, at least {needed} "
                f"needed (nlist={nlist}, 2**nbits={2**nbits}); use --kind flat or hnsw for a "
                f"small gallery, or lower nlist/nbits"
            )
        quantizer = faiss.IndexFlatL2(dim)
        ivf = faiss.IndexIVFPQ(quantizer, dim, nlist, m, nbits)
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

    result = FeatureIndex(
        index=index,
        kind=kind,
        dim=dim,
        params=params,
        extraction=dict(extraction or {}),
    )
    result.apply_search_params()
    result.add(arr, paths=paths, pids=pids, camids=camids)
    if out_dir is not None:
        result.save(out_dir)
    return result


def open_index(directory: str | Path, **search_opts: Any) -> FeatureIndex:
    """Open an index folder written by :meth:`FeatureIndex.save`.

    ``search_opts`` (``nprobe``, ``k_factor``, ``ef_search``) override the stored search
    parameters for this session.
    """
    faiss = _faiss()
    d = Path(directory)
    if not d.exists():
        raise FileNotFoundError(f"index folder not found: {d}")
    if not d.is_dir():
        raise ValueError(f"{d} is not an index folder (expected a directory)")
    meta_path = d / _META_FILE
    if not meta_path.is_file() or not (d / _INDEX_FILE).is_file():
        raise ValueError(
            f"{d} is not an abdnet index folder: missing {_META_FILE} or {_INDEX_FILE}"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{meta_path}: not valid JSON: {exc}") from None
    if meta.get("format") != "abdnet-index":
        raise ValueError(f"{meta_path}: not an abdnet index (format={meta.get('format')!r})")
    if int(meta.get("format_version", -1)) > INDEX_FORMAT_VERSION:
        raise ValueError(
            f"{meta_path}: index format version {meta['format_version']} is newer than this "
            f"abdnet supports ({INDEX_FORMAT_VERSION})"
        )
    index = faiss.read_index(str(d / _INDEX_FILE))
    if index.d != int(meta["dim"]) or index.ntotal != int(meta["count"]):
        raise ValueError(
            f"{d}: {_INDEX_FILE} (dim {index.d}, {index.ntotal} vectors) does not match "
            f"{_META_FILE} (dim {meta['dim']}, count {meta['count']})"
        )
    paths = None
    if meta.get("has_paths"):
        text = (d / _PATHS_FILE).read_text(encoding="utf-8")
        paths = text.split("\n")[:-1] if text else []
        if len(paths) != index.ntotal:
            raise ValueError(f"{d / _PATHS_FILE}: {len(paths)} paths for {index.ntotal} vectors")
    pids = camids = None
    if meta.get("has_labels"):
        with np.load(d / _LABELS_FILE) as z:
            pids, camids = z["pids"], z["camids"]
    result = FeatureIndex(
        index=index,
        kind=meta["kind"],
        dim=int(meta["dim"]),
        params=dict(meta["params"]),
        paths=paths,
        pids=pids,
        camids=camids,
        extraction=dict(meta.get("extraction") or {}),
        directory=d,
    )
    result.apply_search_params(**search_opts)
    return result
