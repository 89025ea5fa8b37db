"""A synthetic person re-ID data set, rendered with numpy, deterministic from a seed.

It is meant to be a real (small) re-ID problem so every command can run with nothing
downloaded:

- Each identity has a persistent appearance: upper garment colour and pattern (solid,
  horizontal / vertical stripes, checks, an open jacket showing a shirt, a chest print),
  lower garment colour and cut (trousers, shorts, skirt), shoes, skin and hair tone, hair
  length, an optional hat and bag (backpack or shoulder bag), body height and build.
- Each camera changes it: the viewpoint distribution (front / back / side, mirrored),
  illumination gain, a strong colour cast, gamma, haze, its own background texture and
  colours, scale and position, blur, resolution loss and noise; partial occlusions and
  passers-by appear at random. Front and back views differ (a backpack is a full patch from
  behind and two straps from the front; jackets and prints show only from the front).

Layout of the splits (``SyntheticConfig(ids, cams, per_id, height, width, seed)``):
pids 1..ids//2 train, the rest test. A training identity gets ``per_id`` images spread
over the cameras; a test identity gets ``per_id`` gallery images and one query per camera.
The gallery also holds ``ids - ids//2`` distractors (pid 0, people seen once). File names
follow Market-1501 (``0007_c2s1_000123_00.jpg``), so ``write_synthetic`` output is read by
the Market-1501 parser and auto-detected as ``synthetic`` (marker file).

The person (appearance and rendering) is ``abdnet.data.person``; this module draws the
scene, the passer-by and the occluder around it and applies the camera.
"""

from __future__ import annotations

import json
import logging
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFilter

from abdnet.config import SyntheticConfig
from abdnet.files import atomic_write, check_output

from .dataset import ImageRecord, ReIDDataset, make_dataset
from .person import Appearance, PersonBox, make_appearance, render_person

# The file `abdnet synth` writes at the root of a set; layout detection looks for it.
SYNTHETIC_MARKER = "ABDNET_SYNTHETIC.json"

__all__ = ["SyntheticReID", "write_synthetic"]

log = logging.getLogger(__name__)

# split codes used in the per-image random streams
_TRAIN, _QUERY, _GALLERY, _DISTRACTOR = 10, 11, 12, 13


@dataclass(frozen=True)
class _Camera:
    views: np.ndarray  # (4,) probabilities of front, back, side-left, side-right
    gain: float
    cast: np.ndarray  # (3,) per-channel multipliers
    gamma: float
    haze: float
    haze_colour: np.ndarray
    blur: float
    noise: float
    lowres: bool
    scale: float
    occlusion: float  # probability of a foreground occluder
    background: np.ndarray  # (2H, 2W, 3) texture; each image crops it at a random offset


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1], (h, w): a coarse random grid, bilinearly upsampled."""
    grid = (rng.random((cells, max(2, cells // 2))) * 255).astype(np.uint8)
    img = Image.fromarray(grid).resize((w, h), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255.0


def _make_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A camera's scene texture, (h, w, 3) in [0, 1]; kinds: wall+floor, bricks, foliage, stripes, gradient."""
    c1 = np.clip(rng.uniform(0.05, 0.95, 3), 0, 1).astype(np.float32)
    c2 = np.clip(rng.uniform(0.05, 0.95, 3), 0, 1).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = int(rng.integers(5))
    if kind == 0:  # wall with panels above a tiled floor
        horizon = rng.uniform(0.45, 0.75) * h
        panel = rng.uniform(0.1, 0.3) * w
        wall = np.where(((xx % panel) < 1.5)[..., None], c2 * 0.6, c1)
        floor = np.where((((yy - horizon) % (0.08 * h)) < 1.5)[..., None], c1 * 0.5, c2)
        bg = np.where((yy < horizon)[..., None], wall, floor)
    elif kind == 1:  # bricks
        bh, bw = rng.uniform(0.04, 0.08) * h, rng.uniform(0.12, 0.3) * w
        row = np.floor(yy / bh)
        mortar = ((yy % bh) < 1.2) | (((xx + (row % 2) * bw / 2) % bw) < 1.2)
        bg = np.where(mortar[..., None], c2, c1)
    elif kind == 2:  # foliage / cluttered texture
        t = _smooth_noise(rng, h, w, int(rng.integers(6, 16)))[..., None]
        bg = c1 * t + c2 * (1 - t)
    elif kind == 3:  # shop windows / vertical stripes
        period = rng.uniform(0.15, 0.5) * w
        bg = np.where(((xx % period) < period * rng.uniform(0.3, 0.7))[..., None], c1, c2)
    else:  # sky-to-ground gradient
        t = (yy / h)[..., None]
        bg = c1 * (1 - t) + c2 * t
    bg = bg + 0.08 * (_smooth_noise(rng, h, w, 24)[..., None] - 0.5)
    for _ in range(int(rng.integers(1, 4))):  # fixed scene objects (poles, doors, signs)
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        ow, oh = rng.uniform(0.05, 0.3) * w, rng.uniform(0.1, 0.8) * h
        box = (xx >= x0) & (xx < x0 + ow) & (yy >= y0) & (yy < y0 + oh)
        bg = np.where(box[..., None], rng.uniform(0, 1, 3).astype(np.float32), bg)
    return np.clip(bg, 0, 1).astype(np.float32)


