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

Safety: the folder path is a link to a hidden versioned folder beside it, and every write
(a build, an addition) writes a complete new version and swaps the link with one rename
(:func:`abdnet.files.atomic_directory`): a kill at any moment leaves the old index or the
new one, never a mix. Writers take the folder's lock (:class:`abdnet.files.FolderLock`) and
:func:`update_index` holds it from opening to saving, so concurrent additions wait for each
other instead of one silently replacing the other. Opening checks ``meta.json`` against the
files (kind, dim, count, has_paths, has_labels); a disagreement is an error naming the field,
and nothing is deleted because of it.

faiss is imported lazily (inside the functions), so importing ``abdnet.retrieval`` stays
cheap and faiss remains an optional dependency (``pip install abdnet[retrieval]``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from abdnet.files import (
    FolderLock,
    atomic_directory,
    check_output,
    current_version,
)

__all__ = [
    "INDEX_KINDS",
    "INDEX_LOCK_TIMEOUT",
    "FeatureIndex",
    "IndexChangedError",
    "SearchResult",
    "build_index",
    "open_index",
    "update_index",
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
# Seconds a writer waits for another writer of the same index folder (an addition to a
# large index takes seconds to minutes) before giving up with FileLockedError.
INDEX_LOCK_TIMEOUT = 600.0


class IndexChangedError(ValueError):
    """The index folder was changed by another writer after this index was opened."""


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
    # the version folder this index was read from or last written to (see save)
    _version: str | None = field(default=None, repr=False)

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

    def save(
        self,
        directory: str | Path | None = None,
        *,
        overwrite: bool = False,
        lock_timeout: float | None = INDEX_LOCK_TIMEOUT,
    ) -> Path:
        """Write the index folder as a whole, under its lock (see the module docstring).

        Saving back to the folder it was opened from replaces it, unless another writer
        changed it meanwhile (:class:`IndexChangedError`: open it again, or use
        :func:`update_index`, which holds the lock from opening to saving). Saving to
        another folder refuses one that already holds files unless ``overwrite``.
        """
        out = Path(directory) if directory is not None else self.directory
        if out is None:
            raise ValueError("FeatureIndex.save: no directory given and the index has none")
        with FolderLock(out, timeout=lock_timeout, what=f"index {out}"):
            if self.directory is not None and _same_path(out, self.directory):
                now = current_version(out).name if out.exists() else None
                if self._version is not None and now != self._version:
                    raise IndexChangedError(
                        f"index {out}: changed by another writer since it was opened; open it "
                        "again and repeat the change"
                    )
            else:
                check_output(out, force=overwrite, folder=True, option="index folder")
            self._write(out)
        return out

    def _write(self, out: Path) -> None:
        """A complete new version of the folder, swapped in atomically; the caller holds
        the folder's lock."""
        faiss = _faiss()
        with atomic_directory(out) as tmp:
            faiss.write_index(self.index, str(tmp / _INDEX_FILE))
            if self.paths is not None:
                (tmp / _PATHS_FILE).write_text(
                    "".join(p + "\n" for p in self.paths), encoding="utf-8"
                )
            if self.pids is not None and self.camids is not None:
                with open(tmp / _LABELS_FILE, "wb") as f:
                    np.savez(f, pids=self.pids, camids=self.camids)
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
            # meta.json last: a version folder is complete when it has one
            (tmp / _META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        self.directory = out
        self._version = current_version(out).name


def _same_path(a: Path, b: Path) -> bool:
    return a.absolute() == b.absolute()


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
    overwrite: bool = False,
    extraction: dict[str, Any] | None = None,
    **opts: Any,
) -> FeatureIndex:
    """Build an index of ``kind`` over ``features`` (N, D); save it to ``out_dir`` if given
    (a folder already holding files is refused unless ``overwrite``; see ``save``).

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
        result.save(out_dir, overwrite=overwrite, lock_timeout=0)
    return result


def open_index(directory: str | Path, **search_opts: Any) -> FeatureIndex:
    """Open an index folder written by :meth:`FeatureIndex.save`.

    ``search_opts`` (``nprobe``, ``k_factor``, ``ef_search``) override the stored search
    parameters for this session. ``meta.json`` is checked against the files; any
    disagreement is a ``ValueError`` naming the file and the field.
    """
    d = Path(directory)
    if not d.exists():
        raise FileNotFoundError(f"index folder not found: {d}")
    if not d.is_dir():
        raise ValueError(f"{d} is not an index folder (expected a directory)")
    # One version, read through its own path: a writer swapping the link meanwhile removes
    # the old version once the swap is done, so read again from the new one if that happens.
    for attempt in range(3):
        version = current_version(d)
        try:
            result = _read_version(d, version)
        except FileNotFoundError:
            if attempt == 2 or current_version(d) == version:
                raise
            continue
        result.apply_search_params(**search_opts)
        return result
    raise AssertionError("unreachable")  # pragma: no cover


def _read_version(d: Path, v: Path) -> FeatureIndex:
    """The index whose files are in ``v`` (``d``'s current version); errors name ``d``'s files."""
    faiss = _faiss()
    meta_path = d / _META_FILE
    if not (v / _META_FILE).is_file() or not (v / _INDEX_FILE).is_file():
        raise ValueError(
            f"{d} is not an abdnet index folder: missing {_META_FILE} or {_INDEX_FILE}"
        )
    try:
        meta = json.loads((v / _META_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{meta_path}: not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != "abdnet-index":
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{meta_path}: not an abdnet index (format={found!r})")
    version = _meta_int(meta, "format_version", meta_path, minimum=1)
    if version > INDEX_FORMAT_VERSION:
        raise ValueError(
            f"{meta_path}: format_version {version} is newer than this abdnet supports "
            f"({INDEX_FORMAT_VERSION})"
        )
    kind = meta.get("kind")
    if kind not in INDEX_KINDS:
        raise ValueError(f"{meta_path}: kind {kind!r}: expected one of {', '.join(INDEX_KINDS)}")
    dim = _meta_int(meta, "dim", meta_path, minimum=1)
    count = _meta_int(meta, "count", meta_path, minimum=0)
    has_paths = _meta_bool(meta, "has_paths", meta_path)
    has_labels = _meta_bool(meta, "has_labels", meta_path)
    params = meta.get("params")
    if not isinstance(params, dict):
        raise ValueError(f"{meta_path}: params: expected a mapping, got {params!r}")
    extraction = meta.get("extraction") or {}
    if not isinstance(extraction, dict):
        raise ValueError(f"{meta_path}: extraction: expected a mapping, got {extraction!r}")

    try:
        index = faiss.read_index(str(v / _INDEX_FILE))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{d / _INDEX_FILE}: not a readable faiss index: {reason}") from None
    actual_kind, refine = _kind_of(index)
    if actual_kind != kind:
        raise ValueError(
            f"{meta_path}: kind {kind!r} does not match {_INDEX_FILE}, which holds a "
            f"{actual_kind or type(index).__name__} index"
        )
    if index.d != dim:
        raise ValueError(f"{meta_path}: dim {dim} does not match {_INDEX_FILE} (dim {index.d})")
    if index.ntotal != count:
        raise ValueError(
            f"{meta_path}: count {count} does not match {_INDEX_FILE} ({index.ntotal} vectors)"
        )
    _check_params(params, kind, refine, meta_path)

    paths_file, labels_file = v / _PATHS_FILE, v / _LABELS_FILE
    if has_paths != paths_file.is_file():
        raise ValueError(
            f"{meta_path}: has_paths is {str(has_paths).lower()} but {d / _PATHS_FILE} "
            f"{'is missing' if has_paths else 'exists'}"
        )
    if has_labels != labels_file.is_file():
        raise ValueError(
            f"{meta_path}: has_labels is {str(has_labels).lower()} but {d / _LABELS_FILE} "
            f"{'is missing' if has_labels else 'exists'}"
        )
    paths = None
    if has_paths:
        try:
            text = paths_file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{d / _PATHS_FILE}: not UTF-8 text: {exc}") from None
        paths = text.split("\n")[:-1] if text else []
        if len(paths) != count:
            raise ValueError(f"{d / _PATHS_FILE}: {len(paths)} paths for {count} vectors")
    pids = camids = None
    if has_labels:
        pids, camids = _read_labels(labels_file, count, d / _LABELS_FILE)
    return FeatureIndex(
        index=index,
        kind=kind,
        dim=dim,
        params=dict(params),
        paths=paths,
        pids=pids,
        camids=camids,
        extraction=dict(extraction),
        directory=d,
        _version=v.name,
    )


def _meta_int(meta: dict[str, Any], key: str, where: Path, *, minimum: int) -> int:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where}: {key}: expected an integer >= {minimum}, got {value!r}")
    return value


def _meta_bool(meta: dict[str, Any], key: str, where: Path) -> bool:
    value = meta.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{where}: {key}: expected true or false, got {value!r}")
    return value


def _kind_of(index: Any) -> tuple[str | None, str]:
    """``(kind, refine)`` of a faiss index as :func:`build_index` makes them."""
    faiss = _faiss()
    if isinstance(index, faiss.IndexHNSWFlat):
        return "hnsw", "none"
    if isinstance(index, faiss.IndexFlat):
        return "flat", "none"
    if isinstance(index, faiss.IndexIVFPQ):
        return "ivfpq", "none"
    if isinstance(index, (faiss.IndexRefineFlat, faiss.IndexRefine)):
        base = faiss.downcast_index(index.base_index)
        if isinstance(base, faiss.IndexIVFPQ):
            return "ivfpq", "flat" if isinstance(index, faiss.IndexRefineFlat) else "sq"
    return None, "none"


def _check_params(params: dict[str, Any], kind: str, refine: str, where: Path) -> None:
    for name in sorted(_SEARCH_OPTIONS & set(_KIND_OPTIONS[kind])):
        value = params.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}: params.{name}: expected an integer >= 1, got {value!r}")
    if kind == "ivfpq":
        stored = params.get("refine")
        if {"flat": "flat", "sq8": "sq", "fp16": "sq", "none": "none"}.get(stored) != refine:
            raise ValueError(
                f"{where}: params.refine {stored!r} does not match {_INDEX_FILE} "
                f"({'no re-ranking' if refine == 'none' else 're-ranking ' + refine})"
            )


def _read_labels(path: Path, count: int, name: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("pids", "camids") if k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{name}: not a readable labels file: {exc}") from None
    for key in ("pids", "camids"):
        arr = arrays.get(key)
        if arr is None:
            raise ValueError(f"{name}: no {key!r} array")
        if arr.shape != (count,) or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(
                f"{name}: {key}: expected {count} integers, got shape {arr.shape} dtype {arr.dtype}"
            )
    return arrays["pids"].astype(np.int64), arrays["camids"].astype(np.int64)


@contextlib.contextmanager
def update_index(
    directory: str | Path, *, lock_timeout: float | None = INDEX_LOCK_TIMEOUT
) -> Iterator[FeatureIndex]:
    """Open an index folder for a change and save it as a whole when the block ends.

    The folder's lock is held from opening to saving, so concurrent updates (two
    ``abdnet index add``) run one after the other, each on the other's result; a second
    writer waits up to ``lock_timeout`` seconds (``None``: for ever, 0: not at all) and then
    raises :class:`abdnet.files.FileLockedError`. If the block raises, nothing is written.
    """
    d = Path(directory)
    if not d.exists():
        raise FileNotFoundError(f"index folder not found: {d}")
    with FolderLock(d, timeout=lock_timeout, what=f"index {d}"):
        index = open_index(d)
        yield index
        index._write(d)
