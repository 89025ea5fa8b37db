"""The persistent gallery: embeddings and crop metadata in Milvus, the crops on disk.

``Gallery.open("gallery.db")`` uses **Milvus Lite** (embedded: the database lives in that path,
nothing to start; one process at a time, enforced with a folder lock that names the gallery);
``Gallery.open("http://host:19530")`` talks to a Milvus standalone or distributed server with
the same code. pymilvus is imported only here, when a gallery is opened.

One collection (default ``abdnet_gallery``), one row per crop:

============  ============  ==========================================================
field         type          meaning
============  ============  ==========================================================
id            VARCHAR(16)   first 16 hex digits of the sha256 of the crop's bytes
embedding     FLOAT_VECTOR  L2-normalized embedding (searched by the space's Milvus metric)
camera        INT64         camera number from 1 (c1 in Market names), -1 when unknown
timestamp     INT64         capture time, ms since 1970-01-01 UTC; -2**62 when unknown
frame         INT64         frame number in the crop's video, -1 when unknown
label         VARCHAR(256)  optional label (track, person name); "" when none
sha256        VARCHAR(64)   sha256 of the crop's bytes
extension     VARCHAR(8)    the crop's image type ("jpg", "png", ...)
source        VARCHAR(512)  file or upload name the crop came from
enrolled      INT64         when it was added, ms since 1970-01-01 UTC
============  ============  ==========================================================

The id is derived from the content, so enrolment is idempotent: adding a crop already in the
gallery changes nothing (and writers that race on one crop write the same row). The
collection's properties and its schema description (Milvus versions keep one or the other)
record the model (:class:`ModelInfo`) whose embeddings it holds; opening it with another
model raises :class:`ModelMismatchError`.

Ranking: the model's embedding space (:attr:`ModelInfo.space`, an
:class:`abdnet.engine.EmbeddingSpace`) says how Milvus searches (``milvus_metric``: inner
product of unit vectors) and turns what Milvus returns into the space's distance (squared
Euclidean ``2 - 2 cos``, as ``abdnet search`` and thresholds) and the cosine score; each hit
carries both. A gallery holds unit vectors only (a raw-embedding space has no score).

Consistency: every read (search, count, get, list) asks Milvus for **Strong** consistency:
it sees every write any client had acknowledged before the read began, so replicas of
``abdnet serve`` sharing one server find an entry enrolled through another at once, and a
count taken right after ``add`` includes the new rows. The cost: a read waits until the
server's query nodes have consumed the log up to the read's timestamp: up to one time tick
(``proxy.timeTickInterval``, 200 ms by default in Milvus 2.3; measured in
docs/service.md). Milvus Lite has one process and no log lag: the level changes nothing there.
New collections are created with Strong as their default too.

Durability: crops are written (and synced) before their rows; a row is acknowledged once
Milvus has accepted it (Milvus Lite: appended to its write-ahead log, which survives the
process being killed; a Milvus server: persisted to its log broker). A crop whose row never
made it is unreferenced and harmless; it is reused when the crop is enrolled again.

One concept in one file (over 450 lines): the persistent gallery over one Milvus collection.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from abdnet.engine import EmbeddingSpace
from abdnet.files import FileLockedError, FolderLock
from abdnet.gallery.model import ModelInfo
from abdnet.gallery.records import (
    FIRST_CAMERA,
    ID_LENGTH,
    LABEL_MAX,
    NO_CAMERA,
    NO_FRAME,
    NO_TIME,
    SOURCE_MAX,
    Added,
    Enrolment,
    GalleryEntry,
    Hit,
    Page,
    SearchFilter,
    format_time,
    quote,
    to_ms,
)
from abdnet.gallery.store import CropStore, UrlCropStore, open_crop_store

__all__ = [
    "DEFAULT_COLLECTION",
    "INDEX_TYPES",
    "MAX_RESULTS",
    "Gallery",
    "GalleryError",
    "default_crop_folder",
    "is_embedded",
]

log = logging.getLogger(__name__)

DEFAULT_COLLECTION = "abdnet_gallery"
GALLERY_FORMAT = "abdnet-gallery"
# 2: cameras from 1 and a frame field (1: cameras from 0, frame numbers stored as times)
_VERSION = 2
_META_KEY = "abdnet.gallery"
# Milvus refuses top-k (and offset + limit) above 16384.
MAX_RESULTS = 16384
# Vector index, chosen when the gallery is created: exact search, or HNSW graph search
# (approximate; for galleries of millions on a Milvus server).
INDEX_TYPES = {"flat": ("FLAT", {}), "hnsw": ("HNSW", {"M": 16, "efConstruction": 200})}
_FIELDS = ["camera", "timestamp", "frame", "label", "sha256", "extension", "source", "enrolled"]
# Milvus Lite 3 keeps new rows in an in-memory table that every search and query scans row
# by row in Python (0.05-0.1 ms per row), until it seals them into a segment at 128 MiB. An
# embedded gallery seals them itself every this many rows (a seal costs ~0.1 s).
SEAL_ROWS = 256
# Read-your-own-and-everyone's-writes (see the module docs).
CONSISTENCY = "Strong"
CONNECT_TIMEOUT = 15.0  # seconds to reach a Milvus server before giving up


class GalleryError(ValueError):
    """A gallery cannot be opened or used as asked; the message names the gallery."""


# ---------------------------------------------------------------------------------------
# the gallery


def is_embedded(uri: str | Path) -> bool:
    """True for a Milvus Lite path (``*.db``), False for a server URI."""
    s = str(uri)
    return "://" not in s


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
        where = f"gallery {uri_s}"
        if index not in INDEX_TYPES:
            raise GalleryError(f"index {index!r}: expected one of {', '.join(INDEX_TYPES)}")
        crop_root = crops if crops is not None else default_crop_folder(uri_s)
        try:  # before Milvus is touched: a bad URL creates nothing
            store = open_crop_store(crop_root) if crop_root is not None else None
        except ValueError as exc:
            raise GalleryError(f"--crops: {exc}") from None
        lock = None
        if is_embedded(uri_s):
            path = Path(uri_s)
            if path.suffix != ".db":
                raise GalleryError(
                    f"--gallery {uri_s}: expected a Milvus Lite path ending in .db or a server "
                    f"URI such as http://localhost:19530"
                )
            if not path.exists() and not create:
                raise GalleryError(f"{where}: not found ('abdnet gallery add' creates one)")
            if not path.parent.is_dir():
                raise GalleryError(f"{where}: folder {path.parent} does not exist")
            try:
                lock = FolderLock(path, what=where).acquire()
            except FileLockedError as exc:
                raise GalleryError(
                    f"{exc} (Milvus Lite serves one process at a time: while 'abdnet serve' "
                    f"runs, use its HTTP API)"
                ) from None
        try:
            client = _connect(uri_s, timeout)
        except Exception:
            if lock is not None:
                lock.release()
            raise
        from pymilvus.exceptions import MilvusException  # heavy, optional dependency

        try:
            try:
                meta = _open_collection(client, collection, where, model, create, index, timeout)
                client.load_collection(collection, timeout=timeout)
            except MilvusException as exc:
                raise GalleryError(f"{where}: {exc}") from None
        except BaseException:
            _disconnect(client, uri_s)
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
        _disconnect(self._client, self.uri)
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
            filter=_list_filter(camera, label),
            output_fields=["count(*)"],
            consistency_level=CONSISTENCY,
        )
        return int(rows[0]["count(*)"]) if rows else 0

    def get(self, ids: Sequence[str]) -> list[GalleryEntry]:
        """The entries of ``ids`` that exist, in the order given."""
        ids = [i for i in ids if _valid_id(i)]
        if not ids:
            return []
        rows = self._call(
            "get",
            self._client.query,
            self.collection,
            filter=f"id in [{', '.join(quote(i) for i in ids)}]",
            output_fields=["id", *_FIELDS],
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
            filter=_list_filter(camera, label),
            output_fields=["id", *_FIELDS],
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

        ``filters[i]`` restricts query ``i``. Queries with the same filter are searched in
        one Milvus call (each Milvus Lite call scans the collection once, whatever the number
        of queries). Queries whose filters differ only in the camera they leave out share one
        call too: it returns the ``2k + 16`` nearest entries, each query's own camera is
        dropped from them, and a query left with fewer than ``k`` (its camera crowded the
        list) is searched again with its camera in the filter. The results are those of
        filtering in Milvus.
        """
        q = self._check_features(features)
        if not 1 <= k <= MAX_RESULTS:
            raise ValueError(f"k must be in 1..{MAX_RESULTS}, got {k}")
        filters = list(filters) if filters is not None else [SearchFilter()] * len(q)
        if len(filters) != len(q):
            raise ValueError(f"{len(filters)} filters for {len(q)} queries")
        groups: dict[str, list[int]] = {}
        for i, f in enumerate(filters):
            shared = dataclasses.replace(f, exclude_camera=None).expression()
            groups.setdefault(shared, []).append(i)
        out: list[list[Hit]] = [[] for _ in range(len(q))]
        for expr, rows in groups.items():
            if len({filters[i].exclude_camera for i in rows}) == 1:  # one filter: in Milvus
                for i, hits in zip(rows, self._search(q[rows], k, filters[rows[0]].expression())):
                    out[i] = hits
                continue
            limit = min(MAX_RESULTS, 2 * k + 16)
            for i, hits in zip(rows, self._search(q[rows], limit, expr)):
                cam = filters[i].exclude_camera
                kept = [h for h in hits if cam is None or h.entry.camera != cam]
                if len(kept) < k and len(hits) == limit:
                    (kept,) = self._search(q[i : i + 1], k, filters[i].expression())
                out[i] = kept[:k]
        return out

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
            output_fields=_FIELDS,
            search_params=params,
            consistency_level=CONSISTENCY,
        )
        return [[_hit(h, space) for h in hits] for hits in result]

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
        out["server_version"] = self._server_version()
        if self.crops is not None:
            st = self.crops.stats()
            out["crop_files"], out["crop_bytes"] = st.files, st.bytes
        return out

    def _server_version(self) -> str | None:
        """The server's version; None where it is not implemented (Milvus Lite's server mode
        answers UNIMPLEMENTED, which pymilvus would log as an error: informative only)."""
        quiet = _DropAll()
        logger = logging.getLogger("pymilvus.decorators")
        logger.addFilter(quiet)
        try:
            return str(self._client.get_server_version(timeout=self._timeout))
        except Exception as exc:
            log.debug("gallery %s: no server version: %s", self.uri, exc)
            return None
        finally:
            logger.removeFilter(quiet)

    # -- writing -------------------------------------------------------------------------

    def add(self, enrolments: Sequence[Enrolment], features: np.ndarray) -> list[Added]:
        """Enrol crops with their embeddings ``(N, D)``; crops already enrolled are skipped.

        Durable when this returns: the crops are synced to disk, then the rows are written.
        """
        feats = self._check_features(features)
        if len(enrolments) != len(feats):
            raise ValueError(f"{len(enrolments)} crops but {len(feats)} embeddings")
        for e in enrolments:
            _check_enrolment(e)
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
                rows.append(_row(i, e, f, now))
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
            output_fields=["id", "embedding", *_FIELDS],
            consistency_level=CONSISTENCY,
        )
        try:
            while batch := it.next():
                yield [dict(r) for r in batch]
        finally:
            it.close()

    def get_rows(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """The rows of ``ids`` that exist, embedding included, in no particular order."""
        ids = [i for i in ids if _valid_id(i)]
        if not ids:
            return []
        return self._call(
            "get",
            self._client.query,
            self.collection,
            filter=f"id in [{', '.join(quote(i) for i in ids)}]",
            output_fields=["id", "embedding", *_FIELDS],
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
        if hasattr(features, "detach"):
            features = features.detach().cpu().numpy()
        q = np.asarray(features, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.model.dim:
            raise ValueError(
                f"gallery {self.uri} holds {self.model.dim}-d embeddings, got shape {q.shape}"
            )
        if not np.isfinite(q).all():
            raise ValueError("embeddings contain NaN or infinity")
        return q

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._client is None:
            raise GalleryError(f"gallery {self.uri} is closed")
        from pymilvus.exceptions import MilvusException  # heavy, optional dependency

        try:
            return fn(*args, timeout=self._timeout, **kwargs)
        except MilvusException as exc:
            raise GalleryError(f"gallery {self.uri}: {what} failed: {exc}") from None


def _valid_id(i: str) -> bool:
    return len(i) == ID_LENGTH and all(c in "0123456789abcdef" for c in i)


def _list_filter(camera: int | None, label: str | None) -> str:
    parts = []
    if camera is not None:
        parts.append(f"camera == {int(camera)}")
    if label is not None:
        parts.append(f"label == {quote(label)}")
    return " and ".join(parts)


def _check_enrolment(e: Enrolment) -> None:
    if e.label is not None and len(e.label.encode()) > LABEL_MAX:
        raise ValueError(f"{e.crop.name}: label longer than {LABEL_MAX} bytes")
    if e.camera is not None and e.camera < FIRST_CAMERA:
        raise ValueError(
            f"{e.crop.name}: camera must be >= {FIRST_CAMERA} (cameras are numbered from "
            f"{FIRST_CAMERA}, as c1 in Market-1501 names), got {e.camera}"
        )
    if e.frame is not None and e.frame < 0:
        raise ValueError(f"{e.crop.name}: frame must be >= 0, got {e.frame}")


def _row(i: str, e: Enrolment, f: np.ndarray, now: int) -> dict[str, Any]:
    source = e.crop.name
    if len(source.encode()) > SOURCE_MAX:  # keep the end: the file name
        source = source.encode()[-SOURCE_MAX:].decode(errors="ignore")
    return {
        "id": i,
        "embedding": f.tolist(),
        "camera": NO_CAMERA if e.camera is None else int(e.camera),
        "timestamp": NO_TIME if e.timestamp is None else to_ms(e.timestamp),
        "frame": NO_FRAME if e.frame is None else int(e.frame),
        "label": e.label or "",
        "sha256": e.crop.sha256,
        "extension": e.crop.extension,
        "source": source,
        "enrolled": now,
    }


def _hit(h: Any, space: EmbeddingSpace) -> Hit:
    entity = dict(h["entity"])
    entity["id"] = h["id"]
    value = float(h["distance"])  # what Milvus computed in the space's metric
    return Hit(
        entry=GalleryEntry.from_row(entity),
        distance=float(space.distance_from_search(value, space.milvus_metric)),
        score=float(space.score_from_search(value, space.milvus_metric)),
    )


def _connect(uri: str, timeout: float) -> Any:
    from pymilvus import MilvusClient  # heavy, optional dependency
    from pymilvus.exceptions import MilvusException

    # An unreachable server is reported after CONNECT_TIMEOUT, not the whole request timeout;
    # pymilvus logs a failed connection as an error of its own, the GalleryError says it once.
    timeout = min(timeout, CONNECT_TIMEOUT)
    quiet, logger = _DropAll(), logging.getLogger("pymilvus.milvus_client._utils")
    logger.addFilter(quiet)
    try:
        if is_embedded(uri):
            return MilvusClient(uri=str(Path(uri).absolute()), timeout=timeout)
        return MilvusClient(uri=uri, timeout=timeout)
    except MilvusException as exc:
        message = getattr(exc, "message", None) or str(exc)
        raise GalleryError(
            f"gallery {uri}: cannot connect to Milvus within {timeout:g} s: {message}"
        ) from None
    finally:
        logger.removeFilter(quiet)


def _disconnect(client: Any, uri: str) -> None:
    try:
        client.close()
    except Exception as exc:  # closing must not mask the caller's error
        log.debug("closing Milvus client of %s: %s", uri, exc)
    if is_embedded(uri):
        # Stop the embedded Milvus Lite server so that another process may open the file.
        try:
            from milvus_lite.server_manager import server_manager_instance
        except ImportError:  # pragma: no cover - milvus-lite missing means no local gallery
            return
        server_manager_instance.release_server(str(Path(uri).absolute()))


class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


class _DropUnimplemented(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Method not implemented" not in record.getMessage() and not (
            record.exc_info and isinstance(record.exc_info[1], NotImplementedError)
        )


@contextlib.contextmanager
def _quiet_grpc_server() -> Iterator[None]:
    """While a collection is created, pymilvus asks the server for a timestamp that Milvus
    Lite does not implement (pymilvus copes); an embedded server would log it as an error."""
    logger = logging.getLogger("grpc._server")
    f = _DropUnimplemented()
    logger.addFilter(f)
    try:
        yield
    finally:
        logger.removeFilter(f)


def _schema(client: Any, dim: int, description: str) -> Any:
    from pymilvus import DataType  # heavy, optional dependency

    schema = client.create_schema(
        auto_id=False, enable_dynamic_field=False, description=description
    )
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_LENGTH)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("camera", DataType.INT64)
    schema.add_field("timestamp", DataType.INT64)
    schema.add_field("frame", DataType.INT64)
    schema.add_field("label", DataType.VARCHAR, max_length=LABEL_MAX)
    schema.add_field("sha256", DataType.VARCHAR, max_length=64)
    schema.add_field("extension", DataType.VARCHAR, max_length=8)
    schema.add_field("source", DataType.VARCHAR, max_length=SOURCE_MAX)
    schema.add_field("enrolled", DataType.INT64)
    return schema


def _open_collection(
    client: Any,
    name: str,
    where: str,
    model: ModelInfo | None,
    create: bool,
    index: str,
    timeout: float,
) -> dict[str, Any]:
    """The collection's metadata, creating the collection when asked and absent."""
    if not client.has_collection(name, timeout=timeout):
        if not create:
            raise GalleryError(
                f"{where}: has no collection {name!r} ('abdnet gallery add' creates it)"
            )
        if model is None:
            raise GalleryError(f"{where}: a model is needed to create a gallery")
        if not model.space.has_score:
            raise GalleryError(
                f"{where}: a gallery holds unit vectors, not {model.space.rule}: embed with "
                f"normalization on (the FeatureExtractor default)"
            )
        meta = {
            "format": GALLERY_FORMAT,
            "version": _VERSION,
            "created": format_time(datetime.now(timezone.utc)),
            "index": index,
            "model": model.to_dict(),
        }
        text = json.dumps(meta, sort_keys=True)
        index_type, build = INDEX_TYPES[index]
        params = client.prepare_index_params()
        params.add_index(
            field_name="embedding",
            index_type=index_type,
            metric_type=model.space.milvus_metric,
            params=build,
        )
        with _quiet_grpc_server():
            client.create_collection(
                name,
                schema=_schema(client, model.dim, text),
                index_params=params,
                description=text,
                properties={_META_KEY: text},
                consistency_level=CONSISTENCY,
                timeout=timeout,
            )
        log.info("created %s (collection %s, %d-d, %s index)", where, name, model.dim, index)
        return meta
    desc = client.describe_collection(name, timeout=timeout)
    text = (desc.get("properties") or {}).get(_META_KEY) or desc.get("description") or ""
    try:
        meta = json.loads(text)
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != GALLERY_FORMAT:
        raise GalleryError(f"{where}: collection {name!r} is not an abdnet gallery")
    version = int(meta.get("version", 0))
    if version > _VERSION:
        raise GalleryError(f"{where}: gallery format {version} is newer than supported")
    if version < _VERSION:
        raise GalleryError(
            f"{where}: gallery format {version} (cameras numbered from 0, frame numbers "
            f"stored as times in 1970) is not read by this abdnet (format {_VERSION}); enrol the "
            f"crops again into a new gallery ('abdnet gallery add --gallery NEW.db ...')"
        )
    if model is not None:
        ModelInfo.from_dict(meta["model"]).check_same(model, where)
    return meta
