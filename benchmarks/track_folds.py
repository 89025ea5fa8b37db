"""Tracking people no model saw, over the folds of a cross-validation.

For each fold of an ``abdnet cv`` folder (``DIR/rR-fK/run`` and ``split.csv``), footage is
rendered (``abdnet.tracking.footage``) from the photos of that fold's test people, its query
and gallery records, so none of its people were trained on; then ``abdnet track
--checkpoint DIR/rR-fK/run`` (the threshold kept with the run) tracks, stitches and links it
and ``abdnet track eval`` scores it, exactly as a user runs them (a fold without a kept
threshold is first calibrated on its own test split at ``--far``, as ``abdnet train`` does
when training ends). Printed: per fold and
rendering the multi-camera IDF1, each camera's IDF1 and the identities found against the true
number; then the mean ± sample std over folds for each rendering and over all runs.
``--plot`` draws the multi-camera IDF1 of every fold and rendering.

Each (fold, rendering) result is kept in ``OUT/<fold>/<rendering>/eval.json``; run the same
command again to continue after an interruption. ``--track-arg`` passes options to ``abdnet
track`` (e.g. ``--track-arg=--tracker --track-arg=bytetrack``) with ``--tag`` naming the
variant's result folders, so variants are compared on the same footage.

    python benchmarks/track_folds.py --cv DIR --out WORK                  # every fold
    python benchmarks/track_folds.py --cv DIR --out WORK --folds r0-f0 --renderings s1,s3
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# name: (seed, miss, jitter). s3 and s4 have harder detections (more misses, more jitter).
RENDERINGS = {
    "s11": (11, 0.05, 0.03),
    "s1": (1, 0.05, 0.03),
    "s2": (2, 0.05, 0.03),
    "s3": (3, 0.15, 0.06),
    "s4": (4, 0.10, 0.05),
}


def abdnet(*args: str) -> str:
    """Run the ``abdnet`` command of this interpreter's environment; return its stdout."""
    exe = Path(sys.executable).with_name("abdnet")
    done = subprocess.run([str(exe), *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"abdnet {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def render(fold_dir: Path, rendering: str, root: Path, frames: int) -> list[Path]:
    from abdnet.data.parsers import parse_csv
    from abdnet.tracking.footage import FootageConfig, photo_appearance, write_footage

    if root.exists():
        return sorted(root.glob("cam*"))
    split = parse_csv(fold_dir / "split.csv")
    look, pids = photo_appearance(split.query + split.gallery)
    seed, miss, jitter = RENDERINGS[rendering]
    cfg = FootageConfig(
        people=len(pids), frames=frames, width=640, height=360, one_camera=0.25,
        pose_every=15, seed=seed, miss=miss, jitter=jitter,
    )  # fmt: skip
    return write_footage(root, cfg, appearance=look)


def threshold(fold_dir: Path, far: float) -> Path:
    """The fold's kept threshold: ``abdnet cv`` trains without the calibration that ``abdnet
    train`` ends with, so it is made here the same way (the fold's test split, ``--far``)."""
    from abdnet.layout import THRESHOLD_FILE

    path = fold_dir / "run" / THRESHOLD_FILE
    if not path.exists():
        abdnet("calibrate", "--checkpoint", str(fold_dir / "run"), "--data",
               str(fold_dir / "split.csv"), "--far", str(far), "--out", str(path), "--no-progress")  # fmt: skip
    return path


def run_one(fold_dir: Path, rendering: str, work: Path, tag: str, frames: int, extra: list[str]):
    done = work / fold_dir.name / rendering / tag / "eval.json"
    if done.exists():
        return json.loads(done.read_text())
    footage = work / fold_dir.name / rendering / "footage"
    cams = render(fold_dir, rendering, footage, frames)
    out = done.parent / "out"
    t0 = time.perf_counter()
    cam_args = [a for c in cams for a in ("--camera", f"{c.name}={c}")]
    abdnet("track", "--checkpoint", str(fold_dir / "run"), *cam_args, "--out", str(out),
           "--force", "--no-progress", *extra)  # fmt: skip
    seconds = time.perf_counter() - t0
    score = json.loads(abdnet("track", "eval", "--gt", str(footage), "--pred", str(out), "--json"))
    score["seconds"] = seconds
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(score, indent=2))
    os.replace(tmp, done)
    return score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cv", required=True, type=Path, help="an abdnet cv output folder")
    ap.add_argument("--out", required=True, type=Path, help="work folder (resumable)")
    ap.add_argument("--folds", default="", help="comma-separated fold names (default: all)")
    ap.add_argument("--renderings", default=",".join(RENDERINGS), help=f"of {list(RENDERINGS)}")
    ap.add_argument("--frames", type=int, default=300, help="frames per camera")
    ap.add_argument("--tag", default="default", help="name of this variant's result folders")
    ap.add_argument("--track-arg", action="append", default=[], help="passed to abdnet track")
    ap.add_argument(
        "--far",
        type=float,
        default=1e-2,
        help="for folds without a threshold (abdnet train's default)",
    )
    ap.add_argument("--plot", type=Path, help="write a PNG of every fold's IDF1")
    args = ap.parse_args()

    folds = sorted(p.parent for p in args.cv.glob("r*-f*/run") if (p / "checkpoints").is_dir())
    if args.folds:
        wanted = set(args.folds.split(","))
        folds = [f for f in folds if f.name in wanted]
    if not folds:
        sys.exit(f"--cv {args.cv}: no trained folds (rR-fK/run/checkpoints)")
    renderings = args.renderings.split(",")
    unknown = [r for r in renderings if r not in RENDERINGS]
    if unknown:
        sys.exit(f"--renderings: unknown {unknown}; known: {list(RENDERINGS)}")
    print(
        f"# {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; {len(folds)} folds x {len(renderings)} renderings, tag {args.tag}"
    )
    print(
        f"{'fold':8s} {'rendering':9s} {'people':>6s} {'found':>5s} {'cam1':>6s} {'cam2':>6s} {'multi':>6s} {'s':>5s}"
    )
    table: dict[str, dict[str, float]] = {}
    for fold in folds:
        for r in renderings:
            threshold(fold, args.far)
            s = run_one(fold, r, args.out, args.tag, args.frames, args.track_arg)
            cams = s["cameras"]
            table.setdefault(fold.name, {})[r] = s["multi_camera_idf1"]
            print(
                f"{fold.name:8s} {r:9s} {s['gt_identities']:6d} {s['pred_identities']:5d} "
                f"{100 * cams['cam1']['idf1']:6.1f} {100 * cams['cam2']['idf1']:6.1f} "
                f"{100 * s['multi_camera_idf1']:6.1f} {s['seconds']:5.0f}",
                flush=True,
            )
    print("\nmulti-camera IDF1, mean ± sample std over folds")
    every = []
    for r in renderings:
        v = np.array([table[f.name][r] for f in folds]) * 100
        every.extend(v)
        sd = v.std(ddof=1) if len(v) > 1 else float("nan")
        print(f"  {r:9s} {v.mean():5.1f} ± {sd:4.1f}  (min {v.min():.1f}, {len(v)} folds)")
    e = np.array(every)
    per_fold = np.array([np.mean(list(table[f.name].values())) for f in folds]) * 100
    print(
        f"  all       {e.mean():5.1f} ± {e.std(ddof=1) if len(e) > 1 else float('nan'):4.1f}  "
        f"({len(e)} runs; >= 85 on {int((e >= 85).sum())}; fold means {per_fold.min():.1f}-{per_fold.max():.1f})"
    )
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(folds), 3.2))
        x = np.arange(len(folds))
        for i, r in enumerate(renderings):
            ax.scatter(
                x, [100 * table[f.name][r] for f in folds], label=r, s=18, marker="os^vD"[i % 5]
            )
        ax.axhline(85, color="grey", lw=0.8, ls="--")
        ax.set_xticks(x, [f.name for f in folds], rotation=45, fontsize=8)
        ax.set_ylabel("multi-camera IDF1 (%)")
        ax.set_title(f"abdnet track on each fold's unseen people ({args.tag})", fontsize=9)
        ax.legend(fontsize=7, ncol=len(renderings))
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
