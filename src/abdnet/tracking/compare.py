"""What cross-camera linking is worth: one footage tracked once, identified with linking and
without (each camera's people kept apart), both scored against the ground truth.

:func:`compare_linking` runs the pipeline on MOTChallenge sequences that carry
``gt/gt.txt`` (the synthetic footage of :mod:`abdnet.tracking.footage`, or any other),
writes both result folders and returns both scores; :func:`comparison_table` is the table
``abdnet demo --footage`` prints (HOTA, IDF1 and MOTA per camera and the multi-camera IDF1,
linked next to not linked).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from abdnet.engine import Embedder
from abdnet.files import atomic_directory
from abdnet.tracking.evaluate import TrackingScore, evaluate_tracking, find_ground_truth
from abdnet.tracking.outputs import write_results
from abdnet.tracking.pipeline import CameraInput, identify, track_camera
from abdnet.tracking.tracker import DEFAULT_TRACKER

__all__ = ["LinkingComparison", "compare_linking", "comparison_table"]

LINKED, UNLINKED = "linked", "unlinked"  # the result folders under ``out``


@dataclass(frozen=True)
class LinkingComparison:
    """The scores of one tracking run identified with and without cross-camera linking."""

    linked: TrackingScore
    unlinked: TrackingScore
    threshold: float  # the cross-camera link threshold
    tracklets: int
    crops_embedded: int  # per identification
    identities_linked: int
    identities_unlinked: int


def compare_linking(
    cameras: Sequence[Path],
    *,
    embedder: Embedder,
    threshold: float,
    far: float,
    out: Path,
    tracker: str = DEFAULT_TRACKER,
    stitch_threshold: float | None = None,
) -> LinkingComparison:
    """Track each sequence folder of ``cameras`` (named by its folder name, detections in
    ``det/det.txt``, ground truth in ``gt/gt.txt``), identify its tracklets with and without
    cross-camera linking at ``threshold`` (a distance of ``embedder.space``; ``far`` the rate
    it was calibrated for; ``stitch_threshold`` as :func:`identify` takes it), write
    ``out/linked/`` and ``out/unlinked/`` as ``abdnet track`` writes ``OUT`` (each
    atomically, replacing an earlier one) and score both."""
    height = embedder.config.data.height
    tracks = [
        track_camera(CameraInput(c.name, Path(c)), input_height=height, tracker=tracker)
        for c in cameras
    ]
    gt = {c.name: find_ground_truth(Path(c).parent, c.name) for c in cameras}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scores: dict[str, TrackingScore] = {}
    counts: dict[str, int] = {}
    crops = 0
    for name, link in ((LINKED, True), (UNLINKED, False)):
        ids = identify(
            tracks,
            embedder=embedder,
            threshold=threshold,
            stitch_threshold=stitch_threshold,
            far=far,
            link=link,
        )
        crops = ids.crops_embedded
        with atomic_directory(out / name) as tmp:
            write_results(tmp, tracks, ids)
        pred = {c.name: out / name / f"{c.name}.txt" for c in cameras}
        scores[name] = evaluate_tracking(gt=gt, pred=pred)
        counts[name] = len(set(ids.labels.values()))
    return LinkingComparison(
        linked=scores[LINKED],
        unlinked=scores[UNLINKED],
        threshold=threshold,
        tracklets=sum(len(t.tracklets) for t in tracks),
        crops_embedded=crops,
        identities_linked=counts[LINKED],
        identities_unlinked=counts[UNLINKED],
    )


def comparison_table(c: LinkingComparison) -> str:
    """A Markdown table: per camera HOTA, IDF1 and MOTA (%) with linking and without, then
    the multi-camera IDF1 of both."""
    head = ["camera", "HOTA", "IDF1", "MOTA", "HOTA, no link", "IDF1, no link", "MOTA, no link"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    unlinked = {s.camera: s for s in c.unlinked.cameras}
    for a in c.linked.cameras:
        b = unlinked[a.camera]
        cells = [a.hota, a.idf1, a.mota, b.hota, b.idf1, b.mota]
        lines.append(f"| {a.camera} | " + " | ".join(f"{100 * v:.1f}" for v in cells) + " |")
    multi = (c.linked.multi_camera_idf1, c.unlinked.multi_camera_idf1)
    lines.append(f"| multi-camera | | {100 * multi[0]:.1f} | | | {100 * multi[1]:.1f} | |")
    return "\n".join(lines)