def _make_camera(rng: np.random.Generator, height: int, width: int) -> _Camera:
    cast = rng.uniform(0.75, 1.25, 3)
    cast = cast / cast.mean()  # the cast shifts colour; the gain sets brightness
    return _Camera(
        views=rng.dirichlet(np.full(4, 0.8)).astype(np.float64),
        gain=float(rng.uniform(0.65, 1.2)),
        cast=cast.astype(np.float32),
        gamma=float(rng.uniform(0.8, 1.25)),
        haze=float(rng.uniform(0.0, 0.2)),
        haze_colour=rng.uniform(0.3, 0.9, 3).astype(np.float32),
        blur=float(rng.uniform(0.0, 1.2)) * height / 128,
        noise=float(rng.uniform(0.01, 0.05)),
        lowres=bool(rng.random() < 0.3),
        scale=float(rng.uniform(0.88, 1.05)),
        occlusion=float(rng.uniform(0.05, 0.25)),
        background=_make_background(rng, 2 * height, 2 * width),
    )


class ImageSpec(NamedTuple):
    """What one image of the set shows; its random stream is drawn from these four."""

    code: int  # split code (_TRAIN, _QUERY, _GALLERY, _DISTRACTOR)
    pid: int  # identity; 0 = a distractor
    cam: int  # camera, 0-based
    k: int  # image number of the identity in its split (which distractor, for pid 0)


class SyntheticReID:
    """The synthetic data set of a ``SyntheticConfig``: identities, cameras and a renderer.

    ``dataset()`` returns the in-memory ``ReIDDataset`` (records named like Market-1501 files
    relative to a virtual root; ``read_image`` renders them). ``render(path)`` renders one
    record; the same path always gives the same image.
    """

    def __init__(self, config: SyntheticConfig | None = None) -> None:
        cfg = config or SyntheticConfig()
        for key, value, low in (
            ("ids", cfg.ids, 2),
            ("cams", cfg.cams, 2),
            ("per_id", cfg.per_id, 1),
        ):
            if value < low:
                raise ValueError(f"data.synthetic.{key}: must be >= {low}, got {value}")
        if cfg.ids > 9999:
            raise ValueError(
                f"data.synthetic.ids: at most 9999 (4-digit Market-1501 pids), got {cfg.ids}"
            )
        if cfg.height < 16 or cfg.width < 8:
            raise ValueError(
                f"data.synthetic: image size {cfg.height}x{cfg.width} too small (min 16x8)"
            )
        self.config = cfg
        self.num_train_ids = cfg.ids // 2
        self.identities = {
            pid: make_appearance(np.random.default_rng([cfg.seed, 1, pid]))
            for pid in range(1, cfg.ids + 1)
        }
        self.cameras = [
            _make_camera(np.random.default_rng([cfg.seed, 2, c]), cfg.height, cfg.width)
            for c in range(cfg.cams)
        ]
        yy, xx = np.mgrid[0 : cfg.height, 0 : cfg.width].astype(np.float32)
        self._yy, self._xx = yy + 0.5, xx + 0.5  # pixel centres
        self._specs: dict[str, ImageSpec] = {}
        self.train: list[ImageRecord] = []
        self.query: list[ImageRecord] = []
        self.gallery: list[ImageRecord] = []
        self._build_records()

    # -- records ---------------------------------------------------------------------------
    def _add(
        self, folder: str, out: list[ImageRecord], code: int, pid: int, cam: int, k: int
    ) -> None:
        frame = len(self._specs) + 1
        path = f"{folder}/{pid:04d}_c{cam + 1}s1_{frame:06d}_{k:02d}.jpg"
        self._specs[path] = ImageSpec(code, pid, cam, k)
        out.append(ImageRecord(path, pid, cam))

    def _build_records(self) -> None:
        cfg = self.config
        layout = np.random.default_rng([cfg.seed, 4])
        for pid in range(1, cfg.ids + 1):
            offset = int(layout.integers(cfg.cams))  # cameras cycle from a random start
            if pid <= self.num_train_ids:
                for k in range(cfg.per_id):
                    self._add(
                        "bounding_box_train", self.train, _TRAIN, pid, (offset + k) % cfg.cams, k
                    )
            else:
                for cam in range(cfg.cams):
                    self._add("query", self.query, _QUERY, pid, cam, 0)
                for k in range(cfg.per_id):
                    self._add(
                        "bounding_box_test", self.gallery, _GALLERY, pid, (offset + k) % cfg.cams, k
                    )
        for j in range(cfg.ids - self.num_train_ids):
            self._add(
                "bounding_box_test", self.gallery, _DISTRACTOR, 0, int(layout.integers(cfg.cams)), j
            )

    def dataset(self) -> ReIDDataset:
        cfg = self.config
        root = f"<synthetic ids={cfg.ids} cams={cfg.cams} per_id={cfg.per_id} size={cfg.height}x{cfg.width} seed={cfg.seed}>"
        return make_dataset(
            "synthetic", root, self.train, self.query, self.gallery, image_source=self.render
        )

    # -- rendering -------------------------------------------------------------------------
    def render(self, path: str) -> Image.Image:
        """The RGB image of record ``path`` (a path of this generator's records)."""
        spec = self._specs.get(path)
        if spec is None:
            raise FileNotFoundError(f"not an image of this synthetic data set: {path}")
        return Image.fromarray(self.render_array(*spec))

    def render_array(self, code: int, pid: int, cam: int, k: int) -> np.ndarray:
        """``(H, W, 3)`` uint8 image: identity ``pid`` (0: distractor ``k``) seen by camera ``cam``."""
        cfg = self.config
        if pid == 0:
            person = make_appearance(np.random.default_rng([cfg.seed, 3, k]))
        else:
            person = self.identities[pid]
        rng = np.random.default_rng([cfg.seed, code, pid, cam, k])
        return _render(person, self.cameras[cam], rng, self._yy, self._xx)


