"""abdnet.files: atomic files and folders, folder locks, refusing to overwrite."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from abdnet.files import (
    FileLockedError,
    FolderLock,
    OutputExistsError,
    atomic_directory,
    atomic_write,
    check_output,
)


def test_atomic_write_replaces_whole_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    atomic_write(target, "old")
    atomic_write(target, b"new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_write_failure_keeps_old_content(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    atomic_write(target, "old")
    with pytest.raises(TypeError):
        atomic_write(target, 123)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_directory_swaps_whole_folder(tmp_path: Path) -> None:
    target = tmp_path / "index"
    with atomic_directory(target) as d:
        (d / "x").write_text("1")
        (d / "y").write_text("1")
    with pytest.raises(RuntimeError), atomic_directory(target) as d:
        (d / "x").write_text("2")
        raise RuntimeError("killed half-way")
    assert (target / "x").read_text() == "1" and (target / "y").read_text() == "1"
    with atomic_directory(target) as d:
        (d / "x").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["x"]
    assert (target / "x").read_text() == "3"
    # only the link and its current version remain
    assert len(list(tmp_path.iterdir())) == 2


def _write(target, text):
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text(text)
        (tmp / "b.txt").write_text(text * 2)


def test_atomic_directory_replaces_and_cleans(tmp_path):
    target = tmp_path / "checkpoints" / "last"
    _write(target, "one")
    _write(target, "two")
    assert (target / "a.txt").read_text() == "two" and (target / "b.txt").read_text() == "twotwo"
    # only the current hidden folder and the link remain
    assert sorted(p.name for p in target.parent.iterdir()) == sorted(["last", os.readlink(target)])


def test_exception_mid_write_keeps_previous(tmp_path):
    target = tmp_path / "last"
    _write(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "a.txt").write_text("new")
            raise RuntimeError("disk full")
    assert (target / "a.txt").read_text() == "old"


@pytest.mark.parametrize(
    "where, expected",
    [
        ("after_first_file", "old"),
        ("before_rename", "old"),
        ("after_link_created", "old"),
        ("after_rename", "new"),
    ],
)
def test_kill_mid_write_leaves_a_complete_checkpoint(tmp_path, where, expected):
    # A child process writes "old" completely, then dies with os._exit (no cleanup, like
    # SIGKILL) at one point of writing "new". The link must lead to a complete checkpoint:
    # "old" until the atomic rename, "new" after it.
    target = tmp_path / "checkpoints" / "last"
    script = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from abdnet import files as C
        target = Path({str(target)!r})
        with C.atomic_directory(target) as tmp:
            (tmp / "a.txt").write_text("old"); (tmp / "b.txt").write_text("oldold")
        where = {where!r}
        if where == "after_link_created":
            real_replace = os.replace
            def dying_replace(src, dst):
                os._exit(9)
            C.os.replace = dying_replace
        if where == "before_rename":
            C.fsync_path = lambda p: os._exit(9) if p.name.startswith(".last-") and p.is_dir() else None
        if where == "after_rename":
            C.fsync_path = lambda p: os._exit(9) if p == target.parent else None
        with C.atomic_directory(target) as tmp:
            (tmp / "a.txt").write_text("new")
            if where == "after_first_file":
                os._exit(9)
            (tmp / "b.txt").write_text("newnew")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    assert (target / "a.txt").read_text() == expected
    assert (target / "b.txt").read_text() == expected * 2
    # the next write succeeds and removes the debris of the killed one
    _write(target, "next")
    assert (target / "a.txt").read_text() == "next"
    assert sorted(p.name for p in target.parent.iterdir()) == sorted(["last", os.readlink(target)])


def _hold_lock(folder: str, ready, release) -> None:
    with FolderLock(folder):
        ready.set()
        release.wait(30)


def test_folder_lock_excludes_another_process(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(str(folder), ready, release))
    proc.start()
    try:
        assert ready.wait(60)
        with pytest.raises(FileLockedError, match="run"):
            FolderLock(folder).acquire()
    finally:
        release.set()
        proc.join(30)
    with FolderLock(folder, timeout=5):
        pass


def test_folder_lock_freed_when_holder_is_killed(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(str(folder), ready, release))
    proc.start()
    assert ready.wait(60)
    proc.kill()
    proc.join(30)
    with FolderLock(folder, timeout=5):
        pass


def test_check_output_refuses_existing_file_unless_forced(tmp_path: Path) -> None:
    existing = tmp_path / "f.npz"
    existing.write_text("x")
    with pytest.raises(OutputExistsError, match="--out .*f.npz.*--force"):
        check_output(existing, force=False)
    assert check_output(existing, force=True) == existing
    assert check_output(tmp_path / "new" / "deeper" / "g.npz", force=False)


def test_check_output_refuses_a_path_below_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="cannot write"):
        check_output(blocker / "f.npz", force=False)
