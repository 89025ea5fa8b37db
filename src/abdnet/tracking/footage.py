"""Synthetic multi-camera footage with ground truth, written as MOTChallenge sequences.

People walk straight across each camera's view at their own depth and speed (nearer is
lower in the frame and larger), so they cross and occlude each other; some pass one camera
only, some pass a camera twice (leaving and coming back). A person's look in a camera comes
from an *appearance* function ``(pid, camera, k) -> (H, W, 3) uint8`` — by default the
built-in synthetic identities of :mod:`abdnet.data.synthetic`, or photos of real people
(:func:`photo_appearance`); ``k`` changes as they walk (pose, direction). Detections are the
visible ground-truth boxes with jitter, misses (more when occluded) and lower confidence
under occlusion.

Each camera ``ROOT/camN/`` holds ``seqinfo.ini``, ``img1/000001.jpg``..., ``det/det.txt``
and ``gt/gt.txt`` (``frame,id,x,y,w,h,1,1,visibility``; one id is one person in every
camera).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from abdnet.data.dataset import ImageRecord
from abdnet.files import atomic_directory, check_output
from abdnet.tracking.mot import MotRows, SequenceInfo, write_mot, write_seqinfo

__all__ = [
    "FootageConfig",
    "Walk",
    "plan_walks",
    "render_camera",
    "write_footage",
    "synthetic_appearance",
    "photo_appearance",
]

Appearance = Callable[[int, int, int], np.ndarray]


@dataclass(frozen=True)
class FootageConfig:
    cameras: int = 2
    people: int = 8
    frames: int = 200  # per camera
    width: int = 320
    height: int = 180
    frame_rate: float = 25.0
    person_height: float = 0.55  # of the frame height, for the nearest walker
    one_camera: float = 0.25  # share of people seen by one camera only
    return_share: float = 0.15  # share of visits that pass the camera a second time
    jitter: float = 0.03  # detection jitter, share of the box size
    miss: float = 0.03  # chance a visible person is not detected
    pose_every: int = 12  # frames between appearance changes
    seed: int = 0


@dataclass(frozen=True)
class Walk:
    """One pass of person ``pid`` through camera ``camera``: from ``x0`` to ``x1`` (box
    centre, pixels) over frames ``start..end``, at depth ``depth`` in [0, 1] (1: nearest)."""

    pid: int
    camera: int
    start: int
    end: int
    x0: float
    x1: float
    depth: float
    pose: int  # first appearance index


def plan_walks(cfg: FootageConfig) -> list[Walk]:
    """Every pass of every person through every camera, deterministic from ``cfg.seed``."""
    rng = np.random.default_rng([cfg.seed, 7])
    walks: list[Walk] = []
    for pid in range(1, cfg.people + 1):
        if cfg.cameras > 1 and rng.random() < cfg.one_camera:
            cams = [int(rng.integers(cfg.cameras))]
        else:
            cams = list(rng.permutation(cfg.cameras))
        for cam in cams:
            passes = 2 if rng.random() < cfg.return_share else 1
            length = int(rng.integers(cfg.frames // 4, cfg.frames // 2))
            starts = sorted(rng.integers(1, max(2, cfg.frames - length), size=passes).tolist())
            for p, s in enumerate(starts):
                if p and s < starts[p - 1] + length + 10:
                    continue  # passes of one person never overlap
                left = rng.random() < 0.5
                half = cfg.width * 0.15
                x0, x1 = (-half, cfg.width + half) if left else (cfg.width + half, -half)
                walks.append(
                    Walk(
                        pid=pid,
                        camera=int(cam),
                        start=int(s),
                        end=int(min(cfg.frames, s + length)),
                        x0=float(x0),
                        x1=float(x1),
                        depth=float(rng.uniform(0.55, 1.0)),
                        pose=int(rng.integers(0, 1000)) * 2 + (0 if left else 1),
                    )
                )
    return walks


def _box(w: Walk, frame: int, cfg: FootageConfig) -> np.ndarray:
    """``x0, y0, x1, y1`` of walker ``w`` at ``frame`` (may lie partly outside the frame)."""
    f = (frame - w.start) / max(w.end - w.start, 1)
    h = cfg.height * cfg.person_height * w.depth
    width = h * 0.375
    cx = w.x0 + f * (w.x1 - w.x0)
    bottom = cfg.height * (0.55 + 0.43 * w.depth)
    return np.array([cx - width / 2, bottom - h, cx + width / 2, bottom])


def _background(cfg: FootageConfig, cam: int) -> np.ndarray:
    rng = np.random.default_rng([cfg.seed, 8, cam])
    top, bottom = rng.uniform(0.2, 0.8, 3), rng.uniform(0.2, 0.8, 3)
    t = np.linspace(0, 1, cfg.height)[:, None, None]
    img = (1 - t) * top + t * bottom + rng.normal(0, 0.03, (cfg.height, cfg.width, 3))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def render_camera(
    cfg: FootageConfig, cam: int, walks: list[Walk], appearance: Appearance
) -> tuple[list[np.ndarray], MotRows, MotRows]:
    """The frames of camera ``cam``, its ground truth and its detections."""
    rng = np.random.default_rng([cfg.seed, 9, cam])
    mine = [w for w in walks if w.camera == cam]
    bg = _background(cfg, cam)
    frames: list[np.ndarray] = []
    gt: list[tuple[int, int, np.ndarray, float]] = []
    dets: list[tuple[int, np.ndarray, float]] = []
    for k in range(1, cfg.frames + 1):
        img = bg.copy()
        here = sorted((w for w in mine if w.start <= k <= w.end), key=lambda w: w.depth)
        boxes = []
        for w in here:  # far to near: nearer people are drawn over farther ones
            b = _box(w, k, cfg)
            pose = w.pose + 2 * ((k - w.start) // cfg.pose_every)
            sprite = appearance(w.pid, cam, pose)
            bw, bh = int(round(b[2] - b[0])), int(round(b[3] - b[1]))
            if bw < 2 or bh < 2:
                continue
            sprite = np.asarray(Image.fromarray(sprite).resize((bw, bh), Image.BILINEAR))
            x0, y0 = int(round(b[0])), int(round(b[1]))
            sx0, sy0 = max(0, -x0), max(0, -y0)
            dx0, dy0 = max(0, x0), max(0, y0)
            dx1, dy1 = min(cfg.width, x0 + bw), min(cfg.height, y0 + bh)
            if dx1 <= dx0 or dy1 <= dy0:
                continue
            img[dy0:dy1, dx0:dx1] = sprite[sy0 : sy0 + dy1 - dy0, sx0 : sx0 + dx1 - dx0]
            boxes.append((w, np.array([dx0, dy0, dx1, dy1], dtype=np.float64)))
        frames.append(img)
        for i, (w, b) in enumerate(boxes):
            area = (b[2] - b[0]) * (b[3] - b[1])
            mask = np.zeros((int(b[3] - b[1]), int(b[2] - b[0])), dtype=bool)
            for _, b2 in boxes[i + 1 :]:  # drawn later: in front
                ix0, iy0 = max(b[0], b2[0]) - b[0], max(b[1], b2[1]) - b[1]
                ix1, iy1 = min(b[2], b2[2]) - b[0], min(b[3], b2[3]) - b[1]
                if ix1 > ix0 and iy1 > iy0:
                    mask[int(iy0) : int(iy1), int(ix0) : int(ix1)] = True
            vis = 1.0 - mask.sum() / max(area, 1.0)
            gt.append((k, w.pid, b, vis))
            if vis < 0.25 or rng.random() < cfg.miss / max(vis, 0.3):
                continue
            size = np.array([b[2] - b[0], b[3] - b[1]] * 2)
            jb = b + rng.normal(0, cfg.jitter, 4) * size
            jb[2:] = np.maximum(jb[2:], jb[:2] + 2)
            conf = float(np.clip(0.6 + 0.4 * vis - rng.uniform(0, 0.2), 0.05, 1.0))
            dets.append((k, jb, conf))

    def rows(items, with_ids: bool) -> MotRows:
        if not items:
            return MotRows.empty()
        boxes = np.stack([it[-2] for it in items])
        return MotRows.from_arrays(
            frames=np.asarray([it[0] for it in items]),
            ids=np.asarray([it[1] for it in items]) if with_ids else -np.ones(len(items)),
            boxes=np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1),
            scores=np.asarray([it[-1] for it in items]),
        )

    return frames, rows(gt, True), rows(dets, False)


def write_footage(
    out: str | Path,
    cfg: FootageConfig | None = None,
    *,
    appearance: Appearance | None = None,
    force: bool = False,
) -> list[Path]:
    """Render ``cfg`` into ``out`` (atomically: a killed run leaves no half folder) and
    return the camera folders ``out/cam1`` ... ``out/camN``."""
    cfg = cfg or FootageConfig()
    root = check_output(out, force=force, option="out", folder=True)
    look = appearance or synthetic_appearance(seed=cfg.seed, cameras=cfg.cameras)
    walks = plan_walks(cfg)
    with atomic_directory(root) as tmp:
        for cam in range(cfg.cameras):
            name = f"cam{cam + 1}"
            folder = tmp / name
            (folder / "img1").mkdir(parents=True)
            (folder / "det").mkdir()
            (folder / "gt").mkdir()
            frames, gt, det = render_camera(cfg, cam, walks, look)
            for k, img in enumerate(frames, start=1):
                Image.fromarray(img).save(folder / "img1" / f"{k:06d}.jpg", quality=92)
            info = SequenceInfo(name, cfg.frame_rate, cfg.frames, cfg.width, cfg.height)
            write_seqinfo(folder / "seqinfo.ini", info)
            write_mot(folder / "det" / "det.txt", det)
            _write_gt(folder / "gt" / "gt.txt", gt)
    return [root / f"cam{c + 1}" for c in range(cfg.cameras)]


def _write_gt(path: Path, gt: MotRows) -> None:
    order = np.lexsort((gt.ids, gt.frames))
    lines = []
    for i in order:
        x, y, w, h = gt.boxes[i]
        lines.append(
            f"{gt.frames[i]},{gt.ids[i]},{x:.2f},{y:.2f},{w:.2f},{h:.2f},1,1,{gt.scores[i]:.3f}\n"
        )
    path.write_text("".join(lines))


def synthetic_appearance(*, seed: int = 0, cameras: int = 2, ids: int = 200) -> Appearance:
    """People of the built-in synthetic re-ID generator (camera colour casts included)."""
    from abdnet.config import SyntheticConfig
    from abdnet.data.synthetic import SyntheticReID

    gen = SyntheticReID(
        SyntheticConfig(ids=ids, cams=cameras, per_id=1, height=128, width=48, seed=seed)
    )
    cache: dict[tuple[int, int, int], np.ndarray] = {}

    def look(pid: int, cam: int, k: int) -> np.ndarray:
        key = (pid, cam, k % 8)
        if key not in cache:
            cache[key] = gen.render_array(12, pid, cam, key[2])
        return cache[key]

    return look


def photo_appearance(records: Iterable[ImageRecord]) -> tuple[Appearance, list[int]]:
    """People from photos of real people: person ``i`` (1-based) of the footage is the
    ``i``-th smallest pid of ``records`` (any parsed data set's records, e.g. a split's
    query and gallery), in footage camera ``c`` shown by that person's photos of camera
    ``c`` (0-based, as :class:`~abdnet.data.dataset.ImageRecord`), or by the photos of their
    first camera where they have none in ``c``. Returns the appearance function and the
    pids in footage order."""
    photos: dict[int, dict[int, list[str]]] = {}
    for r in records:
        if r.pid >= 0:
            photos.setdefault(r.pid, {}).setdefault(r.camid, []).append(r.path)
    if not photos:
        raise ValueError("photo_appearance: no records with a person id")
    for cams in photos.values():
        for files in cams.values():
            files.sort()
    pids = sorted(photos)
    cache: dict[str, np.ndarray] = {}

    def look(pid: int, cam: int, k: int) -> np.ndarray:
        cams = photos[pids[pid - 1]]
        files = cams.get(cam) or cams[min(cams)]
        f = files[k % len(files)]
        if f not in cache:
            with Image.open(f) as im:
                cache[f] = np.asarray(im.convert("RGB"))
        return cache[f]

    return look, pids
