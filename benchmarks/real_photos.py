"""A recipe on real photos of unseen people: cross-validation folds, train + eval, mean ± std.

Run (the data stay where they are; folds are folders of symbolic links under ``--out``):

    python benchmarks/real_photos.py --data ../shared/data/pku-reid-dev \\
        --config configs/real-small.yaml --folds dev cv0 cv1 cv2 --seeds 0 1 --out /tmp/rp

Folds of a Market-1501-layout set whose images are named ``PPPP_cCsS_OOOOOO_BB`` with
``OOOOOO`` the orientation (the PKU-Reid development subset: 2 cameras x 8 orientations):

- ``dev``: the set's own split (its ``bounding_box_train`` vs its query/gallery);
- ``cv0``, ``cv1``, ``cv2``: all identities shuffled once (seed 2024) and cut in three; each
  fold tests on one third and trains on the other two;
- ``half``: the first 18 shuffled identities test, the others train (fewer training people,
  a larger gallery).

A test identity's orientations 1 and 5 (both cameras) are queries, its other images the
gallery, as in the set's own split; matching is cross-camera (Market-1501 protocol).

Each (fold, seed) runs what a user runs: ``abdnet train --config C --data FOLD --out RUN
--set train.seed=S`` then ``abdnet eval --checkpoint RUN --data FOLD --json`` (the run's own
evaluation options), and the same features once more without re-ranking and query expansion.
It records the training wall time, the training process's CPU time and the load average
(on a shared machine the wall time measures the other jobs as much as the recipe). Results
go to ``OUT/results.jsonl`` (one line per run; finished runs are skipped when the command is
repeated) and a table with mean ± std is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

_NAME = re.compile(r"^(\d+)_c(\d+)s\d+_(\d+)_\d+\.(?:jpg|jpeg|png)$", re.IGNORECASE)
_SPLITS = ("bounding_box_train", "query", "bounding_box_test")
QUERY_ORIENTATIONS = (1, 5)
FOLDS = ("dev", "cv0", "cv1", "cv2", "half")
METRICS = ("mAP", "rank1", "rank5", "mINP")


def _images(root: Path) -> dict[str, dict[int, list[Path]]]:
    """split -> pid -> image paths, checking every name."""
    out: dict[str, dict[int, list[Path]]] = {}
    for split in _SPLITS:
        folder = root / split
        if not folder.is_dir():
            raise SystemExit(f"--data {root}: missing folder {folder}")
        by_pid: dict[int, list[Path]] = defaultdict(list)
        for path in sorted(folder.iterdir()):
            m = _NAME.match(path.name)
            if m is None:
                raise SystemExit(f"{path}: expected a name like 0001_c1s1_000005_00.jpg")
            by_pid[int(m.group(1))].append(path)
        out[split] = by_pid
    return out


def build_fold(data: Path, fold: str, dest: Path) -> Path:
    """Write fold ``fold`` of ``data`` as symbolic links under ``dest/fold``; return it."""
    images = _images(data)
    everyone: dict[int, list[Path]] = defaultdict(list)
    for by_pid in images.values():
        for pid, paths in by_pid.items():
            everyone[pid] += paths
    ids = sorted(everyone)
    order = ids[:]
    random.Random(2024).shuffle(order)
    third = len(order) // 3
    if fold == "dev":
        test = sorted(set(images["query"]) | set(images["bounding_box_test"]))
    elif fold in ("cv0", "cv1", "cv2"):
        k = int(fold[2])
        test = sorted(order[k * third : (k + 1) * third if k < 2 else len(order)])
    elif fold == "half":
        test = sorted(order[: len(order) // 2])
    else:
        raise SystemExit(f"--folds: unknown fold {fold!r}; expected some of {FOLDS}")
    train = [pid for pid in ids if pid not in set(test)]
    root = dest / fold
    if root.exists():
        shutil.rmtree(root)
    for split in _SPLITS:
        (root / split).mkdir(parents=True)
    for pid in train:
        for path in everyone[pid]:
            (root / "bounding_box_train" / path.name).symlink_to(path.resolve())
    for pid in test:
        for path in everyone[pid]:
            orientation = int(_NAME.match(path.name).group(3))
            split = "query" if orientation in QUERY_ORIENTATIONS else "bounding_box_test"
            (root / split / path.name).symlink_to(path.resolve())
    return root


def _abdnet() -> list[str]:
    return [sys.executable, "-m", "abdnet.cli.main"]


def _without_rerank(run: Path, fold: Path) -> dict[str, float]:
    """The run's evaluation with re-ranking and query expansion switched off."""
    import torch

    from abdnet.data import build_dataset
    from abdnet.engine import evaluate_model
    from abdnet.models import load_model

    loaded = load_model(run)
    cfg = loaded.config
    data_cfg = dataclasses.replace(cfg.data, name="auto", root=str(fold))
    eval_cfg = dataclasses.replace(cfg.eval, rerank=False, aqe=False)
    result = evaluate_model(
        loaded.model, build_dataset(data_cfg), eval_cfg, data_cfg, torch.device("cpu")
    )
    return {k: float(v) for k, v in result.to_dict().items() if k in METRICS}


