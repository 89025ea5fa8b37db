"""Nearest-neighbour index over gallery embeddings, stored in a folder.

Three kinds, all returning distances of the features' embedding space
(:class:`abdnet.engine.EmbeddingSpace`, recorded in ``meta.json``): **squared Euclidean
distances**, the official code's test metric, which on the L2-normalized features abdnet
extracts by default equal ``2 - 2 cos``; faiss computes the space's ``faiss_metric``.

- ``flat``: exact search (``faiss.IndexFlat``), the reference the others are measured against.
- ``ivfpq``: inverted file with product quantization (``faiss.IndexIVFPQ``, needs training);
  optionally wrapped in ``faiss.IndexRefineFlat`` so that the ``k * k_factor`` candidates the
  compressed codes propose are re-ranked with exact distances. Scales to millions of crops
  at a fraction of flat's memory.
- ``hnsw``: graph search (``faiss.IndexHNSWFlat``), no training, more memory than flat.

The kinds and their options are in ``index_kinds``, the folder's files and the checks made
when reading them in ``index_storage``.

Safety: the folder path is a link to a hidden versioned folder beside it, and every write
(a build, an addition) writes a complete new version and swaps the link with one rename
(:func:`abdnet.files.atomic_directory`): a kill at any moment leaves the old index or the
new one, never a mix. Copy an index with ``cp -rL INDEX DEST`` (it copies the files of the
current version into a plain folder, which opens, searches and takes additions like the
original); a plain ``cp -r`` copies the link alone, and opening that copy elsewhere is an
error that says so. Writers take the folder's lock (:class:`abdnet.files.FolderLock`) and
:func:`update_index` holds it from opening to saving, so concurrent additions wait for each
other instead of one silently replacing the other. Opening checks ``meta.json`` against the
files (kind, dim, count, has_paths, has_labels); a disagreement is an error naming the field,
and nothing is deleted because of it.

faiss is imported lazily (inside the functions), so importing ``abdnet.retrieval`` stays
cheap and faiss remains an optional dependency (``pip install abdnet[retrieval]``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from abdnet.engine import EmbeddingSpace
from abdnet.files import FolderLock, check_output, current_version
from abdnet.retrieval.index_kinds import (
    INDEX_KINDS,
    KIND_OPTIONS,
    SEARCH_OPTIONS,
    build_faiss_index,
    check_kind,
    default_ivfpq_params,
    load_faiss,
    set_search_params,
)
from abdnet.retrieval.index_storage import StoredIndex, read_index_version, write_index_folder

__all__ = [
    "INDEX_KINDS",
    "INDEX_LOCK_TIMEOUT",
    "MAX_K",
    "FeatureIndex",
    "IndexChangedError",
    "SearchResult",
    "build_index",
    "open_index",
    "space_of_extraction",
    "update_index",
    "default_ivfpq_params",
]

log = logging.getLogger(__name__)

# Seconds a writer waits for another writer of the same index folder (an addition to a
# large index takes seconds to minutes) before giving up with FileLockedError.
INDEX_LOCK_TIMEOUT = 600.0
# The most results per query that ``abdnet search``, ``abdnet gallery search`` (-k) and the
# HTTP API (k, ServiceSettings.max_k) return: a larger k is refused with an error naming the
# limit; a k above the gallery's size is not an error (all its items come back).
MAX_K = 1000


class IndexChangedError(ValueError):
    """The index folder was changed by another writer after this index was opened."""


class SearchResult(NamedTuple):
    """``distances`` (Q, k) float32 in the index's embedding space (squared Euclidean for
    every space abdnet extracts), ``indices`` (Q, k) int64 (-1: no result)."""

    distances: np.ndarray
    indices: np.ndarray


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


@dataclass
class FeatureIndex(StoredIndex):
    """A faiss index with the gallery's paths and labels; see the module docstring.

    Build one with :func:`build_index`, open a saved one with :func:`open_index`.
    ``search`` returns distances of the index's embedding space (``embedding_space()``),
    smallest first.
    """

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
        for name, value in opts.items():
            if value is None:
                continue
            if name not in SEARCH_OPTIONS or name not in KIND_OPTIONS[self.kind]:
                raise ValueError(
                    f"{self._where()}: option {name!r} does not apply to kind {self.kind!r}"
                )
            if int(value) < 1:
                raise ValueError(f"{self._where()}: {name} must be >= 1, got {value}")
            self.params[name] = int(value)
        set_search_params(self.index, self.kind, self.params)

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
        """The ``k`` nearest gallery items of each query: distances of the space, ascending.

        ``k`` larger than the gallery gives every item (the command line and the HTTP API
        refuse a ``k`` above ``MAX_K``); approximate kinds may still return fewer than ``k``
        hits, marked with index -1 and distance +inf.
        """
        q = _as_matrix(queries, "queries")
        self._check_dim(q, "queries")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if self.count == 0:
            raise ValueError(f"{self._where()} is empty")
        k = min(k, self.count)
        values, indices = self.index.search(q, k)
        indices = indices.astype(np.int64)
        space = self.embedding_space()
        distances = np.asarray(space.distance_from_search(values, space.faiss_metric))
        distances = np.where(indices < 0, np.inf, distances).astype(np.float32)
        return SearchResult(distances, indices)

    def memory_bytes(self) -> int:
        """Size of the serialized faiss index (what it occupies in RAM, to within a few %)."""
        return int(load_faiss().serialize_index(self.index).size)

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
        write_index_folder(out, self)
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
    space: EmbeddingSpace | None = None,
    **opts: Any,
) -> FeatureIndex:
    """Build an index of ``kind`` over ``features`` (N, D); save it to ``out_dir`` if given
    (a folder already holding files is refused unless ``overwrite``; see ``save``).

    ``space`` is the features' embedding space (``extractor.space``); faiss computes its
    metric and ``search`` answers in its distance. Default: the space ``extraction`` records
    (``abdnet extract`` writes it), else L2-normalized features (what
    :class:`FeatureExtractor` returns by default: squared Euclidean on the unit sphere).
    Options per kind:

    - ivfpq: ``nlist``, ``m`` (divides D), ``nbits``, ``nprobe``, ``refine`` ("flat": exact
      re-ranking of ``k * k_factor`` candidates, "sq8", "fp16" or "none"), ``k_factor``,
      ``train_size``, ``seed``;
      needs at least ``max(nlist, 2**nbits)`` training vectors.
    - hnsw: ``hnsw_m``, ``ef_construction``, ``ef_search``.
    """
    check_kind(kind)
    arr = _as_matrix(features, "features")
    if arr.shape[0] == 0:
        raise ValueError("features: cannot build an index from 0 vectors")
    extraction = dict(extraction or {})
    if space is None:
        space = space_of_extraction(extraction, arr.shape[1])
    if space.dim != arr.shape[1]:
        raise ValueError(f"features: {arr.shape[1]}-d, but the space has {space.dim}-d vectors")
    built = build_faiss_index(kind, arr, opts, space.faiss_metric)
    result = FeatureIndex(
        index=built.index,
        kind=kind,
        dim=arr.shape[1],
        params=built.params,
        extraction=extraction,
        space=space,
    )
    result.apply_search_params()
    result.add(arr, paths=paths, pids=pids, camids=camids)
    if out_dir is not None:
        result.save(out_dir, overwrite=overwrite, lock_timeout=0)
    return result


def space_of_extraction(extraction: dict[str, Any], dim: int) -> EmbeddingSpace:
    """The space a feature file's extraction record declares (``space``), or for a file
    written before spaces were recorded, unit vectors unless it was extracted raw."""
    if "space" in extraction:
        return EmbeddingSpace.from_dict(extraction["space"], "extraction record: space")
    return EmbeddingSpace(dim=dim, normalized=bool(extraction.get("normalize", True)))


def open_index(directory: str | Path, **search_opts: Any) -> FeatureIndex:
    """Open an index folder written by :meth:`FeatureIndex.save`.

    ``search_opts`` (``nprobe``, ``k_factor``, ``ef_search``) override the stored search
    parameters for this session. ``meta.json`` is checked against the files; any
    disagreement is a ``ValueError`` naming the file and the field.
    """
    d = Path(directory)
    if d.is_symlink() and not d.exists():
        raise FileNotFoundError(
            f"index {d} is a link to {os.readlink(d)}, which is not there: an index folder is "
            f"a link to a hidden version folder beside it, and a plain 'cp -r' copies the "
            f"link alone; copy an index with 'cp -rL {d} DEST' (or move it with mv)"
        )
    if not d.exists():
        raise FileNotFoundError(f"index folder not found: {d}")
    if not d.is_dir():
        raise ValueError(f"{d} is not an index folder (expected a directory)")
    # One version, read through its own path: a writer swapping the link meanwhile removes
    # the old version once the swap is done, so read again from the new one if that happens.
    for attempt in range(3):
        version = current_version(d)
        try:
            stored = read_index_version(d, version)
        except FileNotFoundError:
            if attempt == 2 or current_version(d) == version:
                raise
            continue
        result = FeatureIndex(
            **{f.name: getattr(stored, f.name) for f in fields(StoredIndex)},
            directory=d,
            _version=version.name,
        )
        result.apply_search_params(**search_opts)
        return result
    raise AssertionError("unreachable")  # pragma: no cover


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
