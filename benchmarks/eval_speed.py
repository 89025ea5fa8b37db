"""Evaluation speed: ``evaluate_rank`` vs torchreid, ``evaluate_features`` vs the bare matmul.

(a) Market-1501-sized distance matrix (3,368 x 15,913, 751 ids, 6 cameras): our
    ``evaluate_rank`` against torchreid's compiled Cython ``evaluate_cy`` (when
    ``--torchreid-path`` points to a folder holding the built ``rank_cy`` extension, see
    docs/benchmarks.md) or else a faithful numpy port of torchreid's per-query Python loop.
    Prints both times, the speed-up (target >= 5x) and whether CMC/mAP agree.
(b) MSMT17-sized features (11,659 x 82,161, 2048-d float32, 3,060 ids, 15 cameras):
    ``evaluate_features`` against the bare ``qf @ gf.T`` on the same inputs, each in its own
    child process that reports the call's time and its peak RSS above the RSS once the
    inputs exist (peak reset through /proc/self/clear_refs when the kernel allows).
    Prints the time ratio (target <= 1.5) and the extra peak memory (target <= 3 GB).

``--scale`` shrinks both problems (numbers of images and ids) for quick runs.

    python benchmarks/eval_speed.py --scale 0.1
    python benchmarks/eval_speed.py --torchreid-path /tmp/torchreid_cy
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from abdnet.evaluation import evaluate_features, evaluate_rank

MARKET = dict(num_q=3368, num_g=15913, ids=751, cams=6)
MSMT = dict(num_q=11659, num_g=82161, ids=3060, cams=15, dim=2048)


def make_ids(num_q, num_g, ids, cams, seed):
    rng = np.random.default_rng(seed)
    g_pids = rng.integers(1, ids + 1, num_g)
    q_pids = rng.integers(1, ids + 1, num_q)
    return q_pids, g_pids, rng.integers(0, cams, num_q), rng.integers(0, cams, num_g)


def torchreid_python_loop(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """Numpy port of torchreid's ``eval_market1501`` (the path used without Cython)."""
    num_q, num_g = distmat.shape
    indices = np.argsort(distmat, axis=1)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_ap = [], []
    for q_idx in range(num_q):
        order = indices[q_idx]
        remove = (g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
        raw_cmc = matches[q_idx][np.invert(remove)]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        tmp = raw_cmc.cumsum() / (np.arange(len(raw_cmc)) + 1.0) * raw_cmc
        all_ap.append(tmp.sum() / raw_cmc.sum())
    return np.asarray(all_cmc, np.float32).mean(0), float(np.mean(all_ap))


def bench_market(scale, torchreid_path, seed):
    n = {k: max(1, int(round(v * scale))) if k != "cams" else v for k, v in MARKET.items()}
    q_pids, g_pids, q_cams, g_cams = make_ids(n["num_q"], n["num_g"], n["ids"], n["cams"], seed)
    # structured distances: squared distances of 64-d identity-clustered features
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(n["ids"] + 1, 64, generator=gen)
    qf = centers[q_pids] + 1.5 * torch.randn(n["num_q"], 64, generator=gen)
    gf = centers[g_pids] + 1.5 * torch.randn(n["num_g"], 64, generator=gen)
    distmat = torch.cdist(qf, gf).pow_(2).numpy()  # (Q, G) float32
    print(
        f"(a) Market-1501-sized: {distmat.shape[0]} x {distmat.shape[1]}, {n['ids']} ids, {n['cams']} cams"
    )

    baseline_name, baseline = "numpy port of torchreid's Python loop", torchreid_python_loop
    if torchreid_path:
        sys.path.insert(0, torchreid_path)
        try:
            rank_cy = importlib.import_module("rank_cy")
            baseline_name = f"torchreid Cython evaluate_cy ({rank_cy.__file__})"

            def baseline(*a):
                return rank_cy.evaluate_cy(*a, 50)
        except ImportError as e:
            print(
                f"    could not import rank_cy from {torchreid_path}: {e}; using the Python-loop port"
            )

    evaluate_rank(distmat[:50], q_pids[:50], g_pids, q_cams[:50], g_cams)  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    ours = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=50)
    t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    ref_cmc, ref_map = baseline(distmat, q_pids, g_pids, q_cams, g_cams)
    t_ref, c_ref = time.perf_counter() - t0, time.process_time() - c0
    dcmc = float(np.abs(np.asarray(ref_cmc)[: len(ours.cmc)] - ours.cmc).max())
    dmap = abs(float(ref_map) - ours.mAP)
    print(f"    baseline: {baseline_name}")
    # CPU time (all threads) is less distorted than wall time on a shared machine
    print(f"    CPU time: abdnet {c_ours:.3f} s, baseline {c_ref:.3f} s")
    print(
        f"    abdnet evaluate_rank: {t_ours:.3f} s   baseline: {t_ref:.3f} s   speed-up: {t_ref / t_ours:.1f}x (target >= 5x)"
    )
    print(
        f"    mAP {ours.mAP:.6f} vs {float(ref_map):.6f} (|diff| {dmap:.1e}), max |CMC diff| {dcmc:.1e}: "
        f"{'AGREE' if dcmc < 1e-6 and dmap < 1e-6 else 'DISAGREE'}"
    )


