"""Index folders under concurrent writers, kills and tampering: nothing added is lost, a
killed addition leaves the old index, and metadata that disagrees with the files is an error
naming the field with no file deleted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from abdnet.cli.main import main
from abdnet.retrieval import FeatureSet, build_index, open_index, save_features, update_index

DIM = 16


def _features(path: Path, n: int, prefix: str, seed: int) -> Path:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    paths = [f"{prefix}/{i:05d}.jpg" for i in range(n)]
    pids = np.arange(n, dtype=np.int64) % 7
    return save_features(path, FeatureSet(x, paths, pids, np.zeros(n, np.int64), {"flip": False}))


@pytest.fixture
def index_dir(tmp_path: Path) -> Path:
    feats = _features(tmp_path / "g.npz", 300, "g", 0)
    assert main(["index", "build", "--features", str(feats), "--out", str(tmp_path / "ix")]) == 0
    return tmp_path / "ix"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "abdnet.cli.main", *args]


# A child that holds the index open in the middle of its addition until told to go on.
_HELD_ADD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from abdnet.retrieval import index as I
    real_add = I.FeatureIndex.add
    def held_add(self, *a, **k):
        Path(sys.argv[1]).write_text("inside")
        deadline = time.monotonic() + 300
        while not Path(sys.argv[2]).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return real_add(self, *a, **k)
    I.FeatureIndex.add = held_add
    from abdnet.cli.main import main
    sys.exit(main(sys.argv[3:]))
    """
)