def run_one(args: argparse.Namespace, fold: str, fold_root: Path, seed: int) -> dict:
    run = args.out / "runs" / f"{fold}_s{seed}"
    if run.exists():
        shutil.rmtree(run)
    cmd = [*_abdnet(), "train", "--config", str(args.config), "--data", str(fold_root)]
    cmd += ["--out", str(run), "--no-progress", "--set", f"train.seed={seed}"]
    for item in args.overrides:
        cmd += ["--set", item]
    load_before = os.getloadavg()
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    load_after = os.getloadavg()
    out = subprocess.run(
        [*_abdnet(), "eval", "--checkpoint", str(run), "--data", str(fold_root), "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    recipe = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "fold": fold,
        "seed": seed,
        "overrides": args.overrides,
        "recipe": {k: recipe[k] for k in METRICS},
        "plain": _without_rerank(run, fold_root),
        "train_wall_s": round(wall, 1),
        "train_cpu_s": round(cpu, 1),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "-"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def report(rows: list[dict]) -> str:
    lines = [
        "| fold | seed | mAP | rank-1 | mAP, no re-rank/AQE | rank-1, no re-rank/AQE | "
        "train wall s | train CPU s | load before |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['fold']} | {r['seed']} | {r['recipe']['mAP']:.3f} | {r['recipe']['rank1']:.3f} "
            f"| {r['plain']['mAP']:.3f} | {r['plain']['rank1']:.3f} | {r['train_wall_s']:.0f} "
            f"| {r['train_cpu_s']:.0f} | {r['load_before'][0]:.1f} |"
        )
    lines.append(
        f"| **mean ± std** ({len(rows)} runs) | | "
        f"{_mean_std([r['recipe']['mAP'] for r in rows])} | "
        f"{_mean_std([r['recipe']['rank1'] for r in rows])} | "
        f"{_mean_std([r['plain']['mAP'] for r in rows])} | "
        f"{_mean_std([r['plain']['rank1'] for r in rows])} | | | |"
    )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="Market-layout set (PKU-Reid dev)")
    p.add_argument("--config", type=Path, default=Path("configs/real-small.yaml"))
    p.add_argument("--folds", nargs="+", default=["dev", "cv0", "cv1", "cv2"], choices=FOLDS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--out", type=Path, required=True, help="folds, runs and results.jsonl")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    done = {}
    if results.exists():
        for line in results.read_text().splitlines():
            r = json.loads(line)
            done[(r["fold"], r["seed"], tuple(r["overrides"]))] = r
    rows = []
    for fold in args.folds:
        fold_root = build_fold(args.data, fold, args.out / "folds")
        for seed in args.seeds:
            key = (fold, seed, tuple(args.overrides))
            if key not in done:
                done[key] = run_one(args, fold, fold_root, seed)
                with results.open("a") as f:
                    f.write(json.dumps(done[key]) + "\n")
            rows.append(done[key])
            r = done[key]
            print(
                f"{fold} seed {seed}: mAP {r['recipe']['mAP']:.3f} (no re-rank/AQE "
                f"{r['plain']['mAP']:.3f}), train {r['train_wall_s']:.0f} s wall",
                flush=True,
            )
    print(report(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
