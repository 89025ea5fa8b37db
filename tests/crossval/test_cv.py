"""Cross-validation by identity: folds, the per-fold query choice, the runner and the CLI."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest

from abdnet.cli.main import main
from abdnet.config import load_config
from abdnet.crossval import assign_folds, fold_split, plan_cv, pool_identities, run_cv
from abdnet.crossval.folds import IdentityPool
from abdnet.data import ImageRecord, open_dataset
from abdnet.engine import train

SMALL_RUN = Path(__file__).parents[1] / "fixtures" / "small-run.yaml"


def test_folds_partition_the_identities_deterministically():
    pids = list(range(100, 137))  # 37, as the PKU-Reid dev set
    folds = assign_folds(pids, 5, seed=0, repeat=0)
    flat = [p for f in folds for p in f]
    assert sorted(flat) == pids  # every id once: never on both sides of a fold
    assert sorted(len(f) for f in folds) == [7, 7, 7, 8, 8]
    assert assign_folds(pids, 5, seed=0, repeat=0) == folds
    assert assign_folds(pids, 5, seed=0, repeat=1) != folds  # a repeat reshuffles
    assert assign_folds(pids, 5, seed=1, repeat=0) != folds


def test_fewer_identities_than_folds_is_an_error():
    with pytest.raises(ValueError, match="only 3 identities"):
        assign_folds([1, 2, 3], 4, seed=0, repeat=0)


def _rec(pid: int, cam: int, i: int) -> ImageRecord:
    return ImageRecord(f"/x/{pid:04d}_c{cam + 1}s1_{i:06d}_00.jpg", pid, cam)


def test_fold_split_queries_and_single_camera_ids():
    by_pid = {
        1: tuple(_rec(1, c, i) for c in (0, 1) for i in range(1, 9)),  # 8 per camera
        2: tuple(_rec(2, 0, i) for i in range(1, 5)),  # one camera only
        3: tuple([_rec(3, 0, 1)] + [_rec(3, 1, i) for i in range(1, 4)]),  # 1 + 3 images
        4: tuple(_rec(4, c, i) for c in (0, 1) for i in range(1, 5)),
    }
    pool = IdentityPool(by_pid)
    split = fold_split(pool, [1, 2, 3], repeat=0, fold=0, queries_per_camera=2)
    assert split.train_pids == (4,)
    assert {r.pid for r in split.train} == {4}
    # id 1: positions 0 and 4 of each camera's sorted images (orientations 1 and 5)
    q1 = sorted(Path(r.path).name for r in split.query if r.pid == 1)
    assert q1 == [f"0001_c{c}s1_{i:06d}_00.jpg" for c in (1, 2) for i in (1, 5)]
    # id 2 (one camera): no queries, all in the gallery, counted
    assert split.single_camera_pids == (2,)
    assert not [r for r in split.query if r.pid == 2]
    assert len([r for r in split.gallery if r.pid == 2]) == 4
    # id 3: its single camera-0 image stays in the gallery; camera 1 gives 2 of its 3
    q3 = [r for r in split.query if r.pid == 3]
    assert [r.camid for r in q3] == [1, 1]
    # every query has a cross-camera gallery match
    for q in split.query:
        assert any(g.pid == q.pid and g.camid != q.camid for g in split.gallery)
    assert split.counts()["test_ids"] == 3 and split.counts()["query_ids"] == 2
    assert set(split.query).isdisjoint(split.gallery)
    assert len(split.query) + len(split.gallery) == sum(len(by_pid[p]) for p in (1, 2, 3))


def test_pool_maps_training_labels_back(synth_root):
    ds = open_dataset(str(synth_root))
    pool = pool_identities(ds)
    originals = set(ds.pid_map)
    assert originals <= set(pool.pids)  # training ids under their original pids
    assert {r.pid for r in ds.query} <= set(pool.pids)
    n_images = len(ds.train) + len(ds.query) + len(ds.gallery)
    assert sum(len(v) for v in pool.by_pid.values()) + len(pool.distractors) == n_images
    assert all(r.pid == 0 for r in pool.distractors)


@pytest.mark.usefixtures("one_torch_thread")
def test_run_cv_trains_each_fold_resumes_and_reports(tmp_path):
    base = load_config(SMALL_RUN)
    out = tmp_path / "cv"

    def killed_at_second_fold(cfg, run_dir, resume):
        if run_dir.parent.name == "r0-f1":
            raise KeyboardInterrupt  # a kill during the second fold
        return train(cfg, run_dir, resume=resume)

    with pytest.raises(KeyboardInterrupt):
        run_cv(base, out, folds=2, train_fn=killed_at_second_fold)
    first = out / "r0-f0" / "fold_result.json"
    stamp = first.stat().st_mtime_ns
    assert not (out / "r0-f1" / "fold_result.json").exists()

    # a finished fold keeps what it is read and evaluated with, not its training state
    assert (out / "r0-f0" / "run" / "checkpoints" / "last" / "model.safetensors").is_file()
    assert not (out / "r0-f0" / "run" / "checkpoints" / "last" / "state.pt").exists()

    results = run_cv(base, out, folds=2, keep_state=True)
    assert first.stat().st_mtime_ns == stamp  # the finished fold was kept, not retrained
    assert (out / "r0-f1" / "run" / "checkpoints" / "last" / "state.pt").is_file()
    assert [r.name for r in results] == ["r0-f0", "r0-f1"]
    for r in results:
        rows = list(csv.DictReader((out / r.name / "split.csv").open()))
        train_ids = {row["pid"] for row in rows if row["split"] == "train"}
        test_ids = {row["pid"] for row in rows if row["split"] != "train"} - {"0"}
        assert train_ids and test_ids and train_ids.isdisjoint(test_ids)
        assert r.counts["test_ids"] == len(test_ids)
    report = json.loads((out / "cv.json").read_text())
    assert report["finished"] == 2 and report["identities"] == 8
    maps = [r.mAP for r in results]
    assert report["summary"]["mAP"]["mean"] == pytest.approx(statistics.fmean(maps))
    assert report["summary"]["mAP"]["std"] == pytest.approx(statistics.stdev(maps))
    md = (out / "cv.md").read_text()
    assert f"{100 * statistics.fmean(maps):.1f} ± {100 * statistics.stdev(maps):.1f}" in md
    assert (out / "cv.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with pytest.raises(ValueError, match="another seed"):
        run_cv(base, out, folds=2, seed=5)


def test_plan_fold_sizes_follow_k(tmp_path):
    base = load_config(SMALL_RUN)
    plan = plan_cv(base, tmp_path / "cv", folds=4, repeats=2)
    assert len(plan.splits) == 8
    for r in (0, 1):
        tests = [set(s.test_pids) for s in plan.splits if s.repeat == r]
        assert set().union(*tests) == set(plan.pool.pids) and sum(map(len, tests)) == 8


def test_cli_errors_are_one_line(tmp_path, capsys):
    args = ["cv", "--config", str(SMALL_RUN), "--out", str(tmp_path / "o")]
    assert main([*args, "--folds", "9"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "only 8 identities" in err
    assert main([*args, "--folds", "2", "--trick", "nonsense"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown trick 'nonsense'" in err


@pytest.mark.usefixtures("one_torch_thread")
def test_ablate_cv_uses_the_same_folds_for_every_row(tmp_path, capsys):
    out = tmp_path / "abl"
    code = main(
        ["ablate", "--config", str(SMALL_RUN), "--variants", "baseline", "of",
         "--cv", "2", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    plans = [json.loads((out / v / "plan.json").read_text()) for v in ("baseline", "of")]
    assert plans[0]["assignment"] == plans[1]["assignment"]
    rows = {
        v: {r["repeat"] * 10 + r["fold"]: r["mAP"] for r in json.loads(
            (out / v / "cv.json").read_text())["fold_results"]}
        for v in ("baseline", "of")
    }  # fmt: skip
    diffs = [rows["of"][k] - rows["baseline"][k] for k in rows["of"]]
    table = (out / "cv_table.md").read_text()
    assert f"{100 * statistics.fmean(diffs):+.1f}" in table
    assert "baseline (XE) + O.F." in table