def _start_held_add(tmp_path: Path, index: Path, feats: Path) -> tuple[subprocess.Popen, Path]:
    inside, go_on = tmp_path / "inside", tmp_path / "go-on"
    proc = subprocess.Popen(
        [sys.executable, "-c", _HELD_ADD, str(inside), str(go_on), "index", "add", "--index",
         str(index), "--features", str(feats)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not inside.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert inside.exists(), proc.communicate()[1]
    return proc, go_on


def test_concurrent_additions_both_land(index_dir: Path, tmp_path: Path) -> None:
    a = _features(tmp_path / "a.npz", 200, "a", 1)
    b = _features(tmp_path / "b.npz", 150, "b", 2)
    # The first process holds the index open in the middle of its addition while the second
    # starts: without a lock the second reads the old index and one addition is lost.
    first, go_on = _start_held_add(tmp_path, index_dir, a)
    second = subprocess.Popen(
        _cli("index", "add", "--index", str(index_dir), "--features", str(b)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    waiting = ""
    while "waiting" not in waiting and second.poll() is None:
        waiting += second.stderr.readline()
    assert "in use by another process; waiting up to 600 s" in waiting, waiting
    go_on.write_text("go")
    _, err_a = first.communicate(timeout=300)
    _, err_b = second.communicate(timeout=300)
    assert first.returncode == 0, err_a
    assert second.returncode == 0, waiting + err_b
    ix = open_index(index_dir)
    assert ix.count == 300 + 200 + 150
    assert sorted(ix.paths) == sorted(
        [f"g/{i:05d}.jpg" for i in range(300)]
        + [f"a/{i:05d}.jpg" for i in range(200)]
        + [f"b/{i:05d}.jpg" for i in range(150)]
    )
    assert ix.pids is not None and len(ix.pids) == ix.count
    # every vector is findable: each added item is its own nearest neighbour
    for feats in (a, b):
        with np.load(feats) as z:
            x, paths = z["features"], list(z["paths"])
        res = ix.search(x[:20], 1)
        assert [ix.paths[i] for i in res.indices[:, 0]] == paths[:20]
    # one link and its current version; no debris of the first version
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".ix")) == sorted(
        [".ix.lock", os.readlink(index_dir)]
    )


def test_second_writer_refused_at_once_with_wait_0(index_dir: Path, tmp_path: Path) -> None:
    a = _features(tmp_path / "a.npz", 50, "a", 1)
    b = _features(tmp_path / "b.npz", 50, "b", 2)
    first, go_on = _start_held_add(tmp_path, index_dir, a)
    second = subprocess.run(
        _cli("index", "add", "--index", str(index_dir), "--features", str(b), "--wait", "0"),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    go_on.write_text("go")
    first.communicate(timeout=300)
    assert second.returncode == 2
    assert second.stderr.startswith("abdnet index: error: index ")
    assert "in use by another abdnet process" in second.stderr
    assert "Traceback" not in second.stderr
    assert open_index(index_dir).count == 350  # the first addition landed, the second did not


@pytest.mark.parametrize("where", ["after_index_file", "before_swap", "after_swap"])
def test_kill_during_add_leaves_old_or_new_index(index_dir: Path, tmp_path: Path, where) -> None:
    feats = _features(tmp_path / "a.npz", 100, "a", 1)
    before = _snapshot(index_dir)
    # os._exit: no cleanup runs, as with SIGKILL
    script = textwrap.dedent(
        f"""
        import os, sys
        import faiss
        from abdnet import files as F
        where = {where!r}
        if where == "after_index_file":
            real_write = faiss.write_index
            def write_and_die(index, path):
                real_write(index, path)
                os._exit(9)
            faiss.write_index = write_and_die
        elif where == "before_swap":
            F.os.replace = lambda src, dst: os._exit(9)
        else:
            real_fsync = F.fsync_path
            def fsync(p):
                real_fsync(p)
                if F.Path(p) == F.Path({str(tmp_path)!r}):
                    os._exit(9)
            F.fsync_path = fsync
        from abdnet.cli.main import main
        sys.exit(main(["index", "add", "--index", {str(index_dir)!r}, "--features", {str(feats)!r}]))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    ix = open_index(index_dir)
    if where == "after_swap":
        assert ix.count == 400 and ix.paths[-1] == "a/00099.jpg"
    else:
        assert ix.count == 300 and _snapshot(index_dir) == before
    # the next writer works on it and removes the killed writer's debris
    more = _features(tmp_path / "b.npz", 10, "b", 2)
    assert main(["index", "add", "--index", str(index_dir), "--features", str(more)]) == 0
    assert open_index(index_dir).count == ix.count + 10
    hidden = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".ix"))
    assert hidden == sorted([".ix.lock", os.readlink(index_dir)])


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("has_paths", False, r"meta\.json: has_paths is false but .*paths\.txt exists"),
        ("has_labels", False, r"meta\.json: has_labels is false but .*labels\.npz exists"),
        ("kind", "bogus", r"meta\.json: kind 'bogus': expected one of flat, ivfpq, hnsw"),
        (
            "kind",
            "hnsw",
            r"meta\.json: kind 'hnsw' does not match index\.faiss, which holds a flat",
        ),
        ("count", 299, r"meta\.json: count 299 does not match index\.faiss \(300 vectors\)"),
        ("dim", 8, r"meta\.json: dim 8 does not match index\.faiss \(dim 16\)"),
        ("format_version", "abc", r"meta\.json: format_version: expected an integer"),
        ("params", [], r"meta\.json: params: expected a mapping"),
    ],
)
def test_tampered_metadata_is_refused_and_nothing_deleted(
    index_dir: Path, tmp_path: Path, capsys, field, value, message
) -> None:
    meta_file = index_dir / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta[field] = value
    meta_file.write_text(json.dumps(meta))
    before = _snapshot(index_dir)
    with pytest.raises(ValueError, match=message):
        open_index(index_dir)
    feats = _features(tmp_path / "a.npz", 10, "a", 1)
    capsys.readouterr()
    assert main(["index", "add", "--index", str(index_dir), "--features", str(feats)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("abdnet index: error: ") and err.count("\n") == 1 and field in err
    assert _snapshot(index_dir) == before  # nothing deleted, nothing rewritten


def test_missing_files_named_by_their_flag(index_dir: Path) -> None:
    (index_dir / "labels.npz").unlink()
    with pytest.raises(ValueError, match=r"has_labels is true but .*labels\.npz is missing"):
        open_index(index_dir)


def test_object_array_labels_are_refused_with_the_file(index_dir: Path) -> None:
    np.savez(index_dir / "labels.npz", pids=np.array([object()] * 300), camids=np.zeros(300))
    with pytest.raises(ValueError, match=r"labels\.npz: not a readable labels file"):
        open_index(index_dir)


def test_garbage_faiss_file_is_named(index_dir: Path) -> None:
    (index_dir / "index.faiss").write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError, match=r"index\.faiss: not a readable faiss index"):
        open_index(index_dir)


def test_save_after_another_writer_is_refused(index_dir: Path, tmp_path: Path) -> None:
    x = np.ones((1, DIM), np.float32) / 4
    stale = open_index(index_dir)
    with update_index(index_dir) as ix:
        ix.add(x, paths=["new.jpg"], pids=[1], camids=[0])
    stale.add(x, paths=["other.jpg"], pids=[1], camids=[0])
    with pytest.raises(ValueError, match="changed by another writer"):
        stale.save()
    assert open_index(index_dir).paths[-1] == "new.jpg"


def test_failed_update_writes_nothing(index_dir: Path) -> None:
    before = _snapshot(index_dir)
    link = os.readlink(index_dir)
    with pytest.raises(ValueError, match="dimension"):
        with update_index(index_dir) as ix:
            ix.add(np.ones((1, 3), np.float32), paths=["x.jpg"], pids=[1], camids=[0])
    assert os.readlink(index_dir) == link and _snapshot(index_dir) == before


def test_build_refuses_existing_folder_unless_force(index_dir: Path, tmp_path: Path, capsys):
    feats = _features(tmp_path / "n.npz", 40, "n", 3)
    capsys.readouterr()
    assert main(["index", "build", "--features", str(feats), "--out", str(index_dir)]) == 2
    err = capsys.readouterr().err
    assert f"--out {index_dir}: already holds" in err and "--force" in err
    assert open_index(index_dir).count == 300
    assert (
        main(["index", "build", "--features", str(feats), "--out", str(index_dir), "--force"]) == 0
    )
    assert open_index(index_dir).count == 40
    # the old spelling still works
    assert (
        main(["index", "build", "--features", str(feats), "--out", str(index_dir), "--overwrite"])
        == 0
    )
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["index", "build", "--features", str(feats), "--out", str(blocker / "ix")]) == 2
    assert f"cannot write there: {blocker} is a file" in capsys.readouterr().err
    # an unrelated non-empty folder is refused before the features are even read
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    assert (
        main(["index", "build", "--features", str(tmp_path / "none.npz"), "--out", str(other)]) == 2
    )
    assert "todo.txt" in capsys.readouterr().err and (other / "todo.txt").read_text() == "mine"


def test_sibling_index_with_a_longer_name_survives(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((20, DIM)).astype(np.float32)
    build_index(x, "flat", out_dir=tmp_path / "ix-2")
    build_index(x, "flat", out_dir=tmp_path / "ix")
    build_index(x[:5], "flat", out_dir=tmp_path / "ix", overwrite=True)
    assert open_index(tmp_path / "ix-2").count == 20 and open_index(tmp_path / "ix").count == 5


def test_legacy_plain_folder_index_is_read_and_replaced(tmp_path: Path) -> None:
    # indexes written before versioned folders are plain folders: read them, and an
    # addition turns them into a link without losing anything
    x = np.random.default_rng(0).standard_normal((20, DIM)).astype(np.float32)
    build_index(x, "flat", paths=[f"p{i}" for i in range(20)], out_dir=tmp_path / "v")
    plain = tmp_path / "plain"
    plain.mkdir()
    for f in (tmp_path / "v").iterdir():
        (plain / f.name).write_bytes(f.read_bytes())
    with update_index(plain) as ix:
        ix.add(x[:2], paths=["q0", "q1"])
    assert plain.is_symlink() and open_index(plain).paths[-2:] == ["q0", "q1"]
    assert open_index(plain).count == 22
