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
- :func:`check_output`: refuse to overwrite an existing output unless asked to (``--force``),
  and refuse an output that cannot be written, before any work is done.
- :func:`remove_stale_temporaries`: a writer's first step; removes what killed writers left.

This module imports nothing else of abdnet.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
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
    "current_version",
    "fsync_path",
    "remove_stale_temporaries",
]


log = logging.getLogger(__name__)


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
    # Hidden, in the same folder (same file system, so the rename is atomic), marked with the
    # writer's pid so that leftovers of a killed writer are recognisable
    # (remove_stale_temporaries), and ending in the target's suffix for writers that choose
    # the format by it (matplotlib) or append one when it is missing (numpy).
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(folder: str | Path, name: str) -> list[Path]:
    """Remove the temporaries :func:`atomic_file` left for ``folder/name`` when its writer
    was killed (its pid no longer runs); a live writer's temporary is left alone. Writers
    call this when they start, so a killed export does not leave its bytes behind for long.
    Returns the removed paths."""
    pattern = re.compile(rf"^\.{re.escape(name)}\.tmp-?(\d+)(?:-[0-9a-f]+)?(?:\.\w+)?$")
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = pattern.match(entry.name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield an empty folder; on normal exit ``target`` becomes (a link to) it atomically.

    If the body raises (or the process dies), ``target`` is untouched. A ``target`` that is a
    real folder (e.g. copied without links) is moved aside first; the swap itself is still
    one rename. Earlier versions and leftovers of interrupted writes are removed afterwards,
    so one writer at a time (hold the folder's :class:`FolderLock`); readers should resolve
    the link once (:func:`current_version`) and read every file of one version from there.
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
    # Exactly this target's versions and links: a sibling named e.g. "<name>-2" has its own.
    version = re.compile(rf"^\.{re.escape(target.name)}-(?:old-)?[0-9a-f]{{12}}$")
    link_name = re.compile(rf"^\.{re.escape(target.name)}\.link-[0-9a-f]{{12}}$")
    for stale in parent.iterdir():
        if version.match(stale.name) and stale.name != current:
            shutil.rmtree(stale, ignore_errors=True)
        elif link_name.match(stale.name):
            stale.unlink(missing_ok=True)


def current_version(target: str | Path) -> Path:
    """The folder ``target`` stands for now: the version its link points to (or ``target``
    itself when it is a plain folder). Read all files of one version through this path."""
    target = Path(target)
    if target.is_symlink():
        return target.parent / os.readlink(target)
    return target


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
        lock = filelock.FileLock(str(self.path), timeout=self.timeout)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                lock.acquire(timeout=0)
            except filelock.Timeout:
                if self.timeout == 0:
                    raise
                log.info(
                    "%s: in use by another process; waiting%s",
                    self.what,
                    "" if self.timeout < 0 else f" up to {self.timeout:g} s",
                )
                lock.acquire()
        except PermissionError:
            raise PermissionError(
                f"{self.what}: cannot write in {_existing_ancestor(self.path.parent)} "
                "(permission denied)"
            ) from None
        except (FileExistsError, NotADirectoryError):
            raise PermissionError(
                f"{self.what}: cannot write there: {_existing_ancestor(self.path.parent)} is a file"
            ) from None
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


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output(
    path: str | Path,
    *,
    force: bool,
    option: str = "--out",
    folder: bool = False,
    members: tuple[str, ...] | None = None,
    hint: str = "",
) -> Path:
    """``path`` if it may be written, checked before any work is done; errors name the
    option and the path.

    A file output (default) must not exist unless ``force`` (the writer then replaces it)
    and must not be a folder. A folder output (``folder=True``) must not be a file, and
    must not already hold an output unless ``force``: any entry, or with ``members`` one of
    those names (a run folder may hold a scheduler's log, but not another run's
    ``config.yaml``). Either way the nearest existing folder on the way must be writable.
    ``hint`` is added to the refusal (e.g. how to continue instead).
    """
    path = Path(path)
    exists = path.exists() or path.is_symlink()
    if folder:
        if exists and not path.is_dir():
            raise OutputExistsError(f"{option} {path}: is a file, expected a folder")
        if exists:
            entries = sorted(e.name for e in path.iterdir())
            held = [e for e in entries if members is None or e in members]
            if held and not force:
                raise OutputExistsError(
                    f"{option} {path}: already holds {', '.join(held[:3])}"
                    f"{' ...' if len(held) > 3 else ''}; {hint + ', or ' if hint else ''}"
                    "pass --force to replace it"
                )
    elif exists:
        if path.is_dir() and not path.is_symlink():
            raise OutputExistsError(f"{option} {path}: is a folder, expected a file path")
        if not force:
            raise OutputExistsError(
                f"{option} {path}: already exists; {hint + ', or ' if hint else ''}"
                "pass --force to overwrite it"
            )
    # The parent takes temporaries, lock files and new versions; a folder also its contents.
    for where in [_existing_ancestor(path.parent)] + ([path] if folder and exists else []):
        if not where.is_dir():
            raise PermissionError(f"{option} {path}: cannot write there: {where} is a file")
        if not os.access(where, os.W_OK | os.X_OK):
            raise PermissionError(f"{option} {path}: cannot write in {where} (permission denied)")
    return path
