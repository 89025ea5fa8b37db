"""The gallery service under load, against offline batch extraction measured in the same run.

Parts (all by default; ``--parts`` picks some):

- ``extract``: images/s of offline batch extraction (what ``abdnet extract`` runs:
  ``FeatureExtractor.extract`` over image files, batch 64) of all the gallery crops.
- ``add``: bulk enrolment (what ``abdnet gallery add`` runs: read, hash, embed, store the
  crop, write the row) of the same crops into a new gallery; images/s and the ratio to
  offline extraction.
- ``serve``: ``abdnet serve`` on that gallery in its own process (``--replicas N``: N
  processes on one ``--gallery`` Milvus server URI and one ``--crops`` store, the clients
  spread over them); ``--clients`` concurrent clients (one asyncio process) post search
  queries for ``--seconds``; errors, queries/s and the ratio to offline extraction (each
  query is one image through the model plus a gallery search), client-side p50 / p99
  latency, the mean dynamic batch.

The ratios of ``add`` and ``serve`` are taken against extraction measured right before and
right after them (``--baseline-images`` crops each time, mean of the two), so that a change
in the load of a shared machine during the run does not bias them.
- ``search``: gallery-search latency alone (no model, no HTTP) at ``--search-entries``
  entries of random unit embeddings: one query, one query with a camera filter, and 16
  queries in one call (what the service does with concurrent queries).

The model is the architecture of ``configs/tiny.yaml`` with random weights (speed does not
depend on the weights); the crops come from the synthetic generator (``abdnet synth``).

    python benchmarks/serve_load.py --threads 1                       # >= 10,000 crops, 60 s
    python benchmarks/serve_load.py --parts search --search-entries 100000
    python benchmarks/serve_load.py --replicas 2 --gallery http://127.0.0.1:19530 --crops DIR
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{model}, {os.cpu_count()} cpus, load average {load:.1f}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _crops(root: Path, ids: int, per_id: int) -> list[str]:
    from abdnet.config import SyntheticConfig
    from abdnet.data import write_synthetic
    from abdnet.retrieval import collect_images

    if not (root / "bounding_box_test").is_dir():
        t = time.perf_counter()
        write_synthetic(root, SyntheticConfig(ids=ids, cams=4, per_id=per_id, height=128, width=64))
        print(f"synthetic crops written in {time.perf_counter() - t:.0f} s")
    return collect_images([root / "bounding_box_train", root / "bounding_box_test"])


def _model(path: Path) -> Path:
    import torch

    from abdnet.config import load_config
    from abdnet.models import build_model_from_config
    from abdnet.models.io import save_model

    if not path.is_file():
        cfg = load_config(ROOT / "configs" / "tiny.yaml")
        torch.manual_seed(0)
        save_model(path, build_model_from_config(cfg.model, 8), cfg)
    return path


def extraction_speed(ckpt: Path, paths: list[str], batch: int) -> float:
    """Offline batch extraction of ``paths``, images/s (after one warm-up batch)."""
    from abdnet.retrieval import FeatureExtractor

    ext = FeatureExtractor(ckpt, device="cpu", batch_size=batch)
    ext.extract(paths[:batch])
    t = time.perf_counter()
    ext.extract(paths)
    return len(paths) / (time.perf_counter() - t)


def part_extract(ckpt: Path, paths: list[str], batch: int) -> None:
    speed = extraction_speed(ckpt, paths, batch)
    print(
        f"[extract] offline batch extraction: {speed:.1f} img/s ({len(paths)} crops, batch {batch})"
    )


def _bracketed(ckpt: Path, base: list[str], batch: int, run):
    """``run()`` between two extraction baselines: (its result, baseline before, after)."""
    before = extraction_speed(ckpt, base, batch)
    result = run()
    after = extraction_speed(ckpt, base, batch)
    return result, before, after


def part_add(
    ckpt: Path,
    paths: list[str],
    gallery: str,
    batch: int,
    base: list[str],
    args: argparse.Namespace,
) -> None:
    from abdnet.gallery import Gallery, describe_extractor, enrol_files
    from abdnet.retrieval import FeatureExtractor

    def run() -> float:
        ext = FeatureExtractor(ckpt, device="cpu", batch_size=batch)
        ext.extract(paths[:batch])  # warm-up, as for the baseline
        with Gallery.open(
            gallery,
            model=describe_extractor(ext),
            create=True,
            collection=args.collection,
            crops=args.crops,
        ) as g:
            t = time.perf_counter()
            report = enrol_files(g, ext, paths, batch_size=batch)
            speed = report.added / (time.perf_counter() - t)
            print(f"[add] {report.added} added, gallery {g.size()}")
        return speed

    speed, before, after = _bracketed(ckpt, base, batch, run)
    baseline = (before + after) / 2
    print(
        f"[add] bulk gallery add: {speed:.1f} img/s; extraction before / after: {before:.1f} / "
        f"{after:.1f} img/s; ratio {speed / baseline:.2f}"
    )


async def _load(urls: list[str], queries: list[tuple[str, bytes]], clients: int, seconds: float):
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    stop = time.perf_counter() + seconds

    async def client(n: int, c: httpx.AsyncClient) -> None:
        url = urls[n % len(urls)]  # clients spread evenly over the replicas
        i = n
        while time.perf_counter() < stop:
            name, data = queries[i % len(queries)]
            i += clients
            t = time.perf_counter()
            try:
                r = await c.post(url + "/search?k=10", files={"image": (name, data, "image/jpeg")})
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:100]}")
                    continue
            except httpx.HTTPError as exc:
                errors.append(repr(exc))
                continue
            latencies.append(time.perf_counter() - t)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(n, c) for n in range(clients)))
        wall = time.perf_counter() - t0
    return latencies, errors, wall


def _start_serve(
    ckpt: Path, gallery: str, args: argparse.Namespace
) -> tuple[str, subprocess.Popen]:
    port = _free_port()
    cmd = [
        sys.executable, "-m", "abdnet.cli.main", "serve", "--gallery", gallery,
        "--collection", args.collection, "--checkpoint", str(ckpt), "--port", str(port),
        "--log-level", "warning", "--max-batch", str(args.max_batch),
        "--max-wait-ms", str(args.max_wait_ms),
    ]  # fmt: skip
    if args.crops:
        cmd += ["--crops", args.crops]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return f"http://127.0.0.1:{port}", subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _wait_up(url: str, proc: subprocess.Popen) -> None:
    import httpx

    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"abdnet serve exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("abdnet serve did not start")
        time.sleep(0.5)


def part_serve(
    ckpt: Path, gallery: str, queries: list[str], args: argparse.Namespace, base: list[str]
) -> None:
    import httpx

    servers = [_start_serve(ckpt, gallery, args) for _ in range(args.replicas)]
    urls = [url for url, _ in servers]
    try:
        for url, proc in servers:
            _wait_up(url, proc)
        data = [(Path(q).name, Path(q).read_bytes()) for q in queries]
        asyncio.run(_load(urls, data[:32], args.clients, 5.0))  # warm-up
        metrics: list[list[str]] = []

        def run():
            metrics.append([httpx.get(u + "/metrics", timeout=30).text for u in urls])
            out = asyncio.run(_load(urls, data, args.clients, args.seconds))
            metrics.append([httpx.get(u + "/metrics", timeout=30).text for u in urls])
            return out

        (lat, errors, wall), b_before, b_after = _bracketed(ckpt, base, args.batch_size, run)
    finally:
        for _, proc in servers:
            proc.send_signal(signal.SIGTERM)
        for _, proc in servers:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    qps = len(lat) / wall
    ms = np.percentile(np.array(lat) * 1000, [50, 99]) if lat else [float("nan")] * 2
    images = sum(_metric(b, "sum") - _metric(a, "sum") for a, b in zip(*metrics))
    batches = sum(_metric(b, "count") - _metric(a, "count") for a, b in zip(*metrics))
    baseline = (b_before + b_after) / 2
    print(
        f"[serve] {args.replicas} replica(s) on {gallery}, {args.clients} clients, {wall:.0f} s: {len(lat)} searches, {len(errors)} errors; "
        f"{qps:.1f} queries/s; extraction before / after: {b_before:.1f} / {b_after:.1f} img/s; "
        f"ratio {qps / baseline:.2f}; latency p50 {ms[0]:.0f} ms, p99 {ms[1]:.0f} ms; mean "
        f"embed batch {images / max(batches, 1):.1f}"
    )
    for e in errors[:5]:
        print(f"  error: {e}")


def _metric(text: str, which: str) -> float:
    name = f'abdnet_batch_size_{which}{{stage="embed"}}'
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def part_search(tmp: Path, entries: int, dim: int) -> None:
    from PIL import Image

    from abdnet.gallery import (
        Enrolment,
        Gallery,
        ModelInfo,
        SearchFilter,
        decode_crop,
    )

    info = ModelInfo("0" * 64, "0" * 64, dim, 128, 64, (0.5,) * 3, (0.5,) * 3, False, "random")
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    with Gallery.open(tmp / "search.db", model=info, create=True) as g:
        step = 2000
        for start in range(0, entries, step):
            n = min(step, entries - start)
            feats = rng.standard_normal((n, dim)).astype(np.float32)
            feats /= np.linalg.norm(feats, axis=1, keepdims=True)
            enrol = []
            for i in range(start, start + n):
                buf = io.BytesIO()
                Image.new("RGB", (2, 4), (i % 256, (i // 256) % 256, i // 65536)).save(
                    buf, format="PNG"
                )
                enrol.append(Enrolment(decode_crop(buf.getvalue(), f"{i}.png"), camera=i % 6))
            g.add(enrol, feats)
        g.flush()
        build = time.perf_counter() - t
        q = rng.standard_normal((200, dim)).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        g.search(q[:2], 10)  # warm-up: the first search loads the segments
        rows = []
        for label, fn in [
            ("1 query", lambda i: g.search(q[i : i + 1], 10)),
            (
                "1 query, other cameras",
                lambda i: g.search(q[i : i + 1], 10, [SearchFilter(exclude_camera=i % 6)]),
            ),
            ("16 queries in one call", lambda i: g.search(q[i : i + 16], 10)),
        ]:
            times = []
            for i in range(0, 40):
                t = time.perf_counter()
                fn(i)
                times.append(time.perf_counter() - t)
            p50, p99 = np.percentile(np.array(times) * 1000, [50, 99])
            rows.append(f"{label}: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        size = g.size()
    import pymilvus

    try:
        import milvus_lite

        lite = getattr(milvus_lite, "__version__", "?")
    except ImportError:
        lite = "none"
    print(
        f"[search] {size} entries x {dim}-d (pymilvus {pymilvus.__version__}, milvus-lite "
        f"{lite}; filled in {build:.0f} s): " + "; ".join(rows)
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--parts", default="extract,add,serve,search")
    ap.add_argument("--workdir", help="keep crops, model and galleries here (default: temp)")
    ap.add_argument("--ids", type=int, default=1000, help="synthetic identities")
    ap.add_argument("--per-id", type=int, default=10, help="crops per identity and split")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument(
        "--baseline-images", type=int, default=1024, help="crops of each bracketing baseline"
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--search-entries", type=int, default=100_000)
    ap.add_argument("--search-dim", type=int, default=256, help="configs/tiny.yaml gives 256")
    ap.add_argument("--replicas", type=int, default=1, help="abdnet serve processes")
    ap.add_argument(
        "--gallery", help="Milvus server URI (default: a Milvus Lite file in the work folder)"
    )
    ap.add_argument("--collection", default="abdnet_gallery")
    ap.add_argument("--crops", help="crop store (folder or fsspec URL) shared by the replicas")
    args = ap.parse_args()
    if args.replicas > 1 and not (args.gallery and "://" in args.gallery):
        ap.error("--replicas > 1 needs --gallery http://HOST:PORT (Milvus Lite serves one process)")
    parts = set(args.parts.split(","))

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {_machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.workdir) if args.workdir else Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        if parts & {"extract", "add", "serve"}:
            ckpt = _model(work / "tiny.safetensors")
            crops = _crops(work / "synth", args.ids, args.per_id)
            print(f"model: configs/tiny.yaml architecture, random weights; {len(crops)} crops")
            gallery = args.gallery or str(work / "gallery.db")
            base = crops[: args.baseline_images]
            if "extract" in parts:
                part_extract(ckpt, crops, args.batch_size)
            if "add" in parts:
                part_add(ckpt, crops, gallery, args.batch_size, base, args)
            if "serve" in parts:
                from abdnet.retrieval import collect_images

                queries = collect_images([work / "synth" / "query"])
                part_serve(ckpt, gallery, queries, args, base)
        if "search" in parts:
            part_search(work, args.search_entries, args.search_dim)


if __name__ == "__main__":
    main()
