"""abdnet track / abdnet track eval end to end on a trained run and synthetic footage."""

import json

import pytest

from abdnet.cli.calibrate import keep_run_threshold
from abdnet.cli.main import main
from abdnet.layout import THRESHOLD_FILE
from abdnet.tracking import read_mot
from abdnet.tracking.footage import FootageConfig, write_footage


@pytest.fixture(scope="module")
def run_with_threshold(trained_run, tmp_path_factory, copy_run):
    run = tmp_path_factory.mktemp("track-run") / "run"
    copy_run(trained_run, run)
    t = keep_run_threshold(run, far=1e-2, show=False)
    assert t is not None and (run / THRESHOLD_FILE).is_file()
    return run


@pytest.fixture(scope="module")
def cams(tmp_path_factory):
    cfg = FootageConfig(people=4, frames=40, width=160, height=100, seed=5)
    return write_footage(tmp_path_factory.mktemp("cli-footage") / "root", cfg)


def test_track_writes_results_identities_and_a_sheet_and_eval_scores_them(
    run_with_threshold, cams, tmp_path, capsys
):
    out = tmp_path / "out"
    args = ["track", "--checkpoint", str(run_with_threshold), "--out", str(out), "--no-progress"]
    for c in cams:
        args += ["--camera", f"{c.name}={c}"]
    args += ["--start", "cam1=2026-01-02T10:00:00+00:00"]
    assert main(args) == 0
    assert "identities" in capsys.readouterr().out
    for c in cams:
        rows = read_mot(out / f"{c.name}.txt")
        assert len(rows) > 0 and (rows.ids >= 1).all()
    doc = json.loads((out / "identities.json").read_text())
    assert set(doc["cameras"]) == {"cam1", "cam2"}
    assert doc["cameras"]["cam1"]["start"].startswith("2026-01-02T10:00:00")
    first = next(p for p in doc["identities"] if "cam1" in p["cameras"])
    assert first["cameras"]["cam1"]["first"]["time"].startswith("2026-01-02T10:00")
    assert (out / "contact_sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["track", "eval", "--gt", str(cams[0].parent), "--pred", str(out), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores["cameras"]) == {"cam1", "cam2"}
    assert 0.0 <= scores["multi_camera_idf1"] <= 1.0
    # an existing OUT is refused, and nothing is replaced
    before = (out / "cam1.txt").read_text()
    assert main(args) == 2
    assert "already holds" in capsys.readouterr().err
    assert (out / "cam1.txt").read_text() == before


def test_a_camera_named_twice_is_refused(run_with_threshold, cams, tmp_path, capsys):
    code = main(
        [
            "track",
            "--checkpoint",
            str(run_with_threshold),
            "--out",
            str(tmp_path / "o"),
            "--camera",
            f"a={cams[0]}",
            "--camera",
            f"a={cams[1]}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--camera a: camera named twice" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_a_negative_fill_gap_is_refused(run_with_threshold, cams, tmp_path, capsys):
    code = main(
        [
            "track",
            "--checkpoint",
            str(run_with_threshold),
            "--out",
            str(tmp_path / "o"),
            "--camera",
            f"a={cams[0]}",
            "--fill-gaps",
            "-1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--fill-gaps must be >= 0 seconds, got -1.0" in err
    assert not (tmp_path / "o").exists()


def test_a_run_without_threshold_says_how_to_get_one(trained_run, cams, tmp_path, capsys):
    code = main(
        [
            "track",
            "--checkpoint",
            str(trained_run),
            "--out",
            str(tmp_path / "o"),
            "--camera",
            f"a={cams[0]}",
        ]
    )
    assert code == 2 and "abdnet calibrate" in capsys.readouterr().err


def test_track_with_a_detector_and_annotated_videos(run_with_threshold, cams, tmp_path, capsys):
    import av
    import torch

    from abdnet.tracking.detector import torchvision_model

    weights = tmp_path / "ssd.pth"  # random weights, as a local file (nothing downloaded)
    torch.manual_seed(0)
    torch.save(torchvision_model("ssdlite320_mobilenet_v3_large").state_dict(), weights)
    out = tmp_path / "out"
    args = ["track", "--checkpoint", str(run_with_threshold), "--out", str(out), "--no-progress"]
    args += ["--camera", f"cam1={cams[0]}", "--camera", f"cam2={cams[1]}"]
    args += ["--detections", f"cam2={cams[1] / 'det' / 'det.txt'}"]
    args += ["--detector", "ssdlite320_mobilenet_v3_large", "--detector-weights", str(weights)]
    args += ["--detector-score", "0.9", "--detector-batch", "3", "--video-out"]
    assert main(args) == 0, capsys.readouterr().err
    doc = json.loads((out / "identities.json").read_text())
    assert doc["cameras"]["cam1"]["detector"] == "ssdlite320_mobilenet_v3_large"
    assert "detector" not in doc["cameras"]["cam2"]  # its boxes came from --detections
    assert len(read_mot(out / "cam2.txt")) > 0
    for c in cams:
        with av.open(str(out / f"{c.name}.mp4")) as v:
            frames = list(v.decode(v.streams.video[0]))
        assert len(frames) == 40 and (frames[0].width, frames[0].height) == (160, 100)


def test_detector_options_are_checked(run_with_threshold, cams, tmp_path, capsys):
    base = ["track", "--checkpoint", str(run_with_threshold), "--camera", f"c={cams[0]}"]
    code = main([*base, "--out", str(tmp_path / "a"), "--detector", "nope"])
    err = capsys.readouterr().err
    assert code == 2 and "--detector nope: expected one of" in err and err.count("\n") == 1
    code = main([*base, "--out", str(tmp_path / "b"), "--detector-weights", "x.pth"])
    assert code == 2 and "--detector-weights needs --detector" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
