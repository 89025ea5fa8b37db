"""Model weights from anywhere: local paths, verified URL downloads, the Hugging Face Hub.

One concept, a weights spec resolved to a local file (its three kinds of source, the URL
cache's rules); it runs past 450 lines because the rules below are written out in full.

:func:`resolve_source` turns a weights *spec* into a local path:

- ``PATH`` (or ``file://PATH``): returned as given (``~`` expanded); the caller decides whether
  it is a file, a checkpoint folder or a run folder.
- ``https://HOST/PATH`` or ``http://...``, optionally pinned with ``#sha256=HEX`` (pip's
  convention): downloaded into the abdnet cache (below) and returned from there.
- ``hf://OWNER/REPO[/FILE][@REVISION]``: ``huggingface_hub.hf_hub_download`` (its own cache,
  ``HF_HOME`` / ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, branch / tag / commit
  revisions). ``FILE`` defaults to ``model.safetensors``, the file ``abdnet export hf`` writes.

The URL cache
-------------
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

``pooch`` is imported when a URL is downloaded, ``huggingface_hub`` when an ``hf://`` spec
is resolved. This module imports only :mod:`abdnet.files` of abdnet.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import email.utils
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abdnet.files import FolderLock, atomic_write
from abdnet.layout import MODEL_FILE

__all__ = [
    "CACHE_ENV",
    "OFFLINE_ENV",
    "HF_DEFAULT_FILE",
    "ChecksumError",
    "SourceError",
    "UrlSource",
    "HubSource",
    "cache_root",
    "download_url",
    "is_offline",
    "parse_source",
    "resolve_source",
    "sha256_file",
]

log = logging.getLogger(__name__)

CACHE_ENV = "ABDNET_CACHE"
OFFLINE_ENV = "ABDNET_OFFLINE"
HF_DEFAULT_FILE = MODEL_FILE  # what ``abdnet export hf`` writes and hf:// loads
_CHUNK = 1 << 20
_TIMEOUT_S = 60.0  # per socket operation (connect, each read): a stalled server fails
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


class SourceError(ValueError):
    """A weights spec cannot be resolved; the message names the spec and the reason."""


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


@dataclass(frozen=True)
class UrlSource:
    """An ``http(s)://`` spec: the URL (without its fragment) and the optional SHA-256 pin."""

    url: str
    sha256: str | None = None  # lower-case hex; None: unpinned

    @property
    def filename(self) -> str:
        """The URL's last path segment (what the cached file is called)."""
        name = urllib.parse.unquote(urllib.parse.urlsplit(self.url).path.rsplit("/", 1)[-1])
        name = re.sub(r"[^A-Za-z0-9._+-]", "_", name).lstrip(".")
        return name or "download"

    def __str__(self) -> str:
        return self.url + (f"#sha256={self.sha256}" if self.sha256 else "")


@dataclass(frozen=True)
class HubSource:
    """An ``hf://OWNER/REPO[/FILE][@REVISION]`` spec."""

    repo_id: str  # OWNER/REPO
    filename: str = HF_DEFAULT_FILE  # path inside the repository
    revision: str | None = None  # branch, tag or commit; None: the default branch

    def __str__(self) -> str:
        return f"hf://{self.repo_id}/{self.filename}" + (
            f"@{self.revision}" if self.revision else ""
        )


def parse_source(spec: str | os.PathLike[str]) -> Path | UrlSource | HubSource:
    """What a weights spec names: a local path, a URL (with its pin) or a Hub file.

    Raises :class:`SourceError` for an unknown scheme or a malformed pin / Hub name.
    """
    if not isinstance(spec, str):
        return Path(spec).expanduser()
    m = _SCHEME.match(spec)
    if m is None:
        return Path(spec).expanduser()
    scheme = m.group(1).lower()
    if scheme in ("http", "https"):
        return _parse_url(spec)
    if scheme == "hf":
        return _parse_hub(spec)
    if scheme == "file":
        return Path(urllib.request.url2pathname(urllib.parse.urlsplit(spec).path))
    raise SourceError(
        f"{spec}: unsupported scheme {scheme}://; expected a local path, an https:// or http:// "
        "URL (optionally ending in #sha256=HEX) or hf://OWNER/REPO[/FILE][@REVISION]"
    )


