"""Writing files so that nothing acknowledged is lost and nothing half-written is ever read.

The one place for the mechanisms every writer uses (checkpoints, run folders, indexes,
feature files, exports, the gallery's crop store):

- :func:`atomic_write` / :func:`atomic_file`: a file appears complete or not at all (temporary
  file in the same folder, fsync, rename, fsync of the folder).
- :func:`atomic_write_many`: the same for a batch of files, with two file-system syncs for
  the whole batch instead of two fsyncs per file (bulk writers such as the crop store).
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
import ctypes
import ctypes.util
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
    "atomic_write_many",
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


def _libc_syncfs():
    # syncfs(2) (Linux) flushes one file system; None where the C library lacks it.
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):  # pragma: no cover - non-Linux platforms
        return None


_SYNCFS = _libc_syncfs()


def _sync_all(paths: list[Path]) -> None:
    """Make ``paths`` (files or folders) durable: one syncfs per file system, else fsyncs."""
    if _SYNCFS is None:  # pragma: no cover - non-Linux platforms
        for p in paths:
            fsync_path(p)
        return
    done: set[int] = set()
    for p in paths:
        dev = os.stat(p).st_dev
        if dev in done:
            continue
        fd = os.open(p, os.O_RDONLY)
        try:
            if _SYNCFS(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"syncfs failed: {os.strerror(err)}", str(p))
        finally:
            os.close(fd)
        done.add(dev)


def atomic_write_many(items: list[tuple[str | Path, bytes]]) -> list[Path]:
    """Write each ``(path, data)`` atomically; all are durable when this returns.

    Every file is written to a temporary name, the file system is synced once, the
    temporaries are renamed into place and the file system is synced again (the renames).
    A crash leaves each path either as it was or complete; never half-written. If a write
    fails, the temporaries are removed and no path was touched.
    """
    pending: list[tuple[Path, Path]] = []
    try:
        for path, data in items:
            path = Path(path)
            tmp = _temporary_name(path)
            pending.append((tmp, path))
            tmp.write_bytes(data)
        if not pending:
            return []
        _sync_all([tmp for tmp, _ in pending])
        for tmp, path in pending:
            os.replace(tmp, path)
        _sync_all([path.parent for _, path in pending])
    finally:
        for tmp, _ in pending:
            tmp.unlink(missing_ok=True)
    return [path for _, path in pending]


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


def check_output(path: str | Path, *, force: bool, option: str = "--out") -> Path:
    """``path`` if it may be written: it must not exist unless ``force`` (then it is replaced
    by the writer); its folder must exist or be creatable and be writable. Errors name the
    option and the file."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not force:
            raise OutputExistsError(
                f"{option} {path}: already exists; pass --force to overwrite it"
            )
        if path.is_dir() and not path.is_symlink():
            raise OutputExistsError(f"{option} {path}: is a folder, expected a file path")
    parent = path.parent
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{option} {path}: cannot write in {existing}")
    return path
