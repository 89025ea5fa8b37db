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
