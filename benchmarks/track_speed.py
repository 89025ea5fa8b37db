"""End-to-end tracking speed: frames per second per camera, where the time goes, and how the
linking cost grows with the number of tracklets.

1. **Pipeline.** Synthetic footage (``abdnet.tracking.footage``, 640x360 by default, about
   three people per frame, detections from its ``det/det.txt``) runs through
   ``track_camera`` + ``identify`` with the ``real-small`` network (random weights: speed
   does not depend on them). Printed per camera: frames/s end to end and the share of time
   in decoding, detection, tracking (the tracker library), crop bookkeeping, embedding and
   linking (embedding and linking are shared by all cameras and split by frames).
2. **Embedding, in the pipeline vs offline.** The crops the pipeline embedded, cut again
   and embedded in one batch by the same embedder, in the same run: crops/s both ways and
   the ratio.
3. **Detector.** ``--detector NAME`` also times a torchvision detector (random weights:
   the same network cost) on the same frames, batched; its frames/s and the end-to-end
   frames/s it would give with the detector in the loop. (Random weights find nobody, so
   the run tracks the file's boxes.)
4. **Linking.** ``identify`` on 1k / 3k / 10k synthetic tracklets over 10 cameras
   (embeddings: a unit vector per person plus noise; threshold: the 1e-3 quantile of the
   impostor distances, as a calibration would set it): seconds each and the growth
   exponent between sizes.

    python benchmarks/track_speed.py                                 # defaults
    python benchmarks/track_speed.py --frames 100 --links 1000,3000  # a quick check
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent


def synthetic_tracklets(n: int, *, cameras: int = 10, dim: int = 512, seed: int = 0):
    """``n`` tracklets over ``cameras`` cameras as ``CameraTracks``: people walk through a
    few cameras, a visit is one or two tracklets (broken by an occlusion), embeddings are a
    unit vector per person plus noise. Returns (cameras, threshold)."""
    from abdnet.tracking import CameraInput, CameraTracks, Tracklet

    rng = np.random.default_rng(seed)
    people = max(1, n // 5)
    centre = rng.normal(size=(people, dim))
    centre /= np.linalg.norm(centre, axis=1, keepdims=True)
    per_cam: list[list[Tracklet]] = [[] for _ in range(cameras)]
    span = 3600.0  # seconds of footage
    made = 0
    while made < n:
        p = int(rng.integers(people))
        cam = int(rng.integers(cameras))
        t0 = float(rng.uniform(0, span))
        for _ in range(int(rng.integers(1, 3))):
            if made >= n:
                break
            length = float(rng.uniform(2, 20))
            e = centre[p] + rng.normal(scale=0.6 / np.sqrt(dim), size=dim)
            frames = np.arange(int(t0 * 25) + 1, int((t0 + length) * 25) + 2)
            times = (frames - 1) / 25.0
            per_cam[cam].append(
                Tracklet(
                    camera=f"cam{cam + 1}",
                    track=len(per_cam[cam]) + 1,
                    frames=frames,
                    boxes=np.zeros((len(frames), 4)),
                    scores=np.ones(len(frames)),
                    times=times,
                    embedding=e / np.linalg.norm(e),
                )
            )
            t0 += length + float(rng.uniform(0.5, 5))
            made += 1
    every = np.stack([t.embedding for ts in per_cam for t in ts])
    owner = np.concatenate([np.full(len(ts), c) for c, ts in enumerate(per_cam)])
    sample = rng.choice(len(every), size=min(len(every), 2000), replace=False)
    d = 2 - 2 * every[sample] @ every[sample].T
    pid_guess = np.argmax(every[sample] @ centre.T, axis=1)
    impostor = d[(pid_guess[:, None] != pid_guess[None, :])]
    threshold = float(np.quantile(impostor, 1e-3))
    del owner
    out = [
        CameraTracks(
            camera=CameraInput(f"cam{c + 1}", Path(f"cam{c + 1}")),
            tracklets=ts,
            frames=int(span * 25),
            frame_rate=25.0,
            size=(640, 360),
            detections=0,
        )
        for c, ts in enumerate(per_cam)
    ]
    return out, threshold


def linking(sizes: list[int], embedder) -> list[tuple[int, float, int]]:
    from abdnet.tracking import identify

    rows = []
    for n in sizes:
        cams, threshold = synthetic_tracklets(n, dim=embedder.space.dim)
        t0 = time.perf_counter()
        ids = identify(cams, embedder=embedder, threshold=threshold)
        rows.append((n, time.perf_counter() - t0, len(set(ids.labels.values()))))
        print(
            f"linking {n:6d} tracklets / 10 cameras: {rows[-1][1]:8.2f} s "
            f"({rows[-1][2]} identities, threshold {threshold:.3f})",
            flush=True,
        )
    for (n0, s0, _), (n1, s1, _) in zip(rows, rows[1:]):
        print(
            f"  growth {n0} -> {n1}: x{s1 / s0:.1f} time for x{n1 / n0:.1f} tracklets "
            f"(exponent {np.log(s1 / s0) / np.log(n1 / n0):.2f})"
        )
    return rows


def build_embedder(config_path: Path, batch_size: int):
    from abdnet.config import load_config
    from abdnet.models import build_model_from_config
    from abdnet.retrieval import FeatureExtractor

    cfg = load_config(config_path)
    torch.manual_seed(0)
    model = build_model_from_config(cfg.model, num_classes=10).eval()
    return FeatureExtractor(model, device="cpu", batch_size=batch_size, config=cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "real-small.yaml"))
    ap.add_argument("--cameras", type=int, default=2)
    ap.add_argument("--frames", type=int, default=250)
    ap.add_argument("--people", type=int, default=12)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--batch", type=int, default=32, help="embedder batch size")
    ap.add_argument("--detector", default="", help="also time this torchvision detector")
    ap.add_argument("--links", default="1000,3000,10000", help="tracklet counts to link")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    logging.getLogger("abdnet").setLevel(logging.ERROR)  # per-crop upscaling notes, clipping
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"date {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}")
    print(
        f"machine {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"torch threads {torch.get_num_threads()}, load {os.getloadavg()}"
    )
    embedder = build_embedder(Path(args.config), args.batch)
    if args.frames > 0:
        pipeline(args, embedder)
    sizes = [int(s) for s in args.links.split(",") if s and int(s) > 0]
    if sizes:
        linking(sizes, embedder)


def pipeline(args, embedder) -> None:
    from abdnet.tracking import CameraInput, identify, track_camera
    from abdnet.tracking.footage import FootageConfig, write_footage

    cfg = FootageConfig(
        cameras=args.cameras,
        people=args.people,
        frames=args.frames,
        width=args.width,
        height=args.height,
        seed=1,
    )
    from abdnet.tracking import DEFAULT_TRACKER, build_tracker

    build_tracker(DEFAULT_TRACKER, frame_rate=25.0)  # imports trackers / supervision untimed
    with tempfile.TemporaryDirectory(prefix="track-speed-") as tmp:
        seqs = write_footage(Path(tmp) / "root", cfg)
        tracks = []
        wall = {}
        for s in seqs:
            t0 = time.perf_counter()
            tracks.append(
                track_camera(CameraInput(s.name, s), input_height=embedder.config.data.height)
            )
            wall[s.name] = time.perf_counter() - t0
        crops = [
            c.image
            for cam in tracks
            for t in cam.tracklets
            for c in t.crops
            if c.image is not None and c.image.size
        ]
        embedder.embed(crops[: args.batch])  # warm-up, outside every timing
        ids = identify(tracks, embedder=embedder, threshold=0.3)
        total_frames = sum(c.frames for c in tracks)
        per_frame = {k: v / total_frames for k, v in ids.timings.items()}
        boxes = sum(c.detections for c in tracks) / total_frames
        print(
            f"footage {args.cameras} cameras x {args.frames} frames, {args.width}x"
            f"{args.height}, {boxes:.1f} detections per frame; "
            f"{ids.crops_embedded} crops embedded"
        )
        print(
            f"{'camera':8s} {'fps':>7s} {'decode':>7s} {'detect':>7s} {'track':>7s} "
            f"{'crops':>7s} {'embed':>7s} {'link':>7s} {'other':>7s}"
        )
        for cam in tracks:
            t = dict(cam.timings)
            t["embed"] = per_frame["embed"] * cam.frames
            t["link"] = per_frame["link"] * cam.frames
            total = wall[cam.camera.name] + t["embed"] + t["link"]
            t["other"] = total - sum(t.values())  # opening, reading det.txt, the tracker's setup
            share = {k: 100 * v / total for k, v in t.items()}
            print(
                f"{cam.camera.name:8s} {cam.frames / total:7.1f} "
                + " ".join(
                    f"{share[k]:6.1f}%"
                    for k in ("decode", "detect", "track", "crops", "embed", "link", "other")
                )
            )
        # the same crops, embedded offline in one batch by the same embedder
        t0 = time.perf_counter()
        embedder.embed(crops)
        offline = time.perf_counter() - t0
        in_pipe = ids.crops_embedded / ids.timings["embed"]
        print(
            f"embedding: pipeline {in_pipe:.1f} crops/s, offline one batch "
            f"{len(crops) / offline:.1f} crops/s, ratio {in_pipe / (len(crops) / offline):.2f}"
        )
        if args.detector:
            from abdnet.tracking import TorchvisionDetector
            from abdnet.tracking.detector import torchvision_model
            from abdnet.tracking.video import open_source

            det = TorchvisionDetector(torchvision_model(args.detector), batch_size=4)
            frames = [f.image for f in open_source(seqs[0])][:40]
            det.detect(frames[:4])  # warm-up
            t0 = time.perf_counter()
            for i in range(0, len(frames), 4):
                det.detect(frames[i : i + 4])
            per = (time.perf_counter() - t0) / len(frames)
            cam = tracks[0]
            rest = (
                wall[cam.camera.name] + (per_frame["embed"] + per_frame["link"]) * cam.frames
            ) / cam.frames
            print(
                f"detector {args.detector}: {1 / per:.1f} frames/s alone; end to end with it "
                f"in the loop {1 / (rest + per):.1f} frames/s "
                f"(detection {100 * per / (rest + per):.0f}% of the time)"
            )


if __name__ == "__main__":
    main()
