"""The persistent gallery: embeddings and crop metadata in Milvus, the crops on disk.

``Gallery.open("gallery.db")`` uses **Milvus Lite** (embedded: the database lives in that path,
nothing to start; one process at a time, enforced with a folder lock that names the gallery);
``Gallery.open("http://host:19530")`` talks to a Milvus standalone or distributed server with
the same code. pymilvus is imported only when a gallery is opened.

One collection, one row per crop (its schema, metadata and consistency level:
:mod:`abdnet.gallery.collection`; rows to and from records: :mod:`abdnet.gallery.rows`).
The id is derived from the content, so enrolment is idempotent: adding a crop already in the
gallery changes nothing (and writers that race on one crop write the same row). Opening a
gallery with another model than the one whose embeddings it holds raises
:class:`ModelMismatchError`.

Ranking: the model's embedding space (:attr:`ModelInfo.space`, an
:class:`abdnet.engine.EmbeddingSpace`) says how Milvus searches (``milvus_metric``: inner
product of unit vectors) and turns what Milvus returns into the space's distance (squared
Euclidean ``2 - 2 cos``, as ``abdnet search`` and thresholds) and the cosine score; each hit
carries both. A gallery holds unit vectors only (a raw-embedding space has no score).
Filtered queries are batched as :mod:`abdnet.gallery.search` describes;
:meth:`Gallery.sightings` groups a query's hits by identity (label) with their cameras and
time spans (:mod:`abdnet.gallery.sightings`).

Consistency: every read (search, count, get, list) is at Strong consistency: it sees every
write acknowledged before it began (see :mod:`abdnet.gallery.collection`).

Durability: crops are written (and synced) before their rows; a row is acknowledged once
Milvus has accepted it (Milvus Lite: appended to its write-ahead log, which survives the
process being killed; a Milvus server: persisted to its log broker). A crop whose row never
made it is unreferenced and harmless; it is reused when the crop is enrolled again.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from abdnet.files import FolderLock
from abdnet.gallery.collection import (
    CONSISTENCY,
    DEFAULT_COLLECTION,
    FIELDS,
    INDEX_TYPES,
    MAX_RESULTS,
    GalleryError,
    disconnect,
    is_embedded,
    lock_embedded,
    open_milvus,
    server_version,
)
from abdnet.gallery.model import ModelInfo
from abdnet.gallery.records import (
    ID_LENGTH,
    Added,
    Enrolment,
    GalleryEntry,
    Hit,
    Page,
    SearchFilter,
    to_ms,
)
from abdnet.gallery.rows import (
    check_enrolment,
    check_features,
    enrolment_row,
    hit_from_search,
    id_filter,
    label_filter,
    list_filter,
    valid_id,
)
from abdnet.gallery.search import search_filtered
from abdnet.gallery.sightings import Sightings, group_sightings
from abdnet.gallery.store import CropStore, UrlCropStore, open_crop_store

__all__ = ["Gallery", "GalleryError", "default_crop_folder"]

# Milvus Lite 3 keeps new rows in an in-memory table that every search and query scans row
# by row in Python (0.05-0.1 ms per row), until it seals them into a segment at 128 MiB. An
# embedded gallery seals them itself every this many rows (a seal costs ~0.1 s).
SEAL_ROWS = 256


def default_crop_folder(uri: str | Path) -> Path | None:
    """``gallery.crops/`` beside an embedded ``gallery.db``; None for a server."""
    if not is_embedded(uri):
        return None
    p = Path(uri)
    return p.with_name(p.stem + ".crops")


class Gallery:
    """A gallery collection in Milvus plus its crop store. Thread-safe; close() when done."""

    def __init__(
        self,
        client: Any,
        uri: str,
        collection: str,
        meta: dict[str, Any],
        crops: CropStore | UrlCropStore | None,
        lock: FolderLock | None,
        timeout: float,
    ) -> None:
        self._client = client
        self.uri = uri
        self.collection = collection
        self.meta = meta
        self.model = ModelInfo.from_dict(meta["model"])
        self.crops = crops
        self._lock = lock
        self._timeout = timeout
        self._write = threading.Lock()  # one writer at a time in this process
        self._unsealed = 0  # rows added since the last flush (embedded galleries)

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        uri: str | Path,
        *,
        model: ModelInfo | None = None,
        create: bool = False,
        crops: str | Path | None = None,
        collection: str = DEFAULT_COLLECTION,
        index: str = "flat",
        timeout: float = 60.0,
    ) -> Gallery:
        """Open (``create=True``: or create) the gallery at ``uri``.

        ``model``: the model whose embeddings will be added or searched; required to create,
        checked against the stored one otherwise (None: no check, e.g. to list or delete).
        ``crops``: the crop folder (default ``NAME.crops`` beside an embedded ``NAME.db``;
        none for a server unless given). ``index``: ``flat`` (exact) or ``hnsw``, used
        when creating.
        """
        uri_s = str(uri)
        if index not in INDEX_TYPES:
            raise GalleryError(f"index {index!r}: expected one of {', '.join(INDEX_TYPES)}")
        crop_root = crops if crops is not None else default_crop_folder(uri_s)
        try:  # before Milvus is touched: a bad URL creates nothing
            store = open_crop_store(crop_root) if crop_root is not None else None
        except ValueError as exc:
            raise GalleryError(f"--crops: {exc}") from None
        lock = lock_embedded(uri_s, create=create)
        try:
            client, meta = open_milvus(uri_s, collection, model, create, index, timeout)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        gallery = cls(client, uri_s, collection, meta, store, lock, timeout)
        if lock is not None:
            try:
                gallery.flush()  # rows replayed from the log of a killed process: seal them
            except BaseException:
                gallery.close()
                raise
        return gallery

    def close(self) -> None:
        if self._client is None:
            return
        disconnect(self._client, self.uri)
        self._client = None
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------------

    def size(self) -> int:
        return self.count()

    def count(self, *, camera: int | None = None, label: str | None = None) -> int:
        rows = self._call(
            "count",
            self._client.query,
            self.collection,
            filter=list_filter(camera, label),
            output_fields=["count(*)"],
            consistency_level=CONSISTENCY,
        )
        return int(rows[0]["count(*)"]) if rows else 0

    def get(self, ids: Sequence[str]) -> list[GalleryEntry]:
        """The entries of ``ids`` that exist, in the order given."""
        ids = [i for i in ids if valid_id(i)]
        if not ids:
            return []
        rows = self._call(
            "get",
            self._client.query,
            self.collection,
            filter=id_filter(ids),
            output_fields=["id", *FIELDS],
            consistency_level=CONSISTENCY,
        )
        found = {str(r["id"]): GalleryEntry.from_row(r) for r in rows}
        return [found[i] for i in ids if i in found]

    def find(self, sha256s: Sequence[str]) -> dict[str, str]:
        """``sha256 -> id`` for the crops already enrolled."""
        entries = self.get(sorted({s[:ID_LENGTH] for s in sha256s}))
        wanted = set(sha256s)
        return {e.sha256: e.id for e in entries if e.sha256 in wanted}

    def page(
        self,
        *,
        offset: int = 0,
        limit: int = 50,
        camera: int | None = None,
        label: str | None = None,
    ) -> Page:
        """A page of entries in the database's order (stable while the gallery is unchanged)."""
        if offset < 0 or limit < 0:
            raise ValueError(f"offset and limit must be >= 0, got {offset}, {limit}")
        if offset + limit > MAX_RESULTS:
            raise ValueError(f"offset + limit must be <= {MAX_RESULTS}, got {offset + limit}")
        total = self.count(camera=camera, label=label)
        if limit == 0 or offset >= total:
            return Page(total=total, items=[])
        rows = self._call(
            "list",
            self._client.query,
            self.collection,
            filter=list_filter(camera, label),
            output_fields=["id", *FIELDS],
            offset=offset,
            limit=limit,
            consistency_level=CONSISTENCY,
        )
        return Page(total=total, items=[GalleryEntry.from_row(r) for r in rows])

    def crop_path(self, entry: GalleryEntry) -> Path | None:
        """The stored crop's local file; None without a crop store, when it is missing, or
        when the store is not on the local file system (use :meth:`crop_bytes`)."""
        if self.crops is None:
            return None
        return self.crops.get(entry.sha256, entry.extension)

    def crop_bytes(self, entry: GalleryEntry) -> bytes | None:
        """The stored crop of ``entry``, checked against its sha256 (``CropIntegrityError``
        when it differs); None without a crop store or when it is missing."""
        if self.crops is None:
            return None
        return self.crops.read(entry.sha256, entry.extension)

    def search(
        self,
        features: np.ndarray,
        k: int,
        filters: Sequence[SearchFilter] | None = None,
    ) -> list[list[Hit]]:
        """The ``k`` nearest entries of each query embedding ``(Q, D)``, nearest first.

        ``filters[i]`` restricts query ``i``; queries are batched into few Milvus calls
        (:mod:`abdnet.gallery.search`) with the results of filtering each in Milvus.
        """
        q = self._check_features(features)
        if not 1 <= k <= MAX_RESULTS:
            raise ValueError(f"k must be in 1..{MAX_RESULTS}, got {k}")
        filters = list(filters) if filters is not None else [SearchFilter()] * len(q)
        if len(filters) != len(q):
            raise ValueError(f"{len(filters)} filters for {len(q)} queries")
        return search_filtered(q, k, filters, self._search)

    def _search(self, q: np.ndarray, limit: int, expr: str) -> list[list[Hit]]:
        space = self.model.space
        params: dict[str, Any] = {"metric_type": space.milvus_metric}
        if self.meta.get("index", "flat") == "hnsw":
            params["params"] = {"ef": max(64, limit)}
        result = self._call(
            "search",
            self._client.search,
            self.collection,
            data=[row.tolist() for row in q],
            limit=limit,
            filter=expr,
            output_fields=FIELDS,
            search_params=params,
            consistency_level=CONSISTENCY,
        )
        return [[hit_from_search(h, space) for h in hits] for hits in result]

    def sightings(
        self,
        hits: Sequence[Hit],
        *,
        filter: SearchFilter | None = None,
        gap: float | None = None,
    ) -> list[Sightings]:
        """Where and when the identities among one query's ``hits`` were seen: the hits
        grouped by label with every entry of each label that ``filter`` (the query's) lets
        through, per camera in time spans (:mod:`abdnet.gallery.sightings`)."""
        labels = sorted({h.entry.label for h in hits if h.entry.label is not None})
        entries: list[GalleryEntry] = []
        complete = True
        if labels:
            rows = self._call(
                "sightings",
                self._client.query,
                self.collection,
                filter=label_filter(labels, (filter or SearchFilter()).expression()),
                output_fields=["id", *FIELDS],
                limit=MAX_RESULTS,
                consistency_level=CONSISTENCY,
            )
            entries = [GalleryEntry.from_row(r) for r in rows]
            complete = len(rows) < MAX_RESULTS
        return group_sightings(hits, entries, gap=gap, complete=complete)

    def info(self) -> dict[str, Any]:
        """What ``abdnet gallery info`` prints."""
        out: dict[str, Any] = {
            "gallery": self.uri,
            "backend": "milvus-lite" if is_embedded(self.uri) else "milvus",
            "collection": self.collection,
            "entries": self.size(),
            "created": self.meta.get("created"),
            "index": self.meta.get("index", "flat"),
            "model": self.model.to_dict(),
            "crops": str(self.crops.root) if self.crops is not None else None,
        }
        out["server_version"] = server_version(self._client, self.uri, self._timeout)
        if self.crops is not None:
            st = self.crops.stats()
            out["crop_files"], out["crop_bytes"] = st.files, st.bytes
        return out

    # -- writing -------------------------------------------------------------------------

    def add(self, enrolments: Sequence[Enrolment], features: np.ndarray) -> list[Added]:
        """Enrol crops with their embeddings ``(N, D)``; crops already enrolled are skipped.

        Durable when this returns: the crops are synced to disk, then the rows are written.
        """
        feats = self._check_features(features)
        if len(enrolments) != len(feats):
            raise ValueError(f"{len(enrolments)} crops but {len(feats)} embeddings")
        for e in enrolments:
            check_enrolment(e)
        with self._write:
            ids = [e.crop.sha256[:ID_LENGTH] for e in enrolments]
            existing = {x.id: x for x in self.get(sorted(set(ids)))}
            results: list[Added] = []
            rows: list[dict[str, Any]] = []
            new: list[Enrolment] = []
            now = to_ms(datetime.now(timezone.utc))
            planned: set[str] = set()
            for e, i, f in zip(enrolments, ids, feats):
                have = existing.get(i)
                if have is not None and have.sha256 != e.crop.sha256:
                    raise GalleryError(
                        f"gallery {self.uri}: {e.crop.name} has id {i} like entry {i} but other "
                        f"bytes (sha256 {e.crop.sha256} vs {have.sha256}); not added"
                    )
                if have is not None or i in planned:
                    results.append(Added(i, False))
                    continue
                planned.add(i)
                new.append(e)
                rows.append(enrolment_row(i, e, f, now))
                results.append(Added(i, True))
            if rows:
                if self.crops is not None:
                    self.crops.put_many(
                        [(e.crop.sha256, e.crop.extension, e.crop.data) for e in new]
                    )
                self._call("add", self._client.upsert, self.collection, data=rows)
                self._unsealed += len(rows)
                if self._lock is not None and self._unsealed >= SEAL_ROWS:
                    self.flush()
        return results

    def delete(self, ids: Sequence[str]) -> list[str]:
        """Remove entries and their crops; returns the ids that existed."""
        with self._write:
            entries = self.get(list(ids))
            if not entries:
                return []
            self._call("delete", self._client.delete, self.collection, ids=[e.id for e in entries])
            if self.crops is not None:
                for e in entries:
                    self.crops.delete(e.sha256, e.extension)
        return [e.id for e in entries]

    def rows(self, *, batch_size: int = 512) -> Iterator[list[dict[str, Any]]]:
        """Every row, embedding included, in batches (for copying a gallery)."""
        it = self._call(
            "read",
            self._client.query_iterator,
            self.collection,
            batch_size=batch_size,
            output_fields=["id", "embedding", *FIELDS],
            consistency_level=CONSISTENCY,
        )
        try:
            while batch := it.next():
                yield [dict(r) for r in batch]
        finally:
            it.close()

    def get_rows(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """The rows of ``ids`` that exist, embedding included, in no particular order."""
        ids = [i for i in ids if valid_id(i)]
        if not ids:
            return []
        return self._call(
            "get",
            self._client.query,
            self.collection,
            filter=id_filter(ids),
            output_fields=["id", "embedding", *FIELDS],
            consistency_level=CONSISTENCY,
        )

    def add_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        """Write rows as :meth:`rows` returns them (ids and enrolment times kept). Their crops
        must already be in this gallery's crop store."""
        with self._write:
            self._call("add", self._client.upsert, self.collection, data=list(rows))
            self._unsealed += len(rows)
            if self._lock is not None and self._unsealed >= SEAL_ROWS:
                self.flush()

    def flush(self) -> None:
        """Ask Milvus to seal what it holds in memory into its segment files."""
        self._call("flush", self._client.flush, self.collection)
        self._unsealed = 0

    # -- helpers -------------------------------------------------------------------------

    def _check_features(self, features: Any) -> np.ndarray:
        return check_features(features, self.model.dim, self.uri)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._client is None:
            raise GalleryError(f"gallery {self.uri} is closed")
        from pymilvus.exceptions import MilvusException  # heavy, optional dependency

        try:
            return fn(*args, timeout=self._timeout, **kwargs)
        except MilvusException as exc:
            # its message, on one line (str(exc) embeds the multi-line gRPC error's repr)
            message = " ".join(str(getattr(exc, "message", None) or exc).split())
            raise GalleryError(f"gallery {self.uri}: {what} failed: {message}") from None
