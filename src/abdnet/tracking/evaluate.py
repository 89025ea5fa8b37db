"""Tracking metrics with the maintained implementation of TrackEval's definitions
(``trackers.eval``: HOTA, CLEAR MOTA, Identity IDF1), per camera and over all cameras.

The multi-camera IDF1 matches identities once over every camera: the cameras' ground
truth and results are laid end to end as one sequence (frames of camera 2 after those of
camera 1, ...) and scored with the same Identity metric, so a person given two ids in two
cameras counts as an identity error.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from abdnet.tracking.mot import MotRows, read_mot, write_mot

__all__ = ["CameraScore", "TrackingScore", "evaluate_tracking", "find_ground_truth"]


@dataclass(frozen=True)
class CameraScore:
    camera: str
    hota: float
    idf1: float
    mota: float
    id_switches: int
    gt_boxes: int
    pred_boxes: int


@dataclass(frozen=True)
class TrackingScore:
    cameras: list[CameraScore]
    multi_camera_idf1: float
    gt_identities: int
    pred_identities: int


def find_ground_truth(root: str | Path, camera: str) -> Path:
    """``ROOT/NAME/gt/gt.txt`` (a MOTChallenge sequence) or ``ROOT/NAME.txt``."""
    root = Path(root)
    for p in (root / camera / "gt" / "gt.txt", root / f"{camera}.txt"):
        if p.is_file():
            return p
    raise FileNotFoundError(f"--gt {root}: no {camera}/gt/gt.txt or {camera}.txt")


def _gt_rows(path: Path) -> MotRows:
    """Ground truth with the rows TrackEval scores: the 7th column (``consider``) not 0."""
    rows = read_mot(path)
    return rows.select(rows.scores != 0) if len(rows) else rows


def _score(gt: Path, pred: Path, metrics: list[str]):
    from trackers.eval import evaluate_mot_sequence

    return evaluate_mot_sequence(gt_path=gt, tracker_path=pred, metrics=metrics)


def evaluate_tracking(
    *, gt: dict[str, Path], pred: dict[str, Path], threshold: float = 0.5
) -> TrackingScore:
    """Score ``pred[camera]`` result files against ``gt[camera]`` ground-truth files.

    Cameras must match. An empty result file scores 0 (every ground-truth box missed).
    """
    if sorted(gt) != sorted(pred):
        raise ValueError(f"cameras differ: ground truth {sorted(gt)}, results {sorted(pred)}")
    scores: list[CameraScore] = []
    gt_all: list[MotRows] = []
    pred_all: list[MotRows] = []
    offset = 0
    with tempfile.TemporaryDirectory(prefix="abdnet-track-eval-") as tmp:
        t = Path(tmp)
        for cam in sorted(gt):
            g, p = _gt_rows(gt[cam]), read_mot(pred[cam])
            g_file, p_file = t / f"{cam}-gt.txt", t / f"{cam}-pred.txt"
            _write_gt(g_file, g)
            write_mot(p_file, p)
            if len(g) and len(p):
                r = _score(g_file, p_file, ["HOTA", "CLEAR", "Identity"])
                scores.append(
                    CameraScore(
                        cam,
                        float(r.HOTA.HOTA),
                        float(r.Identity.IDF1),
                        float(r.CLEAR.MOTA),
                        int(r.CLEAR.IDSW),
                        len(g),
                        len(p),
                    )
                )
            else:
                mota = 1.0 if not len(g) and not len(p) else (0.0 if len(g) else -float(len(p)))
                scores.append(CameraScore(cam, 0.0, 0.0, mota, 0, len(g), len(p)))
            length = int(max(g.frames.max() if len(g) else 0, p.frames.max() if len(p) else 0))
            gt_all.append(_shifted(g, offset))
            pred_all.append(_shifted(p, offset))
            offset += length
        g_cat, p_cat = _concat(gt_all), _concat(pred_all)
        multi = 0.0
        if len(g_cat) and len(p_cat):
            _write_gt(t / "all-gt.txt", g_cat)
            write_mot(t / "all-pred.txt", p_cat)
            multi = float(_score(t / "all-gt.txt", t / "all-pred.txt", ["Identity"]).Identity.IDF1)
    return TrackingScore(
        cameras=scores,
        multi_camera_idf1=multi,
        gt_identities=int(np.unique(g_cat.ids).size),
        pred_identities=int(np.unique(p_cat.ids).size),
    )


def _write_gt(path: Path, rows: MotRows) -> None:
    # ground truth as the scorer reads it: consider flag 1, class 1 (pedestrian), visible
    lines = [
        f"{f},{i},{b[0]:.2f},{b[1]:.2f},{b[2]:.2f},{b[3]:.2f},1,1,1\n"
        for f, i, b in zip(rows.frames, rows.ids, rows.boxes)
    ]
    path.write_text("".join(lines))


def _shifted(rows: MotRows, offset: int) -> MotRows:
    return MotRows(rows.frames + offset, rows.ids, rows.boxes, rows.scores, rows.lines, rows.path)


def _concat(parts: Sequence[MotRows]) -> MotRows:
    parts = [p for p in parts if len(p)]
    if not parts:
        return MotRows.empty()
    return MotRows(
        np.concatenate([p.frames for p in parts]),
        np.concatenate([p.ids for p in parts]),
        np.concatenate([p.boxes for p in parts]),
        np.concatenate([p.scores for p in parts]),
        np.concatenate([p.lines for p in parts]),
    )
