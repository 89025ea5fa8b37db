"""The crop store: enrolled images addressed by the sha256 of their bytes, in a local folder
(:class:`CropStore`) or at any fsspec URL (:class:`UrlCropStore`, see
:func:`open_crop_store`), so that replicas on several machines share one store.

``ROOT/ab/abcdef...0123.jpg``: the first two hex digits name a sub-folder (no folder grows
to hundreds of thousands of entries). Files are written with ``abdnet.files.atomic_write_many``
(temporary name, sync, rename, sync), so a path exists only once its file is complete and
durable: a reader never sees half a crop. The same bytes always land on the same path, so
concurrent writers of one crop cannot conflict. :meth:`CropStore.read` checks the bytes
against their sha256 (:class:`CropIntegrityError` when they differ).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from abdnet.files import atomic_write_many, fsync_path
from abdnet.gallery.images import MIME_TYPES

__all__ = ["CropIntegrityError", "CropStore", "StoreStats", "UrlCropStore", "open_crop_store"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreStats:
    files: int
    bytes: int


class CropIntegrityError(ValueError):
    """A stored crop's bytes do not match the sha256 that names it."""


def _verified(data: bytes, sha256: str, where: str) -> bytes:
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise CropIntegrityError(f"crop store: {where} holds bytes with sha256 {got}, not {sha256}")
    return data


def _check_sha(sha256: str) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return sha256


class CropStore:
    """Content-addressed crop files under ``root`` (created on first write)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str, extension: str) -> Path:
        if extension not in MIME_TYPES:
            raise ValueError(f"crop extension {extension!r}: expected one of {sorted(MIME_TYPES)}")
        sha256 = _check_sha(sha256)
        return self.root / sha256[:2] / f"{sha256}.{extension}"

    def put_many(self, crops: Sequence[tuple[str, str, bytes]]) -> list[Path]:
        """Store ``(sha256, extension, data)`` crops; durable when this returns."""
        todo: list[tuple[Path, bytes]] = []
        seen: set[Path] = set()
        for sha256, extension, data in crops:
            path = self.path(sha256, extension)
            if path in seen or path.is_file():
                continue  # content-addressed: an existing file already holds these bytes
            seen.add(path)
            todo.append((path, data))
        for folder in sorted({p.parent for p, _ in todo}):
            # made durable by the file-system syncs of atomic_write_many
            folder.mkdir(parents=True, exist_ok=True)
        return atomic_write_many(todo)

    def get(self, sha256: str, extension: str) -> Path | None:
        """The crop's file, or None when it is not stored."""
        path = self.path(sha256, extension)
        return path if path.is_file() else None

    def read(self, sha256: str, extension: str) -> bytes | None:
        """The crop's bytes, checked against ``sha256``; None when it is not stored."""
        path = self.path(sha256, extension)
        try:
            return _verified(path.read_bytes(), sha256, str(path))
        except FileNotFoundError:
            return None

    def delete(self, sha256: str, extension: str) -> bool:
        """Remove a crop; True if a file was removed. The removal is made durable."""
        path = self.path(sha256, extension)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        fsync_path(path.parent)
        return True

    def stats(self) -> StoreStats:
        files = size = 0
        if self.root.is_dir():
            for entry in os.scandir(self.root):
                if entry.is_dir() and len(entry.name) == 2:
                    for f in os.scandir(entry.path):
                        if f.is_file() and not f.name.startswith("."):
                            files += 1
                            size += f.stat().st_size
        return StoreStats(files=files, bytes=size)


class UrlCropStore:
    """Content-addressed crops under an fsspec URL (``s3://bucket/prefix``, ``gs://...``,
    ``file:///srv/crops``, any protocol whose fsspec package is installed).

    Same layout as :class:`CropStore`. A crop is written under a temporary name in its folder
    and then moved to its final name, so no reader sees part of one (an object store's PUT is
    atomic anyway); :meth:`read` checks the bytes against their sha256.
    """

    def __init__(self, url: str) -> None:
        import fsspec  # a dependency of torch and huggingface_hub

        self.url = url
        try:
            self.fs, base = fsspec.core.url_to_fs(url)
        except (ValueError, ImportError) as exc:  # unknown protocol, or its package missing
            raise ValueError(f"crop store {url}: {exc}") from None
        self.base = base.rstrip("/")
        self.root = url

    def path(self, sha256: str, extension: str) -> str:
        if extension not in MIME_TYPES:
            raise ValueError(f"crop extension {extension!r}: expected one of {sorted(MIME_TYPES)}")
        sha256 = _check_sha(sha256)
        return f"{self.base}/{sha256[:2]}/{sha256}.{extension}"

    def put_many(self, crops: Sequence[tuple[str, str, bytes]]) -> list[str]:
        """Store ``(sha256, extension, data)`` crops; stored when this returns."""
        written: list[str] = []
        for sha256, extension, data in crops:
            key = self.path(sha256, extension)
            if key in written or self.fs.exists(key):
                continue  # content-addressed: the stored object already holds these bytes
            folder, name = key.rsplit("/", 1)
            self.fs.makedirs(folder, exist_ok=True)
            part = f"{folder}/.{name}.part-{uuid.uuid4().hex[:12]}"
            try:
                self.fs.pipe_file(part, data)
                self.fs.mv(part, key)
            except BaseException:
                with contextlib.suppress(Exception):
                    self.fs.rm_file(part)
                raise
            written.append(key)
        return written

    def get(self, sha256: str, extension: str) -> Path | None:
        """A local path only for the ``file`` protocol; None otherwise (use :meth:`read`)."""
        key = self.path(sha256, extension)
        if "file" in _protocols(self.fs) and self.fs.exists(key):
            return Path(key)
        return None

    def read(self, sha256: str, extension: str) -> bytes | None:
        key = self.path(sha256, extension)
        try:
            data = self.fs.cat_file(key)
        except FileNotFoundError:
            return None
        return _verified(data, sha256, f"{self.url} ({key})")

    def delete(self, sha256: str, extension: str) -> bool:
        """Remove a crop; True if one was stored. (An object store's DELETE of a missing key
        succeeds, so the key is looked up first.)"""
        key = self.path(sha256, extension)
        if not self.fs.exists(key):
            return False
        try:
            self.fs.rm_file(key)
        except FileNotFoundError:
            return False
        return True

    def stats(self) -> StoreStats:
        files = size = 0
        try:
            found = self.fs.find(self.base, detail=True)
        except FileNotFoundError:
            return StoreStats(0, 0)
        for key, info in found.items():
            folder, name = key.rsplit("/", 1)
            if len(folder.rsplit("/", 1)[-1]) == 2 and not name.startswith("."):
                files += 1
                size += int(info.get("size") or 0)
        return StoreStats(files=files, bytes=size)


def _protocols(fs: object) -> tuple[str, ...]:
    p = getattr(fs, "protocol", ())
    return (p,) if isinstance(p, str) else tuple(p)


def open_crop_store(where: str | Path) -> CropStore | UrlCropStore:
    """A local folder (a path, today's default) or, for ``PROTOCOL://...``, an fsspec store."""
    s = str(where)
    if "://" in s:
        return UrlCropStore(s)
    return CropStore(where)
