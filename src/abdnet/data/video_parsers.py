"""Parsers of the video re-ID data sets, with layout detection; each returns a validated
``TrackletDataset`` (``tracklets.py``) and raises ``DatasetError`` naming the file at fault.

Layouts (those torchreid documents; ROOT is the folder given, or its parent):

- MARS: ``bbox_train/<pid>/<name>.jpg``, ``bbox_test/<pid>/<name>.jpg`` with names
  ``0001C1T0001F001.jpg``, and ``info/``: ``train_name.txt`` / ``test_name.txt`` (the frame
  names in order), ``tracks_train_info.mat`` / ``tracks_test_info.mat`` (arrays
  ``track_train_info`` / ``track_test_info``, one row per tracklet: first and last frame,
  1-based and inclusive, into the name list, then pid and 1-based camera) and
  ``query_IDX.mat`` (``query_IDX``: the 1-based test tracklets that are queries; the other
  test tracklets are the gallery). Junk tracklets (pid -1) are dropped; distractors (pid 0)
  stay in the gallery and leave the query.
- DukeMTMC-VideoReID: ``{train,query,gallery}/<pid>/<tracklet>/*.jpg`` with names
  ``0001_C2_F0001_X00001.jpg`` (the camera is the name's ``C`` field, 1-based).
- iLIDS-VID: ``i-LIDS-VID/sequences/{cam1,cam2}/personNNN/*.png`` and the splits
  ``train-test people splits/train_test_splits_ilidsvid.mat`` (array ``ls_set``, one row per
  split of the 1-based indices of the sorted person folders: the first half are test people,
  the second half training people). Test people: cam1 is the query, cam2 the gallery.
- PRID2011: ``prid_2011/multi_shot/{cam_a,cam_b}/person_NNNN/*.png`` and
  ``splits_prid2011.json`` (a list of splits ``{"train": [folder, ...], "test": [...]}``).
  Test people: cam_a is the query, cam_b the gallery.

In iLIDS-VID and PRID2011 the pid is the number in the person folder's name. Frame files
are listed (so a missing one is an error here), not opened.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import DatasetError, images_in
from .names import DUKE_VIDEO_EXAMPLE, DUKE_VIDEO_STEM, MARS_EXAMPLE, MARS_STEM
from .tracklets import TrackletDataset, TrackletRecord, make_tracklet_dataset

__all__ = [
    "VIDEO_DATASET_NAMES",
    "parse_mars",
    "parse_duke_video",
    "parse_ilidsvid",
    "parse_prid2011",
    "detect_video_layout",
    "open_video_dataset",
]

log = logging.getLogger(__name__)

VIDEO_DATASET_NAMES = ("mars", "dukemtmcvidreid", "ilidsvid", "prid2011")

_ILIDS_SPLITS = Path("train-test people splits") / "train_test_splits_ilidsvid.mat"
_PRID_SPLITS = "splits_prid2011.json"


def _require(path: Path, what: str = "folder") -> Path:
    if not (path.is_dir() if what == "folder" else path.is_file()):
        raise DatasetError(f"missing {what}: {path}")
    return path


def _load_mat(path: Path, key: str) -> np.ndarray:
    """Array ``key`` of the MATLAB file ``path`` (scipy reads MATLAB v4 to v7.2 files)."""
    from scipy.io import loadmat

    _require(path, "file")
    try:
        data = loadmat(str(path))
    except NotImplementedError:
        raise DatasetError(f"{path}: a MATLAB v7.3 file; save it as v7 or older") from None
    except Exception as exc:  # scipy raises several types for a damaged file
        raise DatasetError(f"{path}: not a readable .mat file ({exc})") from None
    if key not in data:
        found = ", ".join(k for k in data if not k.startswith("__")) or "none"
        raise DatasetError(f"{path}: no array {key!r} (found: {found})")
    return np.asarray(data[key])


def _mars_pid(text: str) -> int:
    return -1 if text.endswith("-1") else int(text)


def _mars_split(root: Path, folder: str, names_file: Path, tracks: np.ndarray, mat: Path):
    """``(tracklet, mat row)`` of each tracklet row of ``tracks``, junk included."""
    names = [n.strip() for n in _require(names_file, "file").read_text().splitlines()]
    names = [n for n in names if n]
    if tracks.ndim != 2 or tracks.shape[1] < 4:
        raise DatasetError(
            f"{mat}: expected one row per tracklet (start, end, pid, camera), got shape {tracks.shape}"
        )
    listing: dict[str, set[str]] = {}
    out = []
    for row, (start, end, pid, cam) in enumerate(tracks[:, :4].astype(np.int64).tolist(), 1):
        where = f"{mat} row {row}"
        if not 1 <= start <= end <= len(names):
            raise DatasetError(
                f"{where}: frames {start}..{end} outside 1..{len(names)} (the names of {names_file})"
            )
        if cam < 1:
            raise DatasetError(f"{where}: camera must be >= 1, got {cam}")
        paths = []
        for name in names[start - 1 : end]:
            m = MARS_STEM.match(Path(name).stem)
            if m is None:
                raise DatasetError(
                    f"{names_file}: {name} does not match the MARS pattern (e.g. {MARS_EXAMPLE})"
                )
            if _mars_pid(m.group("pid")) != pid or int(m.group("cam")) != cam:
                raise DatasetError(
                    f"{where}: frame {name} is not of pid {pid}, camera {cam} as the row says"
                )
            sub = root / folder / name[:4]
            if sub.name not in listing:
                listing[sub.name] = {p.name for p in sub.iterdir()} if sub.is_dir() else set()
            if name not in listing[sub.name]:
                raise DatasetError(f"{sub / name}: missing (listed in {names_file})")
            paths.append(str(sub / name))
        out.append(TrackletRecord(tuple(paths), pid, cam - 1))
    return out


def parse_mars(root: str | Path, *, name: str = "mars") -> TrackletDataset:
    """MARS (Zheng et al. 2016): 1,261 people, 6 cameras, tracklets from a detector."""
    root = Path(root)
    info = _require(root / "info")
    train_mat, test_mat = info / "tracks_train_info.mat", info / "tracks_test_info.mat"
    train = _mars_split(
        root, "bbox_train", info / "train_name.txt", _load_mat(train_mat, "track_train_info"),
        train_mat,
    )  # fmt: skip
    test = _mars_split(
        root, "bbox_test", info / "test_name.txt", _load_mat(test_mat, "track_test_info"),
        test_mat,
    )  # fmt: skip
    query_mat = info / "query_IDX.mat"
    idx = _load_mat(query_mat, "query_IDX").astype(np.int64).reshape(-1)
    bad = idx[(idx < 1) | (idx > len(test))]
    if bad.size:
        raise DatasetError(
            f"{query_mat}: query index {int(bad[0])} outside 1..{len(test)} (the test tracklets)"
        )
    is_query = np.zeros(len(test), dtype=bool)
    is_query[idx - 1] = True
    junk = sum(r.pid == -1 for r in train + test)
    distractor_queries = sum(r.pid == 0 for r, q in zip(test, is_query) if q)
    if junk or distractor_queries:
        log.info(
            "mars: dropped %d junk tracklets (pid -1) and %d distractor (pid 0) queries",
            junk,
            distractor_queries,
        )
    query = [r for r, q in zip(test, is_query) if q and r.pid > 0]
    gallery = [r for r, q in zip(test, is_query) if not q and r.pid != -1]
    return make_tracklet_dataset(name, str(root), [r for r in train if r.pid > 0], query, gallery)


def parse_duke_video(root: str | Path, *, name: str = "dukemtmcvidreid") -> TrackletDataset:
    """DukeMTMC-VideoReID (Wu et al. 2018): ``{train,query,gallery}/<pid>/<tracklet>/``."""
    root = Path(root)
    splits: dict[str, list[TrackletRecord]] = {}
    empty: list[Path] = []
    for split in ("train", "query", "gallery"):
        records = []
        for pid_dir in sorted(p for p in _require(root / split).iterdir() if p.is_dir()):
            if not pid_dir.name.isdigit():
                raise DatasetError(f"{pid_dir}: identity folder name must be an integer pid")
            pid = int(pid_dir.name)
            for t_dir in sorted(p for p in pid_dir.iterdir() if p.is_dir()):
                frames = images_in(t_dir)
                if not frames:
                    empty.append(t_dir)
                    continue
                cams = set()
                for f in frames:
                    m = DUKE_VIDEO_STEM.match(f.stem)
                    if m is None:
                        raise DatasetError(
                            f"{f}: file name does not match the DukeMTMC-VideoReID pattern "
                            f"(e.g. {DUKE_VIDEO_EXAMPLE})"
                        )
                    if int(m.group("pid")) != pid:
                        raise DatasetError(
                            f"{f}: pid {int(m.group('pid'))} in a folder of pid {pid}"
                        )
                    cams.add(int(m.group("cam")))
                if len(cams) > 1 or min(cams) < 1:
                    raise DatasetError(
                        f"{t_dir}: a tracklet's frames need one camera >= 1, got {sorted(cams)}"
                    )
                records.append(TrackletRecord(tuple(map(str, frames)), pid, cams.pop() - 1))
        splits[split] = records
    if empty:
        log.warning(
            "%s: %d tracklet folder(s) hold no image and are left out; first: %s",
            name,
            len(empty),
            empty[0],
        )
    return make_tracklet_dataset(
        name, str(root), splits["train"], splits["query"], splits["gallery"]
    )


def _person_number(folder: Path) -> int:
    digits = re.sub(r"\D", "", folder.name)
    if not digits:
        raise DatasetError(f"{folder}: a person folder's name must hold its number")
    return int(digits)


def _camera_people(cams: list[Path]) -> list[str]:
    """The person folders of the first camera, checked to be those of the others."""
    people = [sorted(p.name for p in _require(c).iterdir() if p.is_dir()) for c in cams]
    for cam, names in zip(cams[1:], people[1:]):
        missing = sorted(set(people[0]) ^ set(names))
        if missing:
            where = cams[0] if missing[0] not in people[0] else cam
            raise DatasetError(f"{where / missing[0]}: missing (each person needs every camera)")
    return people[0]


def _two_camera_split(
    name: str,
    root: Path,
    cams: list[Path],
    train_people: list[str],
    test_people: list[str],
) -> TrackletDataset:
    """Training people in both cameras; test people: camera 0 queries, camera 1 gallery."""

    def tracklet(person: str, cam: int) -> TrackletRecord:
        folder = cams[cam] / person
        frames = images_in(_require(folder))
        if not frames:
            raise DatasetError(f"{folder}: no image in a person's folder")
        return TrackletRecord(tuple(map(str, frames)), _person_number(folder), cam)

    train = [tracklet(p, c) for p in train_people for c in (0, 1)]
    query = [tracklet(p, 0) for p in test_people]
    gallery = [tracklet(p, 1) for p in test_people]
    return make_tracklet_dataset(name, str(root), train, query, gallery)


def parse_ilidsvid(root: str | Path, *, split: int = 0, name: str = "ilidsvid") -> TrackletDataset:
    """iLIDS-VID (Wang et al. 2014): 300 people, 2 cameras, ten train/test splits."""
    root = Path(root)
    seqs = _require(root / "i-LIDS-VID" / "sequences")
    cams = [seqs / "cam1", seqs / "cam2"]
    people = _camera_people(cams)
    mat = root / _ILIDS_SPLITS
    if not mat.is_file() and (root / _ILIDS_SPLITS.name).is_file():
        mat = root / _ILIDS_SPLITS.name
    sets = _load_mat(mat, "ls_set").astype(np.int64)
    if sets.ndim != 2 or sets.shape[1] != len(people) or sets.shape[1] % 2:
        raise DatasetError(
            f"{mat}: ls_set must have one row per split of {len(people)} person indices "
            f"(the person folders of {cams[0]}, an even number), got shape {sets.shape}"
        )
    if not 0 <= split < sets.shape[0]:
        raise DatasetError(f"{mat}: split {split} asked for, the file has {sets.shape[0]}")
    row = sets[split]
    if sorted(row.tolist()) != list(range(1, len(people) + 1)):
        raise DatasetError(f"{mat}: split {split} is not each of the indices 1..{len(people)} once")
    half = len(people) // 2
    test = [people[i - 1] for i in sorted(row[:half].tolist())]
    train = [people[i - 1] for i in sorted(row[half:].tolist())]
    return _two_camera_split(name, root, cams, train, test)


def parse_prid2011(root: str | Path, *, split: int = 0, name: str = "prid2011") -> TrackletDataset:
    """PRID2011 (Hirzer et al. 2011), multi-shot: the people of both cameras, ten splits."""
    root = Path(root)
    shots = _require(root / "prid_2011" / "multi_shot")
    cams = [shots / "cam_a", shots / "cam_b"]
    path = _require(root / _PRID_SPLITS, "file")
    try:
        splits: Any = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}:{exc.lineno}: not JSON ({exc.msg})") from None
    if not isinstance(splits, list) or not splits:
        raise DatasetError(f"{path}: expected a list of splits {{'train': [...], 'test': [...]}}")
    if not 0 <= split < len(splits):
        raise DatasetError(f"{path}: split {split} asked for, the file has {len(splits)}")
    chosen = splits[split]
    lists = {}
    for key in ("train", "test"):
        value = chosen.get(key) if isinstance(chosen, dict) else None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise DatasetError(
                f"{path}: split {split} needs '{key}': a list of person folder names"
            )
        for person in value:
            for cam in cams:
                if not (cam / person).is_dir():
                    raise DatasetError(f"{cam / person}: missing (in split {split} of {path})")
        lists[key] = value
    overlap = sorted(set(lists["train"]) & set(lists["test"]))
    if overlap:
        raise DatasetError(f"{path}: split {split}: {overlap[0]} is in both train and test")
    return _two_camera_split(name, root, cams, lists["train"], lists["test"])


# ---------------------------------------------------------------------------------------
# detection


def _is_duke_video(root: Path) -> bool:
    if not all((root / s).is_dir() for s in ("train", "query", "gallery")):
        return False
    pid_dir = next((p for p in sorted((root / "train").iterdir()) if p.is_dir()), None)
    return pid_dir is not None and any(p.is_dir() for p in pid_dir.iterdir())


def _detect_here(root: Path) -> str | None:
    if not root.is_dir():
        return None
    if (root / "info").is_dir() and (
        (root / "bbox_train").is_dir() or (root / "bbox_test").is_dir()
    ):
        return "mars"
    if (root / "i-LIDS-VID" / "sequences").is_dir():
        return "ilidsvid"
    if (root / "prid_2011" / "multi_shot").is_dir():
        return "prid2011"
    if _is_duke_video(root):
        return "dukemtmcvidreid"
    return None


def detect_video_layout(root: str | Path) -> tuple[str, Path] | None:
    """``(name, resolved_root)`` of the video data set at ``root`` (or in one of its
    immediate sub-folders), or None when ``root`` holds none."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return None
    kind = _detect_here(root)
    if kind is not None:
        return kind, root
    found = [(k, p) for p in sorted(root.iterdir()) if (k := _detect_here(p)) is not None]
    if len(found) > 1:
        raise DatasetError(
            f"{root}: several video data sets found ({', '.join(str(p) for _, p in found)}); "
            "pass one of them"
        )
    return found[0] if found else None


def open_video_dataset(root: str | Path, *, split: int = 0) -> TrackletDataset:
    """The video data set at ``root``, its layout detected; ``split`` chooses the train/test
    split of iLIDS-VID and PRID2011 (the others have one)."""
    found = detect_video_layout(root)
    if found is None:
        raise DatasetError(
            f"{root}: no video re-ID layout (MARS info/ + bbox_train/; DukeMTMC-VideoReID "
            "train/query/gallery/<pid>/<tracklet>/; iLIDS-VID i-LIDS-VID/sequences/; PRID2011 "
            "prid_2011/multi_shot/)"
        )
    kind, where = found
    if kind == "mars":
        return parse_mars(where)
    if kind == "dukemtmcvidreid":
        return parse_duke_video(where)
    if kind == "ilidsvid":
        return parse_ilidsvid(where, split=split)
    return parse_prid2011(where, split=split)
