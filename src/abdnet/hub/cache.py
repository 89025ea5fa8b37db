"""The URL download cache: ``https://`` / ``http://`` weights specs, downloaded with pooch,
verified by SHA-256 and kept under ``$ABDNET_CACHE``.

``$ABDNET_CACHE`` (default ``~/.cache/abdnet``) holds ``downloads/<entry>/<file>``, one entry
per URL and pin: ``<entry>`` is a hash of the URL, followed by the first 16 hex digits of the
pin for a pinned URL; ``<file>`` keeps the URL's last path segment, whose suffix tells the
loader the format (``.safetensors``, ``.pth.tar``). Beside each file, ``<file>.json`` records
the URL, the file's SHA-256 and size, the server's ``ETag`` / ``Last-Modified`` and when it was
downloaded.

- Downloads are ``pooch.retrieve`` calls (requests underneath, streamed, with a timeout and
  a progress bar), made into the entry's ``.incoming`` folder: pooch writes a temporary file
  there and renames it to the file's name only after the whole body arrived (urllib3 checks
  it against ``Content-Length``) and, for a pinned URL, its SHA-256 matched; the finished
  file is then renamed into the entry. A wrong hash raises :class:`ChecksumError` naming the
  URL, the expected and the actual hash, and nothing is cached. An interrupted download
  (connection lost, process killed) leaves no file under the final name; leftovers of killed
  downloads are removed by the next download of the entry. (A server that sends no
  ``Content-Length`` and closes the connection early cannot be told from a complete
  transfer: pin such URLs.)
- One process at a time works on an entry (``files.FolderLock``); a second process asking for
  the same URL waits, then finds the finished file.
- **Pinned URLs** are immutable: a cached file whose SHA-256 equals the pin is used without
  contacting the server (it is re-hashed on every use, so a corrupted cache file is noticed
  and downloaded again).
- **Unpinned URLs** mean "whatever the server serves now": each use revalidates the cached
  copy with a conditional request (the pooch download sends ``If-None-Match`` /
  ``If-Modified-Since`` from the record; a ``304 Not Modified`` answer stops it before
  anything is written) and keeps the cached file, a new body replaces it (atomically; the new SHA-256 is
  logged so that it can be pinned). The cached file is checked against the SHA-256 recorded
  when it was downloaded before it is trusted.
- Offline (``ABDNET_OFFLINE=1`` or the ``offline`` argument): the server is never contacted; a
  cached file is used and a missing one is an error. When the network or the server fails (no
  connection, timeout, an HTTP error, a dropped connection), a cached file is used with a
  warning; without one the error names the URL and the failure.

``pooch`` is imported when a URL is downloaded.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import email.utils
import hashlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abdnet.files import FolderLock, atomic_write
from abdnet.hub.settings import OFFLINE_ENV, cache_root, client_version, is_offline
from abdnet.hub.sources import SourceError, UrlSource, parse_source

__all__ = ["ChecksumError", "download_url", "sha256_file"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_TIMEOUT_S = 60.0  # per socket operation (connect, each read): a stalled server fails


class ChecksumError(SourceError):
    """A download's SHA-256 differs from its pin; nothing was cached."""

    def __init__(self, url: str, expected: str, actual: str) -> None:
        super().__init__(
            f"{url}: SHA-256 mismatch: expected {expected}, got {actual}; the download was "
            "discarded (nothing cached). Check the URL and the #sha256= pin."
        )
        self.url, self.expected, self.actual = url, expected, actual


