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


def test_check_output_folder_modes(tmp_path: Path) -> None:
    from abdnet.files import check_output

    folder = tmp_path / "run"
    assert check_output(folder, force=False, folder=True) == folder  # absent: fine
    folder.mkdir()
    assert check_output(folder, force=False, folder=True) == folder  # empty: fine
    (folder / "slurm.log").write_text("log")
    with pytest.raises(OutputExistsError, match=r"--out .*run: already holds slurm\.log"):
        check_output(folder, force=False, folder=True)
    # with members only those names count
    members = ("config.yaml", "checkpoints")
    assert check_output(folder, force=False, folder=True, members=members)
    (folder / "config.yaml").write_text("x")
    with pytest.raises(OutputExistsError, match=r"already holds config\.yaml; use X, or pass"):
        check_output(folder, force=False, folder=True, members=members, hint="use X")
    assert check_output(folder, force=True, folder=True, members=members)
    with pytest.raises(OutputExistsError, match="is a file, expected a folder"):
        check_output(folder / "slurm.log", force=True, folder=True)
    with pytest.raises(OutputExistsError, match="is a folder, expected a file"):
        check_output(folder, force=True)


def test_remove_stale_temporaries_only_of_dead_writers(tmp_path: Path) -> None:
    from abdnet.files import remove_stale_temporaries

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    stale = tmp_path / f".m.onnx.tmp-{dead}-0123abcd.onnx"
    stale_old_style = tmp_path / f".m.onnx.tmp{dead}"
    live = tmp_path / f".m.onnx.tmp-{os.getpid()}-0123abcd.onnx"
    other = tmp_path / f".other.onnx.tmp-{dead}-0123abcd.onnx"
    for p in (stale, stale_old_style, live, other):
        p.write_bytes(b"x" * 10)
    removed = remove_stale_temporaries(tmp_path, "m.onnx")
    assert sorted(removed) == sorted([stale, stale_old_style])
    assert live.exists() and other.exists()


def test_atomic_file_keeps_the_suffix_for_format_sniffing_writers(tmp_path: Path) -> None:
    import numpy as np

    from abdnet.files import atomic_file

    target = tmp_path / "f.npz"
    with atomic_file(target) as tmp:
        assert tmp.suffix == ".npz" and tmp.name.startswith(".f.npz.tmp-")
        np.savez(tmp, a=np.arange(3))  # numpy would append ".npz" to another suffix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npz"]


def test_atomic_directory_leaves_a_sibling_with_a_longer_name_alone(tmp_path: Path) -> None:
    _write(tmp_path / "ix-2", "sibling")
    _write(tmp_path / "ix", "one")
    _write(tmp_path / "ix", "two")
    assert (tmp_path / "ix-2" / "a.txt").read_text() == "sibling"
    assert (tmp_path / "ix" / "a.txt").read_text() == "two"


def test_folder_lock_waits_for_the_holder(tmp_path: Path) -> None:
    folder = tmp_path / "ix"
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(str(folder), ready, release))
    proc.start()
    try:
        assert ready.wait(60)
        import threading

        threading.Timer(1.0, release.set).start()
        with FolderLock(folder, timeout=60):  # waits until the holder lets go
            assert release.is_set()
    finally:
        release.set()
        proc.join(30)