def _rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _hwm_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(kind, scale, seed, features):
    n = {
        k: max(1, int(round(v * scale))) if k not in ("cams", "dim") else v for k, v in MSMT.items()
    }
    q_pids, g_pids, q_cams, g_cams = make_ids(n["num_q"], n["num_g"], n["ids"], n["cams"], seed)
    gen = torch.Generator().manual_seed(seed)
    qf = torch.randn(n["num_q"], n["dim"], generator=gen)
    gf = torch.randn(n["num_g"], n["dim"], generator=gen)
    if features == "structured":  # identity signal, added in place (no temporaries)
        centers = torch.randn(n["ids"] + 1, n["dim"], generator=gen)
        for f, p in ((qf, q_pids), (gf, g_pids)):
            for s in range(0, len(f), 4096):
                f[s : s + 4096].add_(centers[torch.from_numpy(p[s : s + 4096])])
    try:  # reset the peak-RSS mark so that input generation does not count
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    base = _rss_kb()
    t0, c0 = time.perf_counter(), time.process_time()
    if kind == "matmul":
        out = qf @ gf.T
        del out
    else:
        evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, max_rank=50)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        json.dumps(
            {
                "seconds": secs,
                "cpu": cpu,
                "base_kb": base,
                "peak_kb": _hwm_kb(),
                "shape": [n["num_q"], n["num_g"]],
            }
        )
    )


def bench_msmt(scale, seed, features):
    def run(kind):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            kind,
            "--scale",
            str(scale),
            "--seed",
            str(seed),
            "--features",
            features,
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    mm = run("matmul")
    ev = run("features")
    q, g = ev["shape"]
    print(
        f"(b) MSMT17-sized: {q} x {g}, {MSMT['dim']}-d float32 {features} features, torch threads {torch.get_num_threads()}"
    )
    for name, r in (("bare qf @ gf.T", mm), ("evaluate_features", ev)):
        extra = (r["peak_kb"] - r["base_kb"]) / 2**20
        print(
            f"    {name:18s} {r['seconds']:8.2f} s (CPU {r['cpu']:7.2f} s)   extra peak RSS {extra:6.2f} GB"
        )
    ratio = ev["seconds"] / mm["seconds"]
    extra = (ev["peak_kb"] - ev["base_kb"]) / 2**20
    print(
        f"    time ratio evaluate_features / matmul: {ratio:.2f} (target <= 1.5); "
        f"extra peak RSS {extra:.2f} GB (target <= 3 GB)"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="shrink both problems (e.g. 0.1)")
    ap.add_argument(
        "--torchreid-path", default=None, help="folder with torchreid's built rank_cy extension"
    )
    ap.add_argument("--features", choices=("structured", "random"), default="structured")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", choices=("market", "msmt"), default=None)
    ap.add_argument("--child", choices=("matmul", "features"), default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.scale, args.seed, args.features)
        return
    print(
        f"torch {torch.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs, scale {args.scale}"
    )
    if args.skip != "market":
        bench_market(args.scale, args.torchreid_path, args.seed)
    if args.skip != "msmt":
        bench_msmt(args.scale, args.seed, args.features)


if __name__ == "__main__":
    main()