class _FetchError(Exception):
    """The server could not be reached or the transfer failed (network / HTTP / truncation)."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Lower-case hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class _Entry:
    """One cache entry: the folder, the cached file and its JSON record."""

    folder: Path
    file: Path
    record_file: Path

    @classmethod
    def of(cls, source: UrlSource, root: Path) -> _Entry:
        name = hashlib.sha256(source.url.encode("utf-8")).hexdigest()[:24]
        if source.sha256:
            name += "-" + source.sha256[:16]
        folder = root / "downloads" / name
        return cls(folder, folder / source.filename, folder / f"{source.filename}.json")

    @property
    def staging(self) -> Path:
        """Where pooch downloads to; the finished file is renamed from there to ``file``."""
        return self.folder / ".incoming"

    def record(self) -> dict[str, object]:
        try:
            record = json.loads(self.record_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def verified(self, expected: str | None) -> bool:
        """Whether the cached file exists and hashes to ``expected`` (or to its record)."""
        if not self.file.is_file():
            return False
        expected = expected or str(self.record().get("sha256") or "")
        if not expected:
            return False
        actual = sha256_file(self.file)
        if actual == expected:
            return True
        log.warning(
            "cached %s has SHA-256 %s, expected %s: discarding it", self.file, actual, expected
        )
        self.file.unlink(missing_ok=True)
        self.record_file.unlink(missing_ok=True)
        return False


def download_url(
    source: UrlSource | str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    progress: bool | None = None,
) -> Path:
    """The cached, verified copy of a URL (see the module docstring); returns the file."""
    if isinstance(source, str):
        parsed = parse_source(source)
        if not isinstance(parsed, UrlSource):
            raise SourceError(f"{source}: not an http:// or https:// URL")
        source = parsed
    offline = is_offline(offline)
    entry = _Entry.of(source, cache_root(cache_dir))
    with FolderLock(entry.folder, timeout=None, what=f"cache entry of {source.url}"):
        cached = entry.verified(source.sha256)
        if cached and (source.sha256 or offline):
            log.debug("%s: cached at %s", source, entry.file)
            return entry.file
        if offline:
            raise SourceError(
                f"{source}: offline ({OFFLINE_ENV} is set) and not in the cache "
                f"({entry.folder}); run once with network access or unset {OFFLINE_ENV}"
            )
        try:
            record = _fetch(source, entry, entry.record() if cached else {}, progress)
        except _FetchError as exc:
            if cached:
                log.warning(
                    "%s: %s; using the cached copy downloaded %s (%s)",
                    source,
                    exc,
                    entry.record().get("downloaded", "earlier"),
                    entry.file,
                )
                return entry.file
            raise SourceError(f"{source}: download failed and not in the cache: {exc}") from None
        finally:
            _remove_if_empty(entry.folder)
        if record is None:
            log.debug("%s: not modified, cached copy is current", source.url)
        elif not source.sha256:
            log.info(
                "downloaded %s (unpinned); pin it with %s#sha256=%s",
                source.url,
                source.url,
                record["sha256"],
            )
        return entry.file


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()  # only succeeds when nothing was cached


class _NotModified(Exception):
    """The server answered ``304 Not Modified`` to a conditional request."""


class _Download:
    """A pooch downloader: ``pooch.HTTPDownloader`` (requests, streamed, with a timeout and
    a progress bar) sending the cached copy's validators; it stops at ``304 Not Modified``,
    keeps the response headers for the record, and counts and hashes what it writes."""

    def __init__(self, validators: dict[str, object], progress: bool | None) -> None:
        import pooch

        headers = {"User-Agent": f"abdnet/{client_version()} pooch", "Accept-Encoding": "identity"}
        if validators.get("etag"):
            headers["If-None-Match"] = str(validators["etag"])
        if validators.get("last_modified"):
            headers["If-Modified-Since"] = str(validators["last_modified"])
        self.headers: Mapping[str, str] | None = None  # of the 2xx response (case-blind keys)
        self.received = 0
        self.digest = hashlib.sha256()
        self._http = pooch.HTTPDownloader(
            progressbar=sys.stderr.isatty() if progress is None else progress,
            chunk_size=_CHUNK,
            timeout=_TIMEOUT_S,
            headers=headers,
            hooks={"response": self._on_response},
        )

    def _on_response(self, response: Any, *args: object, **kwargs: object) -> None:
        if response.status_code == 304:
            response.close()
            raise _NotModified
        if response.ok:
            self.headers = response.headers

    def __call__(self, url: str, output_file: str, pooch: object) -> None:
        with open(output_file, "wb") as self._out:
            self._http(url, self, pooch)  # pooch writes through write() below

    def write(self, chunk: bytes) -> int:
        self.received += len(chunk)
        self.digest.update(chunk)
        return self._out.write(chunk)

    def flush(self) -> None:
        self._out.flush()


def _fetch(
    source: UrlSource, entry: _Entry, validators: dict[str, object], progress: bool | None
) -> dict[str, object] | None:
    """Download ``source`` into ``entry`` with pooch and record it; None when the server says
    the cached copy is current (it is left as it is)."""
    import pooch
    import requests

    download = _Download(validators, progress)
    known_hash = f"sha256:{source.sha256}" if source.sha256 else None
    shutil.rmtree(entry.staging, ignore_errors=True)  # leftovers of a killed download
    try:
        with _quiet(pooch.get_logger()):
            staged = pooch.retrieve(
                source.url,
                known_hash=known_hash,
                fname=entry.file.name,
                path=entry.staging,
                downloader=download,
            )
        os.replace(staged, entry.file)
    except _NotModified:
        return None
    except ValueError:  # pooch: the SHA-256 differs from the pin; it deleted the download
        if source.sha256 is None:
            raise
        raise ChecksumError(source.url, source.sha256, download.digest.hexdigest()) from None
    except requests.HTTPError as exc:
        response = exc.response
        raise _FetchError(
            f"HTTP {response.status_code} {response.reason}" if response is not None else str(exc)
        ) from None
    except requests.RequestException as exc:
        if download.headers is None:
            reason = exc.args[0] if exc.args else exc
            raise _FetchError(f"cannot reach the server: {reason}") from None
        length = download.headers.get("Content-Length", "")
        raise _FetchError(
            f"connection lost after {download.received} of {length or '?'} bytes "
            f"({type(exc).__name__})"
        ) from None
    finally:
        shutil.rmtree(entry.staging, ignore_errors=True)
    headers = download.headers or {}
    record: dict[str, object] = {
        "url": source.url,
        "sha256": download.digest.hexdigest(),
        "size": download.received,
        "etag": headers.get("ETag"),
        "last_modified": headers.get("Last-Modified"),
        "downloaded": email.utils.format_datetime(_dt.datetime.now(_dt.timezone.utc)),
    }
    atomic_write(entry.record_file, json.dumps(record, indent=2) + "\n")
    return record


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """Hold ``logger`` at WARNING for the block. pooch's logger is its own (not under the
    root logger) and prints its INFO lines to stderr; this module logs the same events in
    abdnet's terms (and names the ``#sha256=`` pin rather than pooch's ``known_hash``)."""
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
