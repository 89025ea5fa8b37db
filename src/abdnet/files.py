"""Writing files so that nothing acknowledged is lost and nothing half-written is ever read.

The one place for the mechanisms every writer uses (checkpoints, run folders, indexes,
feature files, exports, the gallery's crop store):

- :func:`atomic_write` / :func:`atomic_file`: a file appears complete or not at all (temporary
  file in the same folder, fsync, rename, fsync of the folder).
- :func:`atomic_directory`: a folder is replaced as a whole. ``target`` is a symbolic link to
  a hidden versioned folder; a new version is written beside it and the link is swapped
  with one rename, so a kill at any moment leaves either the old or the new folder.
- :class:`FolderLock`: one writer per folder at a time, across processes (``filelock``); the
  lock file sits beside the folder so it can be taken before the folder exists.
- :func:`check_output`: refuse to overwrite an existing output unless asked to (``--force``).

This module imports nothing else of abdnet.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import filelock

__all__ = [
    "FileLockedError",
    "OutputExistsError",
    "FolderLock",
    "atomic_directory",
    "atomic_file",
    "atomic_write",
    "check_output",
    "fsync_path",
    "remove_stale_temporaries",
]


class FileLockedError(RuntimeError):
    """Another process holds the lock of a folder; the message names the folder."""


class OutputExistsError(FileExistsError):
    """An output exists and overwriting it was not asked for; the message names it."""


def fsync_path(path: str | Path) -> None:
    """Flush a file's or a folder's entry to disk (a no-op where folders cannot be opened)."""
    path = Path(path)
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except (IsADirectoryError, PermissionError):  # pragma: no cover - non-POSIX platforms
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temporary_name(path: Path) -> Path:
    # Hidden, in the same folder (same file system, so the rename is atomic), and marked so
    # that leftovers of a killed writer are recognisable (remove_stale_temporaries).
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path; on normal exit it is fsync'ed and renamed to ``path``.

    If the body raises, the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    tmp = _temporary_name(path)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` atomically and durably; returns ``path``."""
    path = Path(path)
    with atomic_file(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return path


def remove_stale_temporaries(folder: str | Path, name: str) -> None:
    """Remove temporaries :func:`atomic_file` left for ``folder/name`` when a writer died."""
    for stale in Path(folder).glob(f".{name}.tmp-*"):
        stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield an empty folder; on normal exit ``target`` becomes (a link to) it atomically.

    If the body raises (or the process dies), ``target`` is untouched. A ``target`` that is a
    real folder (e.g. copied without links) is moved aside first; the swap itself is still
    one rename. Earlier versions and leftovers of interrupted writes are removed afterwards.
    """
    target = Path(target)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    tmp = parent / f".{target.name}-{token}"
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.rglob("*"):
            fsync_path(f)
        fsync_path(tmp)
        if target.exists() and not target.is_symlink():
            target.rename(parent / f".{target.name}-old-{token}")
        link = parent / f".{target.name}.link-{token}"
        os.symlink(tmp.name, link)  # relative, so the parent folder can be moved
        os.replace(link, target)
        fsync_path(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    current = os.readlink(target)
    for stale in parent.glob(f".{target.name}-*"):
        if stale.name != current:
            shutil.rmtree(stale, ignore_errors=True)
    for stale in parent.glob(f".{target.name}.link-*"):
        stale.unlink(missing_ok=True)


class FolderLock:
    """Exclusive lock on a folder for one writer at a time, across processes.

    The lock file is ``<parent>/.<name>.lock`` (beside the folder, so a folder that does not
    exist yet can be locked, and replacing the folder does not drop the lock). ``timeout=0``
    fails at once when another process holds it; a positive timeout waits that many seconds
    (``None`` waits forever). Raises :class:`FileLockedError` naming the folder. The lock is
    released when the process dies, so a killed writer never leaves a folder locked.
    """

    def __init__(self, folder: str | Path, *, timeout: float | None = 0.0, what: str = "") -> None:
        self.folder = Path(folder)
        self.what = what or str(self.folder)
        self.timeout = -1 if timeout is None else timeout
        self.path = self.folder.parent / f".{self.folder.name}.lock"
        self._lock: filelock.BaseFileLock | None = None

    def acquire(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(self.path), timeout=self.timeout)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise FileLockedError(
                f"{self.what}: in use by another abdnet process (lock {self.path}); wait for it "
                "to finish or use another folder"
            ) from None
        self._lock = lock
        return self

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def check_output(
    path: str | Path, *, force: bool, option: str = "--out", kind: str = "file"
) -> Path:
    """``path`` if it may be written: it must not exist unless ``force`` (then it is replaced
    by the writer); its folder must exist or be creatable and be writable. ``kind`` is
    ``"file"`` or ``"folder"`` (written whole, e.g. with :func:`atomic_directory`): an existing
    path of the other kind is never replaced. Errors name the option and the path."""
    if kind not in ("file", "folder"):
        raise ValueError(f"check_output: kind must be 'file' or 'folder', got {kind!r}")
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not force:
            raise OutputExistsError(
                f"{option} {path}: already exists; pass --force to overwrite it"
            )
        if kind == "file" and path.is_dir() and not path.is_symlink():
            raise OutputExistsError(f"{option} {path}: is a folder, expected a file path")
        if kind == "folder" and path.exists() and not path.is_dir():
            raise OutputExistsError(f"{option} {path}: is a file, expected a folder path")
    parent = path.parent
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{option} {path}: cannot write in {existing}")
    return path
