"""Synthetic data set: split layout, determinism, and ``abdnet synth`` output read back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from abdnet.cli.main import main as cli_main
from abdnet.config import DataConfig, SyntheticConfig
from abdnet.data import SYNTHETIC_MARKER, SyntheticReID, build_dataset, detect_layout, open_dataset

SMALL = SyntheticConfig(ids=6, cams=3, per_id=4, height=32, width=16, seed=3)


def pixels(ds, records):
    return [np.asarray(ds.read_image(r)) for r in records]


def test_split_layout():
    ds = open_dataset("synthetic", config=SMALL)
    assert ds.name == "synthetic"
    # pids 1..3 train, 4..6 test; per_id per train id; one query per camera; distractors pid 0
    assert ds.pid_map == {1: 0, 2: 1, 3: 2}
    assert len(ds.train) == 3 * 4
    assert sorted((r.pid, r.camid) for r in ds.query) == [
        (p, c) for p in (4, 5, 6) for c in range(3)
    ]
    assert sum(r.pid == 0 for r in ds.gallery) == 3
    assert sorted({r.pid for r in ds.gallery}) == [0, 4, 5, 6]
    assert len(ds.gallery) == 3 * 4 + 3
    assert not ds.unmatched_queries  # every query has a match in another camera
    # training images of one identity are spread over the cameras
    for label in range(3):
        assert len({r.camid for r in ds.train if r.pid == label}) == 3
    img = ds.read_image(ds.train[0])
    assert img.mode == "RGB" and img.size == (16, 32)


def test_deterministic_from_seed():
    a = open_dataset("synthetic", config=SMALL)
    b = build_dataset(DataConfig(name="synthetic", synthetic=SMALL))
    c = open_dataset("synthetic", config=SyntheticConfig(**{**SMALL.__dict__, "seed": 4}))
    pa, pb, pc = pixels(a, a.gallery), pixels(b, b.gallery), pixels(c, c.gallery)
    assert all(np.array_equal(x, y) for x, y in zip(pa, pb, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(pa, pc, strict=True))
    # reading twice (any order) gives the same image: each image has its own random stream
    assert np.array_equal(np.asarray(a.read_image(a.gallery[-1])), pa[-1])


def test_identity_is_persistent_and_cameras_differ():
    # Same identity under the same camera and view statistics shares its clothing colours:
    # on average, images of one identity are closer (in the person's central region, colour
    # cast removed by per-image standardisation) than images of different identities seen
    # by the same camera.
    gen = SyntheticReID(SyntheticConfig(ids=20, cams=2, per_id=6, height=64, width=32, seed=0))

    def centre(pid, cam, k):
        a = gen.render_array(10, pid, cam, k)[16:56, 10:22].astype(np.float64)
        return (a - a.mean((0, 1))) / (a.std((0, 1)) + 1e-6)

    same, diff = [], []
    for pid in range(1, 11):
        for cam in range(2):
            x, y = centre(pid, cam, 0), centre(pid, cam, 1)
            same.append(np.abs(x - y).mean())
            diff.append(np.abs(x - centre(pid % 10 + 1, cam, 1)).mean())
    assert np.mean(same) < np.mean(diff)
    # cameras differ: the same identity's mean colour moves with the camera
    m0 = np.mean([gen.render_array(10, p, 0, 0).mean((0, 1)) for p in range(1, 11)], 0)
    m1 = np.mean([gen.render_array(10, p, 1, 0).mean((0, 1)) for p in range(1, 11)], 0)
    assert np.abs(m0 - m1).max() > 5


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"unknown option\(s\) idz"):
        open_dataset("synthetic", idz=4)
    (tmp_path / "x").mkdir()
    with pytest.raises(ValueError, match="no known data set layout"):
        open_dataset("synthetic", root=str(tmp_path / "x"))
    with pytest.raises(ValueError, match=r"data.synthetic.cams"):
        SyntheticReID(SyntheticConfig(cams=1))
    with pytest.raises(ValueError, match=r"data.synthetic.ids"):
        SyntheticReID(SyntheticConfig(ids=1))


def test_synth_cli_output_is_auto_detected_and_matches_memory(tmp_path, capsys):
    out = tmp_path / "syn"
    rc = cli_main(
        [
            "synth",
            "--out",
            str(out),
            "--ids",
            "6",
            "--cams",
            "3",
            "--per-id",
            "4",
            "--size",
            "32x16",
            "--seed",
            "3",
        ]
    )
    assert rc == 0
    assert "query" in capsys.readouterr().out
    info = json.loads((out / SYNTHETIC_MARKER).read_text())
    assert info["config"] == SMALL.__dict__
    assert detect_layout(out) == ("synthetic", out)
    disk = open_dataset(str(out))
    mem = open_dataset("synthetic", config=SMALL)
    assert disk.name == "synthetic"

    def key(records):
        return sorted((Path(r.path).name, r.pid, r.camid) for r in records)

    for split in ("train", "query", "gallery"):
        assert key(getattr(disk, split)) == key(getattr(mem, split))
    assert disk.pid_map == mem.pid_map
    # name "synthetic" with a root reads the written set
    from_cfg = build_dataset(DataConfig(name="synthetic", root=str(out)))
    assert key(from_cfg.query) == key(disk.query) and from_cfg.root == str(out)
    # the file is a JPEG (quality 95, 4:4:4) of the in-memory image
    r_disk = sorted(disk.query, key=lambda r: Path(r.path).name)[0]
    r_mem = sorted(mem.query, key=lambda r: Path(r.path).name)[0]
    a = np.asarray(disk.read_image(r_disk)).astype(int)
    b = np.asarray(mem.read_image(r_mem)).astype(int)
    other = np.asarray(
        mem.read_image(sorted(mem.query, key=lambda r: Path(r.path).name)[1])
    ).astype(int)
    assert np.abs(a - b).mean() < 4 < np.abs(a - other).mean()
    # writing again into a non-empty folder needs --overwrite
    assert cli_main(["synth", "--out", str(out)]) == 2
    assert (
        cli_main(
            [
                "synth",
                "--out",
                str(out),
                "--ids",
                "4",
                "--cams",
                "2",
                "--per-id",
                "2",
                "--size",
                "32x16",
                "--overwrite",
            ]
        )
        == 0
    )
    assert len(open_dataset(str(out)).train) == 2 * 2


def test_reader_survives_pickling_for_spawned_workers():
    import pickle

    ds = open_dataset("synthetic", config=SMALL)
    reader = pickle.loads(pickle.dumps(ds.read_image))
    assert np.array_equal(np.asarray(reader(ds.query[1])), np.asarray(ds.read_image(ds.query[1])))


def test_synth_cli_refuses_existing_set_unless_force_and_checks_numbers(tmp_path, capsys):
    out = tmp_path / "syn"
    args = ["synth", "--out", str(out), "--ids", "4", "--cams", "2", "--per-id", "2",
            "--size", "32x16"]  # fmt: skip
    assert cli_main(args) == 0
    marker = (out / SYNTHETIC_MARKER).read_text()
    capsys.readouterr()
    assert cli_main(args) == 2
    assert f"--out {out}: already holds" in capsys.readouterr().err
    assert cli_main([*args, "--force", "--seed", "3"]) == 0
    assert (out / SYNTHETIC_MARKER).read_text() != marker
    with pytest.raises(SystemExit):
        cli_main(["synth", "--out", str(tmp_path / "x"), "--ids", "1"])
    assert "argument --ids: expected an integer >= 2" in capsys.readouterr().err
    assert cli_main(["synth", "--out", str(tmp_path / "y"), "--size", "4x4"]) == 2
    assert "synthetic.height: expected a value >= 8" in capsys.readouterr().err


def test_parallel_write_gives_the_same_files(tmp_path):
    from abdnet.data import write_synthetic

    cfg = SyntheticConfig(ids=6, cams=2, per_id=2, height=32, width=16, seed=3)
    serial = write_synthetic(tmp_path / "serial", cfg)
    parallel = write_synthetic(tmp_path / "parallel", cfg, workers=2)
    files = sorted(p.relative_to(serial) for p in serial.rglob("*.jpg"))
    assert len(files) == len(SyntheticReID(cfg).dataset().train) + 3 * 2 + 3 * 2 + 3
    assert files == sorted(p.relative_to(parallel) for p in parallel.rglob("*.jpg"))
    for rel in files:
        assert (serial / rel).read_bytes() == (parallel / rel).read_bytes(), rel
    assert (serial / SYNTHETIC_MARKER).read_text() == (parallel / SYNTHETIC_MARKER).read_text()
    with pytest.raises(ValueError, match="workers"):
        write_synthetic(tmp_path / "bad", cfg, workers=-1)
