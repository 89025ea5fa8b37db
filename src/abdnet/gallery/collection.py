"""The Milvus collection behind a gallery: connection, schema, metadata, consistency.

pymilvus is imported only here and in :mod:`abdnet.gallery.gallery`, when a gallery is opened.

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

The collection's properties and its schema description (Milvus versions keep one or the
other) record the gallery format and the model (:class:`ModelInfo`) whose embeddings it
holds; opening it with another model raises :class:`ModelMismatchError`.

Consistency: every read (search, count, get, list) asks Milvus for **Strong** consistency
(:data:`CONSISTENCY`): it sees every write any client had acknowledged before the read began,
so replicas of ``abdnet serve`` sharing one server find an entry enrolled through another at
once, and a count taken right after ``add`` includes the new rows. The cost: a read waits
until the server's query nodes have consumed the log up to the read's timestamp: up to one
time tick (``proxy.timeTickInterval``, 200 ms by default in Milvus 2.3; measured in
docs/service.md). Milvus Lite has one process and no log lag: the level changes nothing there.
New collections are created with Strong as their default too.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from abdnet.files import FileLockedError, FolderLock
from abdnet.gallery.model import ModelInfo
from abdnet.gallery.records import ID_LENGTH, LABEL_MAX, SOURCE_MAX, format_time

__all__ = [
    "CONSISTENCY",
    "DEFAULT_COLLECTION",
    "FIELDS",
    "INDEX_TYPES",
    "MAX_RESULTS",
    "GalleryError",
    "connect",
    "disconnect",
    "is_embedded",
    "lock_embedded",
    "open_collection",
    "open_milvus",
    "server_version",
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
# The scalar fields of a row, read back as a GalleryEntry (id and embedding apart).
FIELDS = ["camera", "timestamp", "frame", "label", "sha256", "extension", "source", "enrolled"]
# Read-your-own-and-everyone's-writes (see the module docs).
CONSISTENCY = "Strong"
CONNECT_TIMEOUT = 15.0  # seconds to reach a Milvus server before giving up


class GalleryError(ValueError):
    """A gallery cannot be opened or used as asked; the message names the gallery."""


def is_embedded(uri: str | Path) -> bool:
    """True for a Milvus Lite path (``*.db``), False for a server URI."""
    s = str(uri)
    return "://" not in s


def lock_embedded(uri: str, *, create: bool) -> FolderLock | None:
    """For a Milvus Lite path: check it and hold its folder lock (one process at a time);
    None for a server URI."""
    if not is_embedded(uri):
        return None
    where = f"gallery {uri}"
    path = Path(uri)
    if path.suffix != ".db":
        raise GalleryError(
            f"--gallery {uri}: expected a Milvus Lite path ending in .db or a server "
            f"URI such as http://localhost:19530"
        )
    if not path.exists() and not create:
        raise GalleryError(f"{where}: not found ('abdnet gallery add' creates one)")
    if not path.parent.is_dir():
        raise GalleryError(f"{where}: folder {path.parent} does not exist")
    try:
        return FolderLock(path, what=where).acquire()
    except FileLockedError as exc:
        raise GalleryError(
            f"{exc} (Milvus Lite serves one process at a time: while 'abdnet serve' "
            f"runs, use its HTTP API)"
        ) from None


def open_milvus(
    uri: str,
    collection: str,
    model: ModelInfo | None,
    create: bool,
    index: str,
    timeout: float,
) -> tuple[Any, dict[str, Any]]:
    """A client of ``uri`` with ``collection`` opened (see :func:`open_collection`) and
    loaded, and the collection's metadata; the client is closed again when this fails."""
    where = f"gallery {uri}"
    client = connect(uri, timeout)
    from pymilvus.exceptions import MilvusException  # heavy, optional dependency

    try:
        try:
            meta = open_collection(client, collection, where, model, create, index, timeout)
            client.load_collection(collection, timeout=timeout)
        except MilvusException as exc:
            raise GalleryError(f"{where}: {exc}") from None
    except BaseException:
        disconnect(client, uri)
        raise
    return client, meta


def connect(uri: str, timeout: float) -> Any:
    """A ``MilvusClient`` for ``uri``; :class:`GalleryError` when it cannot be reached."""
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


def disconnect(client: Any, uri: str) -> None:
    """Close ``client``; for Milvus Lite also stop its embedded server (frees the file)."""
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


def server_version(client: Any, uri: str, timeout: float) -> str | None:
    """The server's version; None where it is not implemented (Milvus Lite's server mode
    answers UNIMPLEMENTED, which pymilvus would log as an error: informative only)."""
    quiet = _DropAll()
    logger = logging.getLogger("pymilvus.decorators")
    logger.addFilter(quiet)
    try:
        return str(client.get_server_version(timeout=timeout))
    except Exception as exc:
        log.debug("gallery %s: no server version: %s", uri, exc)
        return None
    finally:
        logger.removeFilter(quiet)


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


def open_collection(
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
