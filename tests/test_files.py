"""abdnet.files: atomic files and folders, folder locks, refusing to overwrite."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from abdnet.files import (
    FileLockedError,
    FolderLock,
    OutputExistsError,
    atomic_directory,
    atomic_write,
    atomic_write_many,
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


def test_atomic_write_many_writes_all_and_leaves_no_temporary(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x").write_text("old")
    items = [(tmp_path / "a" / "x", b"1"), (tmp_path / "b" / "y", b"22"), (tmp_path / "z", b"3")]
    written = atomic_write_many(items)
    assert written == [p for p, _ in items]
    assert [p.read_bytes() for p, _ in items] == [b"1", b"22", b"3"]
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".")]
    assert leftovers == []
    assert atomic_write_many([]) == []


def test_atomic_write_many_failure_touches_nothing(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("old")
    with pytest.raises(TypeError):
        atomic_write_many([(tmp_path / "x", b"new"), (tmp_path / "y", 5)])  # type: ignore[list-item]
    assert (tmp_path / "x").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]
