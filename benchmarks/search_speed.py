"""Search speed and recall@10 of the approximate indexes against exact (flat) search.

Data: N synthetic L2-normalized vectors with a clustered structure like re-ID embeddings
(many identities, a few crops each): ``N / per_cluster`` unit centres c, and each point is
normalize(c + noise * g / sqrt(D)) with g ~ N(0, I_D), so ``noise`` is the ratio of the
perturbation's length to the centre's. Queries are fresh points of the same clusters (not
in the gallery). Ground truth = the
flat index's top-10 (exact). Default: 1,000,000 x 512-d (the 2048-d variant needs 8 GiB for
the raw vectors alone; pass ``--dim 2048`` on a machine that has it). The target is recall@10
>= 0.95 at >= 10x flat's queries/s.

    python benchmarks/search_speed.py                 # 1M x 512, the reference run
    python benchmarks/search_speed.py --n 20000       # a quick check

Prints one row per index / search setting: build time, memory (serialized index size),
queries/s, speed-up over flat, recall@10.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def clustered(n: int, dim: int, per_cluster: int, noise: float, seed: int, centers=None):
    """(n, dim) float32 unit vectors around ``centers`` (made when None), and the centres."""
    rng = np.random.default_rng(seed)
    if centers is None:
        centers = rng.standard_normal((max(1, n // per_cluster), dim), dtype=np.float32)
        centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    step = 65536  # chunks keep the float temporaries small at 1M x 2048
    for s in range(0, n, step):
        m = min(step, n - s)
        x = centers[rng.integers(0, len(centers), m)]
        x = x + (noise / np.sqrt(dim)) * rng.standard_normal((m, dim), dtype=np.float32)
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, centers


def timed_search(index, queries: np.ndarray, k: int, min_seconds: float = 1.0):
    """(distances, indices, queries/s); repeats until ``min_seconds`` have passed."""
    index.search(queries[: min(10, len(queries))], k)  # warm-up (page-in, thread pool)
    start = time.perf_counter()
    reps = 0
    while True:
        res = index.search(queries, k)
        reps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            break
    return res.distances, res.indices, reps * len(queries) / elapsed


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    hits = sum(len(set(f[:k]) & set(t)) for f, t in zip(found, truth))
    return hits / truth.size


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=1_000_000, help="gallery size (default 1,000,000)")
    ap.add_argument("--dim", type=int, default=512, help="feature dimension (default 512)")
    ap.add_argument("--per-cluster", type=int, default=20, help="points per cluster (identity)")
    ap.add_argument("--noise", type=float, default=1.0, help="within-cluster spread (relative)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="faiss OpenMP threads (0: all cores)")
    ap.add_argument("--nlist", type=int, help="ivfpq nlist (default ~4 sqrt(N))")
    ap.add_argument("--m", type=int, help="ivfpq sub-quantizers (default D/16 <= 64)")
    ap.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--refine", default="flat", choices=("flat", "sq8", "fp16", "none"))
    ap.add_argument("--k-factor", type=int, default=8)
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=100)
    ap.add_argument("--ef-search", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--skip", nargs="*", default=[], choices=("ivfpq", "hnsw"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import faiss

    from abdnet.retrieval import build_index

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"faiss {faiss.__version__} with {faiss.omp_get_max_threads()} threads"
    )
    t0 = time.perf_counter()
    gallery, centers = clustered(args.n, args.dim, args.per_cluster, args.noise, args.seed)
    queries, _ = clustered(
        args.queries, args.dim, args.per_cluster, args.noise, args.seed + 1, centers
    )
    print(
        f"data: {args.n} x {args.dim} gallery, {args.queries} queries, {len(centers)} clusters "
        f"({time.perf_counter() - t0:.1f} s to generate)"
    )

    rows = []

    def report(name, build_s, index, qps, rec, base_qps):
        mem = index.memory_bytes() / 2**20
        speed = qps / base_qps if base_qps else 1.0
        rows.append((name, build_s, mem, qps, speed, rec))
        print(
            f"{name:34s} build {build_s:8.1f} s  mem {mem:9.1f} MiB  {qps:10.1f} q/s  "
            f"x{speed:6.1f}  recall@{args.k} {rec:.4f}",
            flush=True,
        )

    t = time.perf_counter()
    flat = build_index(gallery, "flat")
    build_flat = time.perf_counter() - t
    _, truth, flat_qps = timed_search(flat, queries, args.k)
    report("flat (exact)", build_flat, flat, flat_qps, 1.0, flat_qps)
    del flat

    if "ivfpq" not in args.skip:
        t = time.perf_counter()
        ivf = build_index(
            gallery, "ivfpq", nlist=args.nlist, m=args.m, refine=args.refine, k_factor=args.k_factor
        )
        build_s = time.perf_counter() - t
        for nprobe in args.nprobe:
            ivf.apply_search_params(nprobe=nprobe)
            _, found, qps = timed_search(ivf, queries, args.k)
            name = f"ivfpq nlist={ivf.params['nlist']} m={ivf.params['m']} nprobe={nprobe} refine={args.refine}"
            report(name, build_s, ivf, qps, recall_at_k(found, truth), flat_qps)
        del ivf

    if "hnsw" not in args.skip:
        t = time.perf_counter()
        hnsw = build_index(
            gallery, "hnsw", hnsw_m=args.hnsw_m, ef_construction=args.ef_construction
        )
        build_s = time.perf_counter() - t
        for ef in args.ef_search:
            hnsw.apply_search_params(ef_search=ef)
            _, found, qps = timed_search(hnsw, queries, args.k)
            report(
                f"hnsw M={args.hnsw_m} efSearch={ef}",
                build_s,
                hnsw,
                qps,
                recall_at_k(found, truth),
                flat_qps,
            )

    ok = [r for r in rows[1:] if r[5] >= 0.95 and r[4] >= 10]
    print(
        "target (recall@10 >= 0.95 at >= 10x flat q/s): "
        + ("met by " + "; ".join(r[0] for r in ok) if ok else "NOT met at this size")
    )


if __name__ == "__main__":
    main()