def _parse_url(spec: str) -> UrlSource:
    url, _, fragment = spec.partition("#")
    if not urllib.parse.urlsplit(url).netloc:
        raise SourceError(f"{spec}: no host in the URL")
    if not fragment:
        return UrlSource(url)
    name, _, value = fragment.partition("=")
    if name.lower() != "sha256":
        raise SourceError(
            f"{spec}: unsupported URL fragment #{fragment}; the only one understood is "
            "#sha256=<64 hex digits>"
        )
    if not _HEX64.match(value):
        raise SourceError(f"{spec}: the #sha256= pin must be 64 hex digits, got {value!r}")
    return UrlSource(url, value.lower())


def _parse_hub(spec: str) -> HubSource:
    rest = spec[len("hf://") :]
    revision = None
    if "@" in rest:
        rest, revision = rest.rsplit("@", 1)
        if not revision:
            raise SourceError(f"{spec}: empty revision after '@'")
    parts = rest.strip("/").split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise SourceError(f"{spec}: expected hf://OWNER/REPO[/FILE][@REVISION]")
    filename = "/".join(parts[2:]) or HF_DEFAULT_FILE
    return HubSource(f"{parts[0]}/{parts[1]}", filename, revision)


def is_offline(offline: bool | None = None) -> bool:
    """``offline`` if given, else the ``ABDNET_OFFLINE`` environment variable (1/true/yes/on)."""
    if offline is not None:
        return bool(offline)
    value = os.environ.get(OFFLINE_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SourceError(f"{OFFLINE_ENV}={value!r}: expected 1/true/yes/on or 0/false/no/off")


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``cache_dir`` if given, else ``$ABDNET_CACHE``, else ~/.cache/abdnet."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/abdnet").expanduser()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Lower-case hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def resolve_source(
    spec: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    progress: bool | None = None,
) -> Path:
    """The local path a weights spec stands for, downloading (and verifying) it if needed.

    See the module docstring for the forms of ``spec``, the cache and the offline rules.
    ``offline`` / ``cache_dir`` default to ``ABDNET_OFFLINE`` / ``ABDNET_CACHE``;
    ``progress`` shows a download progress bar on stderr (None: only on a terminal).
    Raises :class:`SourceError` (a ``ValueError``) naming the spec when it cannot be resolved.
    """
    source = parse_source(spec)
    if isinstance(source, Path):
        return source
    if isinstance(source, UrlSource):
        return download_url(source, cache_dir=cache_dir, offline=offline, progress=progress)
    return _resolve_hub(source, offline=is_offline(offline))


# ---------------------------------------------------------------------------------------
# URLs


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


def _version() -> str:
    try:
        return importlib.metadata.version("abdnet")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "0"


class _NotModified(Exception):
    """The server answered ``304 Not Modified`` to a conditional request."""


class _Download:
    """A pooch downloader: ``pooch.HTTPDownloader`` (requests, streamed, with a timeout and
    a progress bar) sending the cached copy's validators; it stops at ``304 Not Modified``,
    keeps the response headers for the record, and counts and hashes what it writes."""

    def __init__(self, validators: dict[str, object], progress: bool | None) -> None:
        import pooch

        headers = {"User-Agent": f"abdnet/{_version()} pooch", "Accept-Encoding": "identity"}
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


# ---------------------------------------------------------------------------------------
# Hugging Face Hub


def _resolve_hub(source: HubSource, *, offline: bool) -> Path:
    # huggingface_hub is imported only for hf:// specs: it is not needed otherwise.
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(
            source.repo_id,
            source.filename,
            revision=source.revision,
            local_files_only=offline,
            library_name="abdnet",
            library_version=_version(),
        )
    except hf_errors.LocalEntryNotFoundError:
        why = (
            f"{OFFLINE_ENV} is set"
            if offline
            else "the Hub cannot be reached (no network, or HF_HUB_OFFLINE is set)"
        )
        raise SourceError(
            f"{source}: not in the Hugging Face cache and {why}; run once with network access"
        ) from None
    except hf_errors.GatedRepoError:
        raise SourceError(
            f"{source}: {source.repo_id} is gated: accept its terms on the Hub and log in "
            "(`hf auth login` or HF_TOKEN)"
        ) from None
    except hf_errors.RepositoryNotFoundError:
        raise SourceError(
            f"{source}: repository {source.repo_id} not found (or private: log in with "
            "`hf auth login` or set HF_TOKEN)"
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise SourceError(
            f"{source}: revision {source.revision!r} not found in {source.repo_id}"
        ) from None
    except hf_errors.EntryNotFoundError:
        raise SourceError(
            f"{source}: no file {source.filename!r} in {source.repo_id}"
            + (f" at revision {source.revision}" if source.revision else "")
        ) from None
    except (hf_errors.HfHubHTTPError, OSError) as exc:
        raise SourceError(f"{source}: {exc}") from None
    return Path(path)
