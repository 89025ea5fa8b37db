"""Linking on and off on the same footage: the library function behind
``abdnet demo --footage`` and the demo itself at a minute size."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from abdnet.config import Config, DataConfig
from abdnet.retrieval import FeatureExtractor
from abdnet.tracking import evaluate_tracking, read_mot
from abdnet.tracking.compare import compare_linking, comparison_table
from abdnet.tracking.footage import FootageConfig, plan_walks, write_footage

from .test_pipeline import Stripes, solid

CFG = FootageConfig(people=6, frames=80, width=200, height=120, one_camera=0.34, seed=3)
ROW = re.compile(r"^\| (\S+) \|" + r" ?([-\d.]*) \|" * 6 + r"$")


def parse_table(text: str) -> dict[str, list[float | None]]:
    """camera -> the six numbers of its row (None for an empty cell)."""
    rows = {}
    for line in text.splitlines()[2:]:
        m = ROW.match(line)
        assert m, line
        rows[m.group(1)] = [float(v) if v else None for v in m.groups()[1:]]
    return rows


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    return write_footage(tmp_path_factory.mktemp("footage") / "root", CFG, appearance=solid)


def test_linking_raises_the_multi_camera_idf1_and_the_table_says_so(footage, tmp_path):
    emb = FeatureExtractor(Stripes(), config=Config(data=DataConfig(height=64, width=32)))
    c = compare_linking(footage, embedder=emb, threshold=0.05, far=1e-3, out=tmp_path / "t")
    # both result folders are what 'abdnet track' writes, and score as returned
    gt = {cam.name: cam / "gt" / "gt.txt" for cam in footage}
    for name, score in (("linked", c.linked), ("unlinked", c.unlinked)):
        pred = {cam.name: tmp_path / "t" / name / f"{cam.name}.txt" for cam in footage}
        again = evaluate_tracking(gt=gt, pred=pred)
        assert again.multi_camera_idf1 == pytest.approx(score.multi_camera_idf1)
        assert len(read_mot(pred["cam1"])) > 0
    assert c.linked.multi_camera_idf1 > c.unlinked.multi_camera_idf1 + 0.1
    # without links there is one identity per camera person; with links fewer, down to the
    # true count of people (each person of two cameras once)
    people = {w.pid for w in plan_walks(CFG)}
    assert c.identities_unlinked > c.identities_linked >= len(people)
    rows = parse_table(comparison_table(c))
    assert sorted(rows) == ["cam1", "cam2", "multi-camera"]
    for cam, score in zip(("cam1", "cam2"), c.linked.cameras):
        hota, idf1, mota = rows[cam][:3]
        assert (hota, idf1, mota) == pytest.approx(
            (100 * score.hota, 100 * score.idf1, 100 * score.mota), abs=0.051
        )
        # linking across cameras leaves each camera's own partition as it was
        assert rows[cam][:3] == rows[cam][3:]
    multi = rows["multi-camera"]
    assert multi[1] == pytest.approx(100 * c.linked.multi_camera_idf1, abs=0.051)
    assert multi[4] == pytest.approx(100 * c.unlinked.multi_camera_idf1, abs=0.051)
    assert multi[0] is multi[2] is multi[3] is multi[5] is None


@pytest.mark.slow
def test_demo_footage_at_a_minute_size(tmp_path, capsys):
    from abdnet.cli.main import main

    out = tmp_path / "demo"
    args = ["demo", "--footage", "--out", str(out), "--no-progress"]
    for kv in (
        "data.synthetic.ids=8", "data.synthetic.cams=2", "data.synthetic.per_id=4",
        "data.batch_size=8", "model.global_dim=32", "model.attentive_dim=32",
        "model.reduction_dim=32", "train.frozen_epochs=0", "train.epochs=1",
        "train.precision=fp32",
    ):  # fmt: skip
        args += ["--set", kv]
    assert main(args) == 0
    printed = capsys.readouterr().out
    doc = json.loads((out / "footage.json").read_text())
    table = "\n".join(line for line in printed.splitlines() if line.startswith("|"))
    rows = parse_table(table)
    assert sorted(rows) == ["cam1", "cam2", "multi-camera"]
    linked, unlinked = doc["linked"]["multi_camera_idf1"], doc["unlinked"]["multi_camera_idf1"]
    assert rows["multi-camera"][1] == pytest.approx(100 * linked, abs=0.051)
    assert rows["multi-camera"][4] == pytest.approx(100 * unlinked, abs=0.051)
    assert linked >= unlinked
    assert (out / "run" / "threshold.json").is_file()
    assert json.loads((out / "run" / "threshold.json").read_text())["far"] == 0.1
    assert np.isfinite(doc["threshold"]) and doc["identities"]["true"] >= 2
    assert main(args) == 0  # a second footage demo into the same folder replaces its outputs
