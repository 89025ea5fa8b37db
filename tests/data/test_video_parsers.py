"""Video re-ID layouts (MARS, DukeMTMC-VideoReID, iLIDS-VID, PRID2011) on tiny trees built
here: counts, ids and cameras as the layout says; each malformed input names its culprit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from abdnet.data import (
    DatasetError,
    detect_layout,
    detect_video_layout,
    open_video_dataset,
    parse_duke_video,
    parse_ilidsvid,
    parse_mars,
    parse_prid2011,
    sample_frames,
)

RNG = np.random.default_rng(0)


def image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 255, (16, 8, 3), dtype=np.uint8)).save(path)
    return path


def summary(records):
    return [(r.pid, r.camid, len(r)) for r in records]


# --- MARS -----------------------------------------------------------------------------

# (pid text, camera, frames) per tracklet, in the order of the name lists
MARS_TRAIN = [("0001", 1, 2), ("0001", 2, 3), ("0003", 1, 2)]
MARS_TEST = [("0005", 1, 2), ("0005", 2, 2), ("0007", 3, 2), ("0007", 1, 1), ("0000", 2, 1)]
MARS_TEST += [("00-1", 4, 1)]  # junk
MARS_QUERY = [1, 3]  # 1-based test tracklets


def make_mars(root: Path, train=MARS_TRAIN, test=MARS_TEST, query=MARS_QUERY) -> Path:
    info = root / "info"
    info.mkdir(parents=True)
    for split, folder, tracks in (("train", "bbox_train", train), ("test", "bbox_test", test)):
        names, rows = [], []
        for t, (pid, cam, n) in enumerate(tracks, start=1):
            first = len(names) + 1
            for f in range(1, n + 1):
                name = f"{pid}C{cam}T{t:04d}F{f:03d}.jpg"
                image(root / folder / pid / name)
                names.append(name)
            rows.append([first, len(names), -1 if pid.endswith("-1") else int(pid), cam])
        (info / f"{split}_name.txt").write_text("\n".join(names) + "\n")
        savemat(info / f"tracks_{split}_info.mat", {f"track_{split}_info": np.array(rows)})
    savemat(info / "query_IDX.mat", {"query_IDX": np.array([query])})
    return root


def test_mars_tracklets_ids_and_cameras(tmp_path):
    ds = parse_mars(make_mars(tmp_path / "mars"))
    assert ds.pid_map == {1: 0, 3: 1}
    assert summary(ds.train) == [(0, 0, 2), (0, 1, 3), (1, 0, 2)]
    assert summary(ds.query) == [(5, 0, 2), (7, 2, 2)]
    # the other test tracklets, distractor kept, junk dropped
    assert summary(ds.gallery) == [(5, 1, 2), (7, 0, 1), (0, 1, 1)]
    q = ds.query[0]
    assert [Path(p).name for p in q.paths] == ["0005C1T0001F001.jpg", "0005C1T0001F002.jpg"]
    assert all(Path(p).is_file() and Path(p).parent.name == "0005" for p in q.paths)
    assert ds.split_counts()["train"] == (3, 7, 2, 2)
    assert "tracklets" in ds.summary()


def test_mars_row_that_disagrees_with_its_frames_names_the_row(tmp_path):
    root = make_mars(tmp_path / "mars")
    mat = root / "info" / "tracks_test_info.mat"
    rows = np.array([[1, 2, 5, 1], [3, 4, 6, 2]])  # row 2 says pid 6; its frames are pid 5
    savemat(mat, {"track_test_info": rows})
    savemat(root / "info" / "query_IDX.mat", {"query_IDX": np.array([[1]])})
    with pytest.raises(
        DatasetError, match=rf"{mat} row 2: frame 0005C2T0002F001.jpg is not of pid 6"
    ):
        parse_mars(root)


def test_mars_missing_frame_and_bad_query_index_are_named(tmp_path):
    root = make_mars(tmp_path / "a")
    gone = root / "bbox_train" / "0003" / "0003C1T0003F002.jpg"
    gone.unlink()
    with pytest.raises(DatasetError, match=rf"{gone}: missing \(listed in .*train_name.txt\)"):
        parse_mars(root)
    root = make_mars(tmp_path / "b", query=[1, 9])
    with pytest.raises(DatasetError, match=r"query_IDX.mat: query index 9 outside 1..6"):
        parse_mars(root)
    savemat(root / "info" / "query_IDX.mat", {"wrong": np.array([[1]])})
    with pytest.raises(DatasetError, match=r"query_IDX.mat: no array 'query_IDX' \(found: wrong\)"):
        parse_mars(root)


# --- DukeMTMC-VideoReID ---------------------------------------------------------------

# split -> (pid, tracklet, camera, frames)
DUKE = {
    "train": [(1, 1, 1, 3), (1, 2, 4, 2), (2, 3, 2, 2)],
    "query": [(5, 10, 1, 2), (6, 11, 3, 1)],
    "gallery": [(5, 12, 2, 3), (6, 13, 3, 2), (6, 14, 5, 1), (9, 15, 8, 2)],
}


def make_duke_video(root: Path) -> Path:
    for split, tracks in DUKE.items():
        for pid, t, cam, n in tracks:
            for f in range(1, n + 1):
                image(
                    root
                    / split
                    / f"{pid:04d}"
                    / f"{t:04d}"
                    / f"{pid:04d}_C{cam}_F{f:04d}_X{t:05d}.jpg"
                )
    return root


def test_duke_video_tracklets_ids_and_cameras(tmp_path):
    ds = parse_duke_video(make_duke_video(tmp_path / "duke"))
    assert ds.pid_map == {1: 0, 2: 1}
    assert summary(ds.train) == [(0, 0, 3), (0, 3, 2), (1, 1, 2)]
    assert summary(ds.query) == [(5, 0, 2), (6, 2, 1)]
    assert summary(ds.gallery) == [(5, 1, 3), (6, 2, 2), (6, 4, 1), (9, 7, 2)]
    frames = [Path(p).name for p in ds.train[0].paths]
    assert frames == sorted(frames) and frames[0] == "0001_C1_F0001_X00001.jpg"
    assert not ds.unmatched_queries  # query pid 6 (camera 2) has a match in camera 4


def test_duke_video_bad_names_are_named(tmp_path):
    root = make_duke_video(tmp_path / "a")
    bad = image(root / "query" / "0005" / "0010" / "frame1.jpg")
    with pytest.raises(DatasetError, match=rf"{bad}: file name does not match"):
        parse_duke_video(root)
    root = make_duke_video(tmp_path / "b")
    other = image(root / "gallery" / "0009" / "0015" / "0008_C8_F0009_X00015.jpg")
    with pytest.raises(DatasetError, match=rf"{other}: pid 8 in a folder of pid 9"):
        parse_duke_video(root)


def test_duke_video_is_not_taken_for_the_image_folder_layout(tmp_path):
    root = make_duke_video(tmp_path / "duke")
    assert detect_video_layout(root) == ("dukemtmcvidreid", root)
    with pytest.raises(DatasetError, match="a video re-ID data set"):
        detect_layout(root)


# --- iLIDS-VID and PRID2011 -----------------------------------------------------------

ILIDS_PEOPLE = ["person001", "person002", "person004", "person007"]


def make_ilids(root: Path, people=ILIDS_PEOPLE, sets=((3, 1, 2, 4), (2, 4, 1, 3))) -> Path:
    for c, cam in enumerate(("cam1", "cam2")):
        for k, person in enumerate(people):
            for f in range(2 + (k + c) % 3):
                image(
                    root / "i-LIDS-VID" / "sequences" / cam / person / f"{cam}_{person}_{f:05d}.png"
                )
    splits = root / "train-test people splits"
    splits.mkdir(parents=True)
    savemat(splits / "train_test_splits_ilidsvid.mat", {"ls_set": np.array(sets)})
    return root


def test_ilidsvid_split_people_and_cameras(tmp_path):
    root = make_ilids(tmp_path / "ilids")
    ds = parse_ilidsvid(root)
    # split 0: the first half (indices 3, 1) are the test people: person001 and person004
    assert summary(ds.query) == [(1, 0, 2), (4, 0, 4)]
    assert summary(ds.gallery) == [(1, 1, 3), (4, 1, 2)]
    assert ds.pid_map == {2: 0, 7: 1}
    assert summary(ds.train) == [(0, 0, 3), (0, 1, 4), (1, 0, 2), (1, 1, 3)]
    ds1 = parse_ilidsvid(root, split=1)
    assert {r.pid for r in ds1.query} == {2, 7}
    with pytest.raises(DatasetError, match="split 2 asked for, the file has 2"):
        parse_ilidsvid(root, split=2)


def test_ilidsvid_errors_name_the_file(tmp_path):
    root = make_ilids(tmp_path / "a", sets=((1, 2, 3),))
    with pytest.raises(DatasetError, match=r"train_test_splits_ilidsvid.mat: ls_set must have"):
        parse_ilidsvid(root)
    root = make_ilids(tmp_path / "b")
    image(root / "i-LIDS-VID" / "sequences" / "cam1" / "person009" / "x.png")
    missing = root / "i-LIDS-VID" / "sequences" / "cam2" / "person009"
    with pytest.raises(DatasetError, match=rf"{missing}: missing"):
        parse_ilidsvid(root)


PRID_SPLITS = [
    {"train": ["person_0001", "person_0002"], "test": ["person_0003", "person_0004"]},
    {"train": ["person_0003", "person_0004"], "test": ["person_0001", "person_0002"]},
]


def make_prid(root: Path, splits=PRID_SPLITS) -> Path:
    for cam, people in (("cam_a", 4), ("cam_b", 5)):
        for k in range(1, people + 1):
            for f in range(1, 2 + k % 3):
                image(root / "prid_2011" / "multi_shot" / cam / f"person_{k:04d}" / f"{f:04d}.png")
    (root / "splits_prid2011.json").write_text(json.dumps(splits))
    return root


def test_prid2011_split_people_and_cameras(tmp_path):
    ds = parse_prid2011(make_prid(tmp_path / "prid"))
    assert summary(ds.query) == [(3, 0, 1), (4, 0, 2)]
    assert summary(ds.gallery) == [(3, 1, 1), (4, 1, 2)]
    assert ds.pid_map == {1: 0, 2: 1}
    assert summary(ds.train) == [(0, 0, 2), (0, 1, 2), (1, 0, 3), (1, 1, 3)]
    assert {r.pid for r in parse_prid2011(tmp_path / "prid", split=1).query} == {1, 2}


def test_prid2011_errors_name_the_file(tmp_path):
    root = make_prid(tmp_path / "a", splits=[{"train": ["person_0001"], "test": ["person_0005"]}])
    missing = root / "prid_2011" / "multi_shot" / "cam_a" / "person_0005"
    with pytest.raises(DatasetError, match=rf"{missing}: missing \(in split 0 of"):
        parse_prid2011(root)
    (root / "splits_prid2011.json").write_text('[{"train": [\n')
    with pytest.raises(DatasetError, match=r"splits_prid2011.json:2: not JSON"):
        parse_prid2011(root)


# --- detection and sampling -----------------------------------------------------------


def test_each_layout_is_detected_at_its_root_and_from_its_parent(tmp_path):
    roots = {
        "mars": make_mars(tmp_path / "m" / "MARS"),
        "dukemtmcvidreid": make_duke_video(tmp_path / "d" / "DukeMTMC-VideoReID"),
        "ilidsvid": make_ilids(tmp_path / "i" / "ilids-vid"),
        "prid2011": make_prid(tmp_path / "p" / "prid2011"),
    }
    for kind, root in roots.items():
        assert detect_video_layout(root) == (kind, root)
        assert detect_video_layout(root.parent) == (kind, root)
        assert open_video_dataset(root.parent).name == kind
    assert detect_video_layout(tmp_path) is None  # four levels up: nothing here
    with pytest.raises(DatasetError, match="no video re-ID layout"):
        open_video_dataset(tmp_path)


def test_sample_frames_all_or_evenly():
    assert sample_frames(5).tolist() == [0, 1, 2, 3, 4]
    assert sample_frames(5, 8).tolist() == [0, 1, 2, 3, 4]
    assert sample_frames(10, 4).tolist() == [0, 3, 6, 9]
    assert sample_frames(7, 1).tolist() == [0]
    for n in range(1, 30):
        for k in range(1, n + 1):
            idx = sample_frames(n, k)
            assert len(np.unique(idx)) == k and idx[0] == 0 and (k == 1 or idx[-1] == n - 1)
