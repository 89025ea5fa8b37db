"""Parsers on tiny fixture trees built here; each malformed input must name its culprit."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image

from abdnet.config import DataConfig
from abdnet.data import (
    DatasetError,
    ImageRecord,
    build_dataset,
    detect_layout,
    open_dataset,
    parse_csv,
    parse_dukemtmc,
    parse_folder,
    parse_market1501,
    parse_msmt17,
    split_validation,
)


def touch_image(path: Path, colour=(10, 20, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (2, 4), colour).save(path)
    return path


def make_market(root: Path, extra: dict[str, list[str]] | None = None) -> Path:
    files = {
        "bounding_box_train": [
            "0002_c1s1_000451_03.jpg",
            "0002_c2s1_000551_01.jpg",
            "0007_c3s2_001000_02.jpg",
        ],
        "query": ["0010_c1s1_000001_00.jpg", "0011_c2s1_000002_00.jpg"],
        "bounding_box_test": [
            "0010_c2s1_000003_00.jpg",
            "0010_c1s1_000004_00.jpg",  # same camera as the query: not a valid match
            "0011_c6s1_000005_00.jpg",
            "0000_c3s1_000006_00.jpg",  # distractor: kept
            "-1_c4s1_000007_00.jpg",  # junk: dropped
        ],
    }
    for folder, names in {**files, **(extra or {})}.items():
        for name in names:
            touch_image(root / folder / name)
    (root / "bounding_box_train" / "Thumbs.db").write_bytes(b"x")  # non-images are ignored
    return root


def triples(records: list[ImageRecord]) -> set[tuple[str, int, int]]:
    return {(Path(r.path).name, r.pid, r.camid) for r in records}


def test_market1501_counts_relabel_and_camids(tmp_path):
    ds = parse_market1501(make_market(tmp_path / "m"))
    # train pids 2, 7 -> labels 0, 1 (sorted); cameras c1..c6 -> 0..5
    assert ds.pid_map == {2: 0, 7: 1}
    assert ds.num_train_pids == 2
    assert triples(ds.train) == {
        ("0002_c1s1_000451_03.jpg", 0, 0),
        ("0002_c2s1_000551_01.jpg", 0, 1),
        ("0007_c3s2_001000_02.jpg", 1, 2),
    }
    assert triples(ds.query) == {
        ("0010_c1s1_000001_00.jpg", 10, 0),
        ("0011_c2s1_000002_00.jpg", 11, 1),
    }
    gallery = triples(ds.gallery)
    assert ("0000_c3s1_000006_00.jpg", 0, 2) in gallery
    assert not any(pid == -1 for _, pid, _ in gallery)
    assert len(gallery) == 4
    assert ds.split_counts() == {"train": (3, 2, 3), "query": (2, 2, 2), "gallery": (4, 3, 4)}
    assert "gallery |      4 |      3 |       4" in ds.summary()
    img = ds.read_image(ds.train[0])
    assert img.mode == "RGB" and img.size == (2, 4)


def test_dukemtmc_names(tmp_path):
    root = tmp_path / "DukeMTMC-reID"
    for folder, names in {
        "bounding_box_train": ["0001_c2_f0046182.jpg", "0001_c5_f0051341.jpg"],
        "query": ["0005_c2_f0046985.jpg"],
        "bounding_box_test": ["0005_c8_f0065015.jpg", "0019_c1_f0044447.jpg"],
    }.items():
        for name in names:
            touch_image(root / folder / name)
    ds = parse_dukemtmc(root)
    assert triples(ds.train) == {("0001_c2_f0046182.jpg", 0, 1), ("0001_c5_f0051341.jpg", 0, 4)}
    assert triples(ds.gallery) == {("0005_c8_f0065015.jpg", 5, 7), ("0019_c1_f0044447.jpg", 19, 0)}
    kind, where = detect_layout(tmp_path)
    assert (kind, where) == ("dukemtmcreid", root)


def make_msmt(root: Path, v2: bool = False, with_train_list: bool = True) -> Path:
    train_dir, test_dir = ("mask_train_v2", "mask_test_v2") if v2 else ("train", "test")
    train = [
        "0000/0000_000_01_0303morning_0015_0.jpg",
        "0000/0000_001_05_0303noon_0020_1.jpg",
        "0001/0001_000_12_0303afternoon_0100_0.jpg",
    ]
    val = ["0003/0003_000_02_0303morning_0300_0.jpg"]
    query = ["0000/0000_000_03_0113morning_0001_0.jpg"]
    gallery = ["0000/0000_004_15_0113noon_0002_0.jpg", "0002/0002_000_07_0113noon_0003_0.jpg"]
    for rel in train + val:
        touch_image(root / train_dir / rel)
    for rel in query + gallery:
        touch_image(root / test_dir / rel)

    def write_list(name, rels):
        (root / name).write_text("".join(f"{r} {int(r.split('/')[0])}\n" for r in rels))

    if with_train_list:
        write_list("list_train.txt", train)
    write_list("list_val.txt", val)
    write_list("list_query.txt", query)
    write_list("list_gallery.txt", gallery)
    return root


@pytest.mark.parametrize("v2", [False, True])
def test_msmt17_lists(tmp_path, v2):
    root = make_msmt(tmp_path / ("MSMT17_V2" if v2 else "MSMT17_V1"), v2=v2)
    ds = parse_msmt17(root)
    # camera = third '_' field, 1-based in the name
    assert triples(ds.train) == {
        ("0000_000_01_0303morning_0015_0.jpg", 0, 0),
        ("0000_001_05_0303noon_0020_1.jpg", 0, 4),
        ("0001_000_12_0303afternoon_0100_0.jpg", 1, 11),
    }
    assert triples(ds.query) == {("0000_000_03_0113morning_0001_0.jpg", 0, 2)}
    assert triples(ds.gallery) == {
        ("0000_004_15_0113noon_0002_0.jpg", 0, 14),
        ("0002_000_07_0113noon_0003_0.jpg", 2, 6),
    }
    with_val = parse_msmt17(root, combine_val=True)
    assert len(with_val.train) == 4 and with_val.num_train_pids == 3
    # the folder holding MSMT17_V*/ is detected too
    assert detect_layout(tmp_path) == ("msmt17", root)


def test_msmt17_v2_folder_layout_without_train_list(tmp_path):
    root = make_msmt(tmp_path / "MSMT17_V2", v2=True, with_train_list=False)
    ds = parse_msmt17(root)
    # scanned from mask_train_v2/<pid>/: includes the val identity 0003 as well
    assert {(pid, cam) for _, pid, cam in triples(ds.train)} == {(0, 0), (0, 4), (1, 11), (2, 1)}
    assert ds.pid_map == {0: 0, 1: 1, 3: 2}


def test_msmt17_bad_list_line_names_file_and_line(tmp_path):
    root = make_msmt(tmp_path / "MSMT17_V1")
    (root / "list_query.txt").write_text("0000/0000_000_03_0113morning_0001_0.jpg\n")
    with pytest.raises(DatasetError, match=r"list_query.txt:1"):
        parse_msmt17(root)


def make_folder(root: Path) -> Path:
    for rel in [
        "train/3/0_a.jpg",
        "train/3/1_b.jpg",
        "train/8/2_c.png",
        "query/20/0_q.jpg",
        "gallery/20/1_g.jpg",
        "gallery/21/0_h.jpg",
    ]:
        touch_image(root / rel)
    return root


def test_folder_tree(tmp_path):
    root = make_folder(tmp_path / "custom")
    ds = parse_folder(root)
    assert triples(ds.train) == {("0_a.jpg", 0, 0), ("1_b.jpg", 0, 1), ("2_c.png", 1, 2)}
    assert ds.pid_map == {3: 0, 8: 1}
    assert triples(ds.query) == {("0_q.jpg", 20, 0)}
    assert triples(ds.gallery) == {("1_g.jpg", 20, 1), ("0_h.jpg", 21, 0)}
    assert detect_layout(root) == ("folder", root)


def test_csv_paths_relative_to_csv_folder(tmp_path):
    for name in ("imgs/a.jpg", "imgs/b.jpg", "ann/q.jpg", "ann/g.jpg"):
        touch_image(tmp_path / name)
    csv_path = tmp_path / "ann" / "set.csv"
    csv_path.write_text(
        "path,pid,camid,split\n"
        "../imgs/a.jpg,5,0,train\n"
        "../imgs/b.jpg,6,1,train\n"
        "../imgs/c.jpg,-1,1,train\n"  # junk: dropped
        "q.jpg,9,0,query\n"
        "g.jpg,9,1,gallery\n"
    )
    ds = parse_csv(csv_path)
    assert {(r.path, r.pid, r.camid) for r in ds.train} == {
        (str(csv_path.parent / "../imgs/a.jpg"), 0, 0),
        (str(csv_path.parent / "../imgs/b.jpg"), 1, 1),
    }
    assert ds.query == [ImageRecord(str(csv_path.parent / "q.jpg"), 9, 0)]
    assert ds.read_image(ds.train[0]).size == (2, 4)
    assert detect_layout(csv_path) == ("csv", csv_path)
    assert detect_layout(csv_path.parent) == ("csv", csv_path)


# --- errors -------------------------------------------------------------------------------


def test_bad_market_name_names_the_file(tmp_path):
    root = make_market(tmp_path / "m", extra={"query": ["person12.jpg"]})
    with pytest.raises(DatasetError, match=r"person12\.jpg.*does not match"):
        parse_market1501(root)


def test_missing_folder_is_named(tmp_path):
    root = make_market(tmp_path / "m")
    for p in (root / "query").iterdir():
        p.unlink()
    (root / "query").rmdir()
    with pytest.raises(DatasetError, match=r"missing folder: .*query"):
        parse_market1501(root)
    (tmp_path / "f2" / "train").mkdir(parents=True)
    (tmp_path / "f2" / "query").mkdir()
    with pytest.raises(DatasetError, match=r"missing folder: .*f2/gallery"):
        parse_folder(tmp_path / "f2")
    root = make_msmt(tmp_path / "MSMT17_V1")
    (root / "list_gallery.txt").unlink()
    with pytest.raises(DatasetError, match=r"missing file: .*list_gallery\.txt"):
        parse_msmt17(root)


def test_duplicate_path_in_csv(tmp_path):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text(
        "path,pid,camid,split\na.jpg,1,0,train\nq.jpg,2,0,query\na.jpg,2,1,gallery\n"
    )
    with pytest.raises(
        DatasetError, match=r"duplicate image path .*a\.jpg \(in both train and gallery\)"
    ):
        parse_csv(csv_path)


def test_duplicate_in_msmt_list(tmp_path):
    root = make_msmt(tmp_path / "MSMT17_V1")
    with (root / "list_gallery.txt").open("a") as f:
        f.write("0002/0002_000_07_0113noon_0003_0.jpg 2\n")
    with pytest.raises(
        DatasetError, match=r"duplicate .*0002_000_07_0113noon_0003_0\.jpg \(twice in gallery\)"
    ):
        parse_msmt17(root)


@pytest.mark.parametrize(
    "header,row,message",
    [
        ("path,pid,split", "a.jpg,1,train", r"missing column\(s\) camid"),
        ("path,pid,camid,split", "a.jpg,one,0,train", r"d\.csv:2: pid and camid must be integers"),
        (
            "path,pid,camid,split",
            "a.jpg,1,0,validation",
            r"d\.csv:2: split must be train, query or gallery",
        ),
        ("path,pid,camid,split", "a.jpg,1,-3,train", r"d\.csv:2: pid must be >= -1 and camid >= 0"),
    ],
)
def test_bad_csv(tmp_path, header, row, message):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text(f"{header}\n{row}\n")
    with pytest.raises(DatasetError, match=message):
        parse_csv(csv_path)


def test_folder_bad_names(tmp_path):
    root = make_folder(tmp_path / "f")
    touch_image(root / "gallery" / "21" / "cam0.jpg")
    with pytest.raises(DatasetError, match=r"cam0\.jpg: file name must start with '<camid>_'"):
        parse_folder(root)
    root = make_folder(tmp_path / "g")
    touch_image(root / "train" / "bob" / "0_x.jpg")
    with pytest.raises(DatasetError, match=r"train/bob: identity folder name must be an integer"):
        parse_folder(root)


def test_empty_split_is_an_error(tmp_path):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("path,pid,camid,split\na.jpg,1,0,train\nq.jpg,2,0,query\n")
    with pytest.raises(DatasetError, match="gallery split has no images"):
        parse_csv(csv_path)


def test_unknown_layout_and_missing_root(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(DatasetError, match="no known data set layout"):
        detect_layout(tmp_path / "x")
    with pytest.raises(ValueError, match="neither a built-in name"):
        open_dataset(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="data.name: unknown data set 'cuhk03'"):
        build_dataset(DataConfig(name="cuhk03", root=str(tmp_path)))


def test_query_without_valid_match_warns(tmp_path, caplog):
    # query 30 only appears in the gallery from its own camera; query 31 not at all
    root = make_folder(tmp_path / "f")
    touch_image(root / "query" / "30" / "2_q.jpg")
    touch_image(root / "gallery" / "30" / "2_g.jpg")
    touch_image(root / "query" / "31" / "0_q.jpg")
    with caplog.at_level(logging.WARNING, logger="abdnet.data"):
        ds = parse_folder(root)
    assert {r.pid for r in ds.unmatched_queries} == {30, 31}
    assert "2 of 3 queries have no gallery image" in caplog.text
    assert "2 queries have no gallery image" in ds.summary()


def test_open_dataset_by_name_and_build_dataset(tmp_path):
    root = make_market(tmp_path / "Market-1501-v15.09.15")
    by_name = open_dataset("market1501", root=str(tmp_path))  # the parent folder works too
    auto = build_dataset(DataConfig(name="auto", root=str(tmp_path)))
    assert auto.name == "market1501" and auto.root == by_name.root == str(root)
    assert triples(by_name.train) == triples(auto.train)
    with pytest.raises(ValueError, match="data.root"):
        build_dataset(DataConfig(name="market1501", root=""))


def test_split_validation_holds_out_ids_with_valid_queries():
    from abdnet.data import make_dataset

    train = [ImageRecord(f"t{pid}_{k}.jpg", pid, k % 3) for pid in range(10, 30) for k in range(5)]
    train += [ImageRecord("lonely.jpg", 99, 0)]  # one camera only: can never be a query
    ds = make_dataset(
        "toy",
        "toy",
        train,
        [ImageRecord("q.jpg", 1, 0)],
        [ImageRecord("g.jpg", 1, 1)],
        image_source=lambda path: Image.new("RGB", (2, 4)),  # records, no files
    )
    tr, vq, vg = split_validation(ds, 0.25, seed=3)
    held = {r.pid for r in vq} | {r.pid for r in vg}
    kept_labels = sorted({r.pid for r in tr})
    assert kept_labels == list(range(len(kept_labels)))  # relabelled 0..M-1
    assert len(held) == round(0.25 * 21) and len(kept_labels) + len(held) == 21
    # the held-out records and the training records partition the original records
    assert len(tr) + len(vq) + len(vg) == len(train)
    assert not {r.path for r in tr} & {r.path for r in vq + vg}
    # every validation query has a gallery image of its id from another camera
    for q in vq:
        assert any(g.pid == q.pid and g.camid != q.camid for g in vg)
    assert split_validation(ds, 0.25, seed=3) == (tr, vq, vg)
    with pytest.raises(ValueError, match="val_fraction"):
        split_validation(ds, 1.5, seed=0)
