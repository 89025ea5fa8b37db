import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from abdnet.engine.checkpoint import atomic_directory, capture_rng_state, restore_rng_state


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
        from abdnet.engine import checkpoint as C
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
            C._fsync_path = lambda p: os._exit(9) if p.name.startswith(".last-") and p.is_dir() else None
        if where == "after_rename":
            C._fsync_path = lambda p: os._exit(9) if p == target.parent else None
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


def test_rng_state_round_trip_through_weights_only_load(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    state = capture_rng_state()
    expected = (random.random(), np.random.randn(3), torch.rand(3))
    torch.save(state, tmp_path / "s.pt")
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    restore_rng_state(torch.load(tmp_path / "s.pt", weights_only=True))
    got = (random.random(), np.random.randn(3), torch.rand(3))
    assert got[0] == expected[0]
    np.testing.assert_array_equal(got[1], expected[1])
    assert torch.equal(got[2], expected[2])
