"""An index folder on disk: its files, ``meta.json``, and the checks made when reading it.

An index folder holds::

    index.faiss   the faiss index (faiss.write_index)
    paths.txt     one gallery path per line, in index order (only when paths were given)
    labels.npz    pids / camids arrays (only when every gallery item carried them)
    meta.json     format version, dim, kind, params, count, optional extraction info

The folder path is a link to a hidden versioned folder beside it; ``write_index_folder``
writes a complete new version and swaps the link (:func:`abdnet.files.atomic_directory`).
``read_index_version`` checks ``meta.json`` against the files (kind, dim, count, has_paths,
has_labels); a disagreement is an error naming the file and the field.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from abdnet.engine import EmbeddingSpace
from abdnet.files import atomic_directory
from abdnet.retrieval.index_kinds import (
    INDEX_KINDS,
    KIND_OPTIONS,
    SEARCH_OPTIONS,
    faiss_metric_type,
    kind_of,
    load_faiss,
)

__all__ = [
    "INDEX_FILE",
    "INDEX_FORMAT_VERSION",
    "LABELS_FILE",
    "META_FILE",
    "PATHS_FILE",
    "StoredIndex",
    "read_index_version",
    "write_index_folder",
]

INDEX_FORMAT_VERSION = 1

INDEX_FILE = "index.faiss"
PATHS_FILE = "paths.txt"
LABELS_FILE = "labels.npz"
META_FILE = "meta.json"


@dataclass
class StoredIndex:
    """What an index folder holds: the faiss index, its kind and options, paths and labels."""

    index: Any  # faiss.Index
    kind: str
    dim: int
    params: dict[str, Any]
    paths: list[str] | None = None
    pids: np.ndarray | None = None
    camids: np.ndarray | None = None
    extraction: dict[str, Any] = field(default_factory=dict)  # how the features were made
    space: EmbeddingSpace | None = None  # the vectors' space; None: unit vectors of ``dim``

    def embedding_space(self) -> EmbeddingSpace:
        """The space the index's vectors and distances are in."""
        return self.space if self.space is not None else EmbeddingSpace(dim=self.dim)


