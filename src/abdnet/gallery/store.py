"""The crop store: enrolled images on disk, addressed by the sha256 of their bytes.

``ROOT/ab/abcdef...0123.jpg``: the first two hex digits name a sub-folder (no folder grows
to hundreds of thousands of entries). Files are written with ``abdnet.files.atomic_write_many``
(temporary name, sync, rename, sync), so a path exists only once its file is complete and
durable: a reader never sees half a crop. The same bytes always land on the same path, so
concurrent writers of one crop cannot conflict.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from abdnet.files import atomic_write_many, fsync_path
from abdnet.gallery.images import MIME_TYPES

__all__ = ["CropStore", "StoreStats"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreStats:
    files: int
    bytes: int


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