def _render(
    p: Appearance, cam: _Camera, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray
) -> np.ndarray:
    """One image: scene, passer-by, the person, an occluder, then the camera's response.

    The steps draw from ``rng`` in this order, so the same stream gives the same image."""
    h, w = yy.shape
    img = _scene_crop(cam, rng, h, w)
    _paint_passer_by(img, rng, yy, xx)
    box, view = _place_person(p, cam, rng, h, w)
    layer = render_person(p, box=box, view=view, yy=yy, xx=xx, rng=rng)
    img[layer.mask] = layer.colour[layer.mask]
    _paint_occluder(img, cam, rng, yy, xx)
    return _camera_response(img, cam, rng)


def _scene_crop(cam: _Camera, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random (h, w) crop of the camera's scene texture, its brightness jittered."""
    bh, bw = cam.background.shape[:2]
    oy, ox = int(rng.integers(bh - h + 1)), int(rng.integers(bw - w + 1))
    img = cam.background[oy : oy + h, ox : ox + w].copy()
    img *= rng.uniform(0.85, 1.15)
    return img


def _paint_passer_by(
    img: np.ndarray, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray
) -> None:
    """Sometimes another person behind, cut by an image edge (upper and lower colours)."""
    if rng.random() >= 0.2:
        return
    other = make_appearance(rng)
    h, w = yy.shape
    pw_ = rng.uniform(0.12, 0.3) * w
    left = rng.random() < 0.5
    x_lo, x_hi = (0, pw_) if left else (w - pw_, w)
    top = rng.uniform(0.05, 0.3) * h
    mid = top + rng.uniform(0.35, 0.45) * h
    band = (xx >= x_lo) & (xx < x_hi) & (yy >= top)
    img[band & (yy < mid)] = other.upper
    img[band & (yy >= mid)] = other.lower


class _Placement(NamedTuple):
    box: PersonBox
    view: int  # FRONT, BACK, SIDE_LEFT, SIDE_RIGHT (abdnet.data.person)


def _place_person(
    p: Appearance, cam: _Camera, rng: np.random.Generator, h: int, w: int
) -> _Placement:
    """The person's box (height from the person and the camera's scale, near the bottom
    centre) and the view, drawn from the camera's view distribution."""
    ph = min(0.98, p.height * cam.scale * rng.uniform(0.92, 1.06)) * h
    pw = ph * 0.55 * p.build
    x0 = (w - pw) / 2 + rng.uniform(-0.08, 0.08) * w
    y0 = h - ph - rng.uniform(0.0, 0.04) * h
    view = int(rng.choice(4, p=cam.views))
    return _Placement(PersonBox(x0=x0, y0=y0, width=pw, height=ph), view)


def _paint_occluder(
    img: np.ndarray, cam: _Camera, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray
) -> None:
    """Sometimes a foreground occluder (car, bench, railing, another person's shoulder)."""
    if rng.random() >= cam.occlusion:
        return
    h, w = yy.shape
    col = rng.uniform(0.05, 0.95, 3).astype(np.float32)
    if rng.random() < 0.6:
        occ = yy >= h * rng.uniform(0.6, 0.85)
    else:
        occ_w = rng.uniform(0.15, 0.3) * w
        occ = xx < occ_w if rng.random() < 0.5 else xx >= w - occ_w
    img[occ] = col * rng.uniform(0.7, 1.0)


def _camera_response(img: np.ndarray, cam: _Camera, rng: np.random.Generator) -> np.ndarray:
    """The camera's colour cast, gain, gamma, haze, resolution loss, blur and noise; uint8."""
    h, w = img.shape[:2]
    img = np.clip(img * cam.cast * (cam.gain * rng.uniform(0.85, 1.15)), 0, 1)
    img = img**cam.gamma
    img = img * (1 - cam.haze) + cam.haze * cam.haze_colour
    out = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
    if cam.lowres:
        out = out.resize((max(4, w // 2), max(8, h // 2)), Image.BILINEAR).resize(
            (w, h), Image.BILINEAR
        )
    radius = cam.blur + rng.uniform(0, 0.4)
    if radius > 0.2:
        out = out.filter(ImageFilter.GaussianBlur(radius))
    arr = np.asarray(out, dtype=np.float32) + rng.normal(0, cam.noise * 255, (h, w, 3)).astype(
        np.float32
    )
    return np.clip(arr, 0, 255).astype(np.uint8)


# The generator of the worker processes of ``write_synthetic(workers=N)``.
_WORKER_GEN: SyntheticReID | None = None


def _init_writer(config: SyntheticConfig) -> None:
    global _WORKER_GEN
    _WORKER_GEN = SyntheticReID(config)  # deterministic from the config: same images


def _write_images(out: Path, paths: list[str]) -> None:
    gen = _WORKER_GEN
    assert gen is not None, "_init_writer runs first in every worker"
    for path in paths:
        _save_jpeg(gen, out, path)


def _save_jpeg(gen: SyntheticReID, out: Path, path: str) -> None:
    Image.fromarray(gen.render_array(*gen._specs[path])).save(out / path, quality=95, subsampling=0)


def write_synthetic(
    out_dir: str | Path,
    config: SyntheticConfig | None = None,
    *,
    overwrite: bool = False,
    workers: int = 0,
) -> Path:
    """Render the synthetic set to ``out_dir`` in the Market-1501 layout (JPEG, quality 95, no chroma subsampling).

    Writes ``bounding_box_train/``, ``query/``, ``bounding_box_test/``, the marker file
    ``ABDNET_SYNTHETIC.json`` (generator settings and counts; lets auto-detection name the
    set ``synthetic``) and a README. A non-empty ``out_dir`` is an error unless
    ``overwrite`` (then only the three image folders and the two files are replaced).
    ``workers > 0`` renders in that many processes; the files are the same byte for byte.
    """
    if workers < 0:
        raise ValueError(f"write_synthetic: workers must be >= 0, got {workers}")
    gen = SyntheticReID(config)
    out = check_output(out_dir, force=overwrite, folder=True)
    if out.is_dir():
        # the marker goes first and comes back last: a set cut short is never taken for one
        (out / SYNTHETIC_MARKER).unlink(missing_ok=True)
        for folder in ("bounding_box_train", "query", "bounding_box_test"):
            shutil.rmtree(out / folder, ignore_errors=True)
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    paths = list(gen._specs)
    if workers > 0 and len(paths) > 1:
        chunks = [paths[i :: workers * 8] for i in range(min(len(paths), workers * 8))]
        with ProcessPoolExecutor(workers, initializer=_init_writer, initargs=(gen.config,)) as ex:
            for done in [ex.submit(_write_images, out, chunk) for chunk in chunks]:
                done.result()  # re-raises a worker's error
    else:
        for path in paths:
            _save_jpeg(gen, out, path)
    info = {
        "generator": "abdnet.data.synthetic",
        "config": asdict(gen.config),
        "train_images": len(gen.train),
        "query_images": len(gen.query),
        "gallery_images": len(gen.gallery),
    }
    (out / "README.txt").write_text(
        "Synthetic person re-ID data set written by `abdnet synth` (Market-1501 layout).\n"
        "File names: <pid>_c<camera>s1_<frame>_<n>.jpg; pid 0000 = distractor (gallery only).\n"
        f"Settings and counts: {SYNTHETIC_MARKER}\n"
    )
    atomic_write(out / SYNTHETIC_MARKER, json.dumps(info, indent=2) + "\n")
    log.info(
        "wrote synthetic set to %s: %d train, %d query, %d gallery images",
        out,
        len(gen.train),
        len(gen.query),
        len(gen.gallery),
    )
    return out