def write_index_folder(out: Path, stored: StoredIndex) -> None:
    """A complete new version of folder ``out``, swapped in atomically; the caller holds
    the folder's lock."""
    faiss = load_faiss()
    with atomic_directory(out) as tmp:
        faiss.write_index(stored.index, str(tmp / INDEX_FILE))
        if stored.paths is not None:
            (tmp / PATHS_FILE).write_text("".join(p + "\n" for p in stored.paths), encoding="utf-8")
        if stored.pids is not None and stored.camids is not None:
            with open(tmp / LABELS_FILE, "wb") as f:
                np.savez(f, pids=stored.pids, camids=stored.camids)
        meta = {
            "format": "abdnet-index",
            "format_version": INDEX_FORMAT_VERSION,
            "kind": stored.kind,
            "dim": stored.dim,
            "count": int(stored.index.ntotal),
            "metric": _METRIC_NAMES[stored.embedding_space().faiss_metric],
            "space": stored.embedding_space().to_dict(),
            "params": stored.params,
            "has_paths": stored.paths is not None,
            "has_labels": stored.pids is not None,
            "extraction": stored.extraction,
        }
        # meta.json last: a version folder is complete when it has one
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def read_index_version(d: Path, v: Path) -> StoredIndex:
    """The index whose files are in ``v`` (``d``'s current version); errors name ``d``'s files."""
    faiss = load_faiss()
    meta_path = d / META_FILE
    if not (v / META_FILE).is_file() or not (v / INDEX_FILE).is_file():
        raise ValueError(f"{d} is not an abdnet index folder: missing {META_FILE} or {INDEX_FILE}")
    try:
        meta = json.loads((v / META_FILE).read_text(encoding="utf-8"))
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
        index = faiss.read_index(str(v / INDEX_FILE))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{d / INDEX_FILE}: not a readable faiss index: {reason}") from None
    actual = kind_of(index)
    if actual.kind != kind:
        raise ValueError(
            f"{meta_path}: kind {kind!r} does not match {INDEX_FILE}, which holds a "
            f"{actual.kind or type(index).__name__} index"
        )
    if index.d != dim:
        raise ValueError(f"{meta_path}: dim {dim} does not match {INDEX_FILE} (dim {index.d})")
    space = _read_space(meta, dim, extraction, meta_path)
    if index.metric_type != faiss_metric_type(space.faiss_metric):
        raise ValueError(
            f"{meta_path}: metric {meta.get('metric')!r} does not match {INDEX_FILE} (faiss "
            f"metric type {index.metric_type})"
        )
    if index.ntotal != count:
        raise ValueError(
            f"{meta_path}: count {count} does not match {INDEX_FILE} ({index.ntotal} vectors)"
        )
    _check_params(params, kind, actual.refine, meta_path)

    paths_file, labels_file = v / PATHS_FILE, v / LABELS_FILE
    if has_paths != paths_file.is_file():
        raise ValueError(
            f"{meta_path}: has_paths is {str(has_paths).lower()} but {d / PATHS_FILE} "
            f"{'is missing' if has_paths else 'exists'}"
        )
    if has_labels != labels_file.is_file():
        raise ValueError(
            f"{meta_path}: has_labels is {str(has_labels).lower()} but {d / LABELS_FILE} "
            f"{'is missing' if has_labels else 'exists'}"
        )
    paths = None
    if has_paths:
        try:
            text = paths_file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{d / PATHS_FILE}: not UTF-8 text: {exc}") from None
        paths = text.split("\n")[:-1] if text else []
        if len(paths) != count:
            raise ValueError(f"{d / PATHS_FILE}: {len(paths)} paths for {count} vectors")
    pids = camids = None
    if has_labels:
        labels = _read_labels(labels_file, count, d / LABELS_FILE)
        pids, camids = labels.pids, labels.camids
    return StoredIndex(
        index=index,
        kind=kind,
        dim=dim,
        params=dict(params),
        paths=paths,
        pids=pids,
        camids=camids,
        extraction=dict(extraction),
        space=space,
    )


# meta.json ``metric``: what the faiss index computes (squared_l2 in every older index)
_METRIC_NAMES = {"l2": "squared_l2", "inner_product": "inner_product"}


def _read_space(
    meta: dict[str, Any], dim: int, extraction: dict[str, Any], where: Path
) -> EmbeddingSpace:
    """The index's embedding space: ``meta.json``'s ``space``, or for an index written before
    spaces were recorded, unit vectors unless its features were extracted raw."""
    if "space" in meta:
        space = EmbeddingSpace.from_dict(meta["space"], f"{where}: space")
    else:
        space = EmbeddingSpace(dim=dim, normalized=bool(extraction.get("normalize", True)))
    if space.dim != dim:
        raise ValueError(f"{where}: space.dim {space.dim} does not match dim {dim}")
    metric = meta.get("metric", "squared_l2")
    if metric != _METRIC_NAMES[space.faiss_metric]:
        raise ValueError(
            f"{where}: metric {metric!r} does not match the space "
            f"({_METRIC_NAMES[space.faiss_metric]!r} for {space.rule})"
        )
    return space


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


def _check_params(params: dict[str, Any], kind: str, refine: str, where: Path) -> None:
    for name in sorted(SEARCH_OPTIONS & set(KIND_OPTIONS[kind])):
        value = params.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}: params.{name}: expected an integer >= 1, got {value!r}")
    if kind == "ivfpq":
        stored = params.get("refine")
        if {"flat": "flat", "sq8": "sq", "fp16": "sq", "none": "none"}.get(stored) != refine:
            raise ValueError(
                f"{where}: params.refine {stored!r} does not match {INDEX_FILE} "
                f"({'no re-ranking' if refine == 'none' else 're-ranking ' + refine})"
            )


class _Labels(NamedTuple):
    pids: np.ndarray  # (N,) int64
    camids: np.ndarray  # (N,) int64


def _read_labels(path: Path, count: int, name: Path) -> _Labels:
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
    return _Labels(arrays["pids"].astype(np.int64), arrays["camids"].astype(np.int64))
