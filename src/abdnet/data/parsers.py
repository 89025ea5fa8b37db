"""Parsers for the paper's data sets and two custom formats, with layout auto-detection.

Every parser returns a validated ``ReIDDataset`` (see ``dataset.py`` for the conventions:
0-based camids, relabelled training pids, junk dropped, distractors kept) and raises
``DatasetError`` naming the first offending file or the missing folder.

Formats
- Market-1501: ``bounding_box_train/``, ``query/``, ``bounding_box_test/`` with names
  ``0002_c1s1_000451_03.jpg`` (pid, camera 1-based, sequence, frame, box). pid -1 = junk
  (dropped), pid 0 = distractor (kept in the gallery, dropped from train and query).
- DukeMTMC-reID: the same folders, names ``0001_c2_f0046182.jpg``.
- MSMT17: ``list_{train,val,query,gallery}.txt`` with lines ``<pid>/<file> <pid>``, images
  under ``train/`` + ``test/`` (V1) or ``mask_train_v2/`` + ``mask_test_v2/`` (V2); file
  names ``0000_000_01_0303morning_0015_0.jpg`` whose third field is the 1-based camera.
  Training uses ``list_train.txt`` only unless ``combine_val=True`` (torchreid and
  fast-reid keep val out by default for comparability with published numbers). Without
  ``list_train.txt`` the training folder is scanned as ``<pid>/<file>``.
- Folder tree: ``ROOT/{train,query,gallery}/<pid>/<camid>_<anything>.<ext>``.
- CSV: header ``path,pid,camid,split`` (split in train/query/gallery), paths relative to
  the CSV file's folder (or absolute).
- Synthetic output (``abdnet synth``): Market-1501 layout plus the marker file
  ``SYNTHETIC_MARKER``; auto-detection names it ``synthetic``.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path
from typing import Any

from abdnet.config import DataConfig, DatasetName, SyntheticConfig, choices
from abdnet.evaluation import JUNK_PID

from .dataset import DatasetError, ImageRecord, ReIDDataset, images_in, make_dataset
from .images import IMAGE_EXTENSIONS
from .names import DUKE_EXAMPLE, DUKE_STEM, MARKET_EXAMPLE, MARKET_STEM
from .synthetic import SYNTHETIC_MARKER, SyntheticReID
from .video_parsers import detect_video_layout

__all__ = [
    "DATASET_NAMES",
    "parse_market1501",
    "parse_dukemtmc",
    "parse_msmt17",
    "parse_folder",
    "parse_csv",
    "detect_layout",
    "open_dataset",
    "build_dataset",
]

log = logging.getLogger(__name__)

# The named layouts (``data.name``; "auto" detects one of them).
DATASET_NAMES = tuple(n for n in choices(DatasetName) if n != "auto")

_MARKET_FOLDERS = ("bounding_box_train", "query", "bounding_box_test")


def _require(path: Path, what: str = "folder") -> Path:
    if not (path.is_dir() if what == "folder" else path.is_file()):
        raise DatasetError(f"missing {what}: {path}")
    return path


def _parse_market_style(
    root: Path,
    name: str,
    pattern: re.Pattern[str],
    example: str,
    skip_bad: bool,
    input_size: tuple[int, int] | None,
) -> ReIDDataset:
    splits: dict[str, list[ImageRecord]] = {}
    for split, folder in zip(("train", "query", "gallery"), _MARKET_FOLDERS, strict=True):
        records = []
        junk = distractors = 0
        for path in images_in(root / folder):
            m = pattern.match(path.stem)
            if m is None:
                raise DatasetError(
                    f"{path}: file name does not match the {name} pattern (e.g. {example})"
                )
            pid, cam = int(m.group("pid")), int(m.group("cam"))
            if pid == JUNK_PID:
                junk += 1
                continue
            if pid < 0 or cam < 1:
                raise DatasetError(
                    f"{path}: pid must be >= -1 and camera >= 1 (got pid {pid}, camera {cam})"
                )
            if pid == 0 and split != "gallery":
                distractors += 1
                continue
            records.append(ImageRecord(str(path), pid, cam - 1))
        if junk or distractors:
            log.info(
                "%s/%s: dropped %d junk (pid -1) and %d distractor (pid 0) images",
                name,
                folder,
                junk,
                distractors,
            )
        splits[split] = records
    return make_dataset(
        name, root, splits["train"], splits["query"], splits["gallery"],
        skip_bad=skip_bad, input_size=input_size,
    )  # fmt: skip


def parse_market1501(
    root: str | Path,
    *,
    name: str = "market1501",
    skip_bad: bool = False,
    input_size: tuple[int, int] | None = None,
) -> ReIDDataset:
    """Market-1501 (Zheng et al. 2015) folder layout."""
    return _parse_market_style(Path(root), name, MARKET_STEM, MARKET_EXAMPLE, skip_bad, input_size)


def parse_dukemtmc(
    root: str | Path,
    *,
    name: str = "dukemtmcreid",
    skip_bad: bool = False,
    input_size: tuple[int, int] | None = None,
) -> ReIDDataset:
    """DukeMTMC-reID (Zheng et al. 2017) folder layout."""
    return _parse_market_style(Path(root), name, DUKE_STEM, DUKE_EXAMPLE, skip_bad, input_size)


def _msmt_camid(path: Path, where: str) -> int:
    parts = path.stem.split("_")
    if len(parts) < 3 or not parts[2].isdigit() or int(parts[2]) < 1:
        raise DatasetError(
            f"{where}: file name {path.name} has no 1-based camera as its third '_' field"
        )
    return int(parts[2]) - 1


def _msmt_list(list_file: Path, image_dir: Path) -> list[ImageRecord]:
    records = []
    for lineno, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{list_file}:{lineno}"
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise DatasetError(f"{where}: expected '<relative path> <pid>', got {line!r}")
        path = image_dir / fields[0]
        records.append(ImageRecord(str(path), int(fields[1]), _msmt_camid(path, where)))
    return records


def parse_msmt17(
    root: str | Path,
    *,
    name: str = "msmt17",
    combine_val: bool = False,
    skip_bad: bool = False,
    input_size: tuple[int, int] | None = None,
) -> ReIDDataset:
    """MSMT17 (Wei et al. 2018), V1 or V2 directory names, list files for query/gallery."""
    root = Path(root)
    for sub in ("MSMT17_V1", "MSMT17_V2"):  # accept the parent folder as root too
        if (root / sub).is_dir() and not (root / "list_query.txt").is_file():
            root = root / sub
            break
    if (root / "mask_train_v2").is_dir():
        train_dir, test_dir = root / "mask_train_v2", root / "mask_test_v2"
    else:
        train_dir, test_dir = root / "train", root / "test"
    _require(train_dir)
    _require(test_dir)
    list_train = root / "list_train.txt"
    if list_train.is_file():
        train = _msmt_list(list_train, train_dir)
        if combine_val:
            train += _msmt_list(_require(root / "list_val.txt", "file"), train_dir)
    else:
        # V2 folder layout without lists: train_dir/<pid>/<pid>_<seq>_<cam>_....jpg
        train = []
        for pid_dir in sorted(p for p in train_dir.iterdir() if p.is_dir()):
            if not pid_dir.name.isdigit():
                raise DatasetError(f"{pid_dir}: identity folder name must be an integer pid")
            for path in images_in(pid_dir):
                train.append(
                    ImageRecord(str(path), int(pid_dir.name), _msmt_camid(path, str(path)))
                )
    query = _msmt_list(_require(root / "list_query.txt", "file"), test_dir)
    gallery = _msmt_list(_require(root / "list_gallery.txt", "file"), test_dir)
    return make_dataset(name, root, train, query, gallery, skip_bad=skip_bad, input_size=input_size)


def parse_folder(
    root: str | Path,
    *,
    name: str = "folder",
    skip_bad: bool = False,
    input_size: tuple[int, int] | None = None,
) -> ReIDDataset:
    """``ROOT/{train,query,gallery}/<pid>/<camid>_<anything>.<ext>`` (camid as written, >= 0)."""
    root = Path(root)
    splits: dict[str, list[ImageRecord]] = {}
    for split in ("train", "query", "gallery"):
        records = []
        for pid_dir in sorted(p for p in _require(root / split).iterdir() if p.is_dir()):
            if not re.fullmatch(r"-?\d+", pid_dir.name):
                raise DatasetError(f"{pid_dir}: identity folder name must be an integer pid")
            pid = int(pid_dir.name)
            if pid < JUNK_PID:
                raise DatasetError(f"{pid_dir}: pid must be >= -1 (-1 = junk), got {pid}")
            for path in images_in(pid_dir):
                m = re.match(r"^(\d+)_", path.name)
                if m is None:
                    raise DatasetError(
                        f"{path}: file name must start with '<camid>_' (e.g. 0_0001.jpg)"
                    )
                if pid != JUNK_PID:
                    records.append(ImageRecord(str(path), pid, int(m.group(1))))
        splits[split] = records
    return make_dataset(
        name, root, splits["train"], splits["query"], splits["gallery"],
        skip_bad=skip_bad, input_size=input_size,
    )  # fmt: skip


def parse_csv(
    path: str | Path,
    *,
    name: str = "csv",
    skip_bad: bool = False,
    input_size: tuple[int, int] | None = None,
) -> ReIDDataset:
    """A CSV with header ``path,pid,camid,split``; relative paths start at the CSV's folder."""
    path = Path(path)
    _require(path, "file")
    expected = ["path", "pid", "camid", "split"]
    splits: dict[str, list[ImageRecord]] = {"train": [], "query": [], "gallery": []}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in expected if c not in header]
        if missing:
            raise DatasetError(
                f"{path}: missing column(s) {', '.join(missing)}; expected header {','.join(expected)}"
            )
        for row in reader:
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            where = f"{path}:{reader.line_num}"
            try:
                pid, camid = int(row["pid"]), int(row["camid"])
            except ValueError:
                raise DatasetError(
                    f"{where}: pid and camid must be integers, got {row['pid']!r}, {row['camid']!r}"
                ) from None
            split = row["split"]
            if split not in splits:
                raise DatasetError(f"{where}: split must be train, query or gallery, got {split!r}")
            if not row["path"]:
                raise DatasetError(f"{where}: empty path")
            if pid < JUNK_PID or camid < 0:
                raise DatasetError(f"{where}: pid must be >= -1 and camid >= 0, got {pid}, {camid}")
            if pid == JUNK_PID:
                continue
            image = Path(row["path"])
            image = image if image.is_absolute() else path.parent / image
            splits[split].append(ImageRecord(str(image), pid, camid))
    return make_dataset(
        name, path, splits["train"], splits["query"], splits["gallery"],
        skip_bad=skip_bad, input_size=input_size,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------
# auto-detection


def _first_image_stem(folder: Path) -> str | None:
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            return p.stem
    return None


def _detect_here(root: Path) -> str | None:
    if root.is_file():
        return "csv" if root.suffix.lower() == ".csv" else None
    if not root.is_dir():
        return None
    if all((root / f).is_dir() for f in _MARKET_FOLDERS):
        if (root / SYNTHETIC_MARKER).is_file():
            return "synthetic"
        stem = _first_image_stem(root / "bounding_box_train") or ""
        if DUKE_STEM.match(stem) or "duke" in root.name.lower():
            return "dukemtmcreid"
        return "market1501"
    if (root / "list_query.txt").is_file() and (root / "list_gallery.txt").is_file():
        return "msmt17"
    if all((root / f).is_dir() for f in ("train", "query", "gallery")):
        return "folder"
    csvs = sorted(root.glob("*.csv"))
    if len(csvs) == 1:
        return "csv"
    return None


def detect_layout(root: str | Path) -> tuple[str, Path]:
    """Which format ``root`` holds: ``(name, resolved_root)``.

    Looks at ``root`` itself, then at its immediate sub-folders (so the folder that holds
    ``Market-1501-v15.09.15/`` works too). A CSV layout resolves to the CSV file.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"data set root not found: {root}")
    candidates = [root] + (sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else [])
    found = [(kind, p) for p in candidates if (kind := _detect_here(p)) is not None]
    try:
        video = detect_video_layout(root)
    except DatasetError:  # several video sets: none of them is the one asked for here
        video = None
    # DukeMTMC-VideoReID would otherwise pass for the folder layout
    if video is not None and (not found or video[1] in {p for _, p in found}):
        raise DatasetError(
            f"{root}: a video re-ID data set ({video[0]} at {video[1]}); 'abdnet eval --data' "
            "scores it tracklet to tracklet, the other commands take image data sets"
        )
    if not found:
        raise DatasetError(
            f"{root}: no known data set layout (Market-1501/DukeMTMC folders bounding_box_train, query, "
            "bounding_box_test; MSMT17 list_query.txt + list_gallery.txt; folder train/query/gallery; "
            "or a .csv file)"
        )
    if found[0][1] != root and len(found) > 1:
        raise DatasetError(
            f"{root}: several data sets found ({', '.join(str(p) for _, p in found)}); pass one of them"
        )
    kind, where = found[0]
    if kind == "csv" and where.is_dir():
        where = next(iter(sorted(where.glob("*.csv"))))
    return kind, where


def _parse(kind: str, root: Path, **kw: Any) -> ReIDDataset:
    if kind in ("market1501", "synthetic"):
        return parse_market1501(root, name=kind, **kw)
    if kind == "dukemtmcreid":
        return parse_dukemtmc(root, **kw)
    if kind == "msmt17":
        return parse_msmt17(root, **kw)
    if kind == "folder":
        return parse_folder(root, **kw)
    if kind == "csv":
        return parse_csv(root, **kw)
    raise ValueError(
        f"data.name: unknown data set {kind!r}; expected one of {', '.join(DATASET_NAMES)} or 'auto'"
    )


def open_dataset(name_or_root: str | Path, **kw: Any) -> ReIDDataset:
    """A data set by built-in name or by path (layout auto-detected).

    - ``open_dataset("synthetic", ids=40, cams=4, ...)``: the in-memory synthetic set
      (keyword arguments are ``SyntheticConfig`` fields, or ``config=SyntheticConfig(...)``);
      with ``root=DIR``: the set ``abdnet synth`` wrote to DIR.
    - ``open_dataset("market1501", root=PATH)`` (also dukemtmcreid, msmt17, folder, csv):
      that parser on ``root``; ``root`` may also be a folder that contains the data set.
    - ``open_dataset(PATH)``: auto-detect (see ``detect_layout``); ``synth`` output is
      recognised by its marker file and named ``synthetic``.
    Remaining keywords go to the parser (e.g. ``combine_val`` for msmt17).
    """
    name = str(name_or_root)
    if name == "synthetic" and kw.get("root"):
        # a set written by ``abdnet synth``: read it from disk
        root = Path(kw.pop("root")).expanduser()
        kind, where = detect_layout(root)
        if kind != "synthetic":
            raise DatasetError(
                f"{root}: not a synthetic set written by `abdnet synth` (no {SYNTHETIC_MARKER})"
            )
        return _parse(kind, where, **kw)
    if name == "synthetic":
        kw.pop("root", None)
        # rendered in memory: no files to check
        kw.pop("skip_bad", None)
        kw.pop("input_size", None)
        config = kw.pop("config", None)
        if config is None:
            unknown = sorted(set(kw) - set(SyntheticConfig.__dataclass_fields__))
            if unknown:
                raise ValueError(
                    f"open_dataset('synthetic'): unknown option(s) {', '.join(unknown)}; "
                    f"expected SyntheticConfig fields {', '.join(SyntheticConfig.__dataclass_fields__)}"
                )
            config = SyntheticConfig(**kw)
        return SyntheticReID(config).dataset()
    if name in DATASET_NAMES or name == "auto":
        root = kw.pop("root", None)
        if not root:
            raise ValueError(f"data.root: data set {name!r} needs a root folder (or CSV file)")
        if name == "auto":
            kind, where = detect_layout(root)
            return _parse(kind, where, **kw)
        where = Path(root).expanduser()
        if not where.exists():
            raise DatasetError(f"data set root not found: {where}")
        if _detect_here(where) is None and where.is_dir():
            # The user pointed at the folder that contains the data set.
            inner = [
                p for p in sorted(where.iterdir()) if p.is_dir() and _detect_here(p) is not None
            ]
            if len(inner) == 1:
                where = inner[0]
        if name == "csv" and where.is_dir():
            _, where = detect_layout(where)
        return _parse(name, where, **kw)
    if not Path(name).expanduser().exists():
        raise ValueError(
            f"data set {name!r}: neither a built-in name ({', '.join(DATASET_NAMES)}) nor an existing path"
        )
    kind, where = detect_layout(name)
    return _parse(kind, where, **kw)


def build_dataset(cfg: DataConfig) -> ReIDDataset:
    """The data set a ``DataConfig`` names (``name`` + ``root``).

    ``name: synthetic`` renders ``cfg.synthetic`` in memory, or reads ``root`` when it is
    set (a folder written by ``abdnet synth``); ``name: auto`` detects the layout of ``root``.
    """
    # every image file is checked; unreadable ones are an error or (skip_bad) left out
    checks: dict[str, Any] = {"skip_bad": cfg.skip_bad, "input_size": (cfg.height, cfg.width)}
    if cfg.name == "synthetic":
        if cfg.root:
            log.info(
                "data.name is synthetic with data.root=%r: reading the written set (data.synthetic unused)",
                cfg.root,
            )
            return open_dataset("synthetic", root=cfg.root, **checks)
        return open_dataset("synthetic", config=cfg.synthetic)
    if cfg.name not in DATASET_NAMES and cfg.name != "auto":
        raise ValueError(
            f"data.name: unknown data set {cfg.name!r}; expected one of {', '.join(DATASET_NAMES)} or 'auto'"
        )
    return open_dataset(cfg.name, root=cfg.root, **checks)
