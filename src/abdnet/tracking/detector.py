"""Person detectors for footage without a detections file.

A :class:`Detector` turns a batch of RGB frames into one :class:`Detections` per frame (the
form the tracker takes from a ``det.txt``): person boxes ``x0, y0, x1, y1`` in pixels and
their scores, at or above a score threshold.

- :class:`TorchvisionDetector` runs a torchvision detection model (COCO, label 1 is the
  person). :data:`TORCHVISION_DETECTORS` names the models offered; their weights come from
  the URL torchvision declares for them, downloaded and cached by :mod:`abdnet.hub` and
  checked against the SHA-256 prefix torchvision puts in the file name, or from
  ``weights`` (a path or any :func:`abdnet.hub.resolve_source` spec).
- :class:`YoloDetector` runs an ultralytics YOLO model (class 0 is the person). ultralytics
  is AGPL-3.0: it is never a dependency of abdnet and is imported only when a ``yolo``
  detector is built; without it the error says how to install it.

:func:`build_detector` is the one factory the CLI and the benchmark use.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from abdnet.hub import SourceError, UrlSource, parse_source, resolve_source, sha256_file
from abdnet.tracking.tracker import Detections

__all__ = [
    "Detector",
    "TorchvisionDetector",
    "YoloDetector",
    "TORCHVISION_DETECTORS",
    "DETECTORS",
    "build_detector",
    "default_weights",
    "torchvision_model",
]

log = logging.getLogger(__name__)

# name -> (torchvision builder, its weights enum): the URL and categories come from the enum
TORCHVISION_DETECTORS: dict[str, tuple[str, str]] = {
    "fasterrcnn_mobilenet_v3_large_320_fpn": (
        "fasterrcnn_mobilenet_v3_large_320_fpn",
        "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights",
    ),
    "fasterrcnn_mobilenet_v3_large_fpn": (
        "fasterrcnn_mobilenet_v3_large_fpn",
        "FasterRCNN_MobileNet_V3_Large_FPN_Weights",
    ),
    "ssdlite320_mobilenet_v3_large": (
        "ssdlite320_mobilenet_v3_large",
        "SSDLite320_MobileNet_V3_Large_Weights",
    ),
}
YOLO = "yolo"  # ultralytics; --detector-weights names the model file (yolo11n.pt, ...)
DETECTORS = (*TORCHVISION_DETECTORS, YOLO)
COCO_PERSON = 1  # torchvision's COCO label of a person
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.(?:pth|pt)$")


class Detector(Protocol):
    """Person boxes for a batch of frames; ``batch_size`` frames are given at a time."""

    batch_size: int

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """One :class:`Detections` per ``(H, W, 3)`` uint8 RGB image, in order."""
        ...


def _keep(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> Detections:
    keep = (scores >= threshold) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return Detections(boxes[keep], scores[keep])


@dataclass
class TorchvisionDetector:
    """A torchvision detection model (``model(list of (3, H, W) float tensors in [0, 1])``
    returning ``boxes`` / ``labels`` / ``scores`` per image) kept to its person boxes."""

    model: torch.nn.Module
    score_threshold: float = 0.5
    batch_size: int = 4
    person_label: int = COCO_PERSON
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.model = self.model.eval().to(self.device)

    @torch.inference_mode()
    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        if not len(images):
            return []
        batch = [
            torch.from_numpy(np.array(im, dtype=np.uint8)).to(self.device).permute(2, 0, 1).float()
            / 255.0  # (3, H, W)
            for im in images
        ]
        out = []
        for result in self.model(batch):
            person = (result["labels"] == self.person_label).cpu().numpy()
            boxes = result["boxes"].float().cpu().numpy().reshape(-1, 4)[person]
            scores = result["scores"].float().cpu().numpy().reshape(-1)[person]
            out.append(
                _keep(boxes.astype(np.float64), scores.astype(np.float64), self.score_threshold)
            )
        return out


@dataclass
class YoloDetector:
    """An ultralytics YOLO model kept to its person class (0)."""

    model: Any  # ultralytics.YOLO
    score_threshold: float = 0.5
    batch_size: int = 4
    device: str = "cpu"
    person_class: int = 0

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        if not len(images):
            return []
        # ultralytics takes numpy images as BGR (OpenCV's order)
        bgr = [np.ascontiguousarray(im[:, :, ::-1]) for im in images]
        results = self.model.predict(
            bgr,
            conf=self.score_threshold,
            classes=[self.person_class],
            device=self.device,
            verbose=False,
        )
        out = []
        for r in results:
            boxes = r.boxes.xyxy.cpu().numpy().astype(np.float64).reshape(-1, 4)
            scores = r.boxes.conf.cpu().numpy().astype(np.float64).reshape(-1)
            out.append(_keep(boxes, scores, self.score_threshold))
        return out


def default_weights(name: str) -> str:
    """The URL torchvision declares for detector ``name``'s COCO weights."""
    import torchvision.models.detection as tvd

    enum = TORCHVISION_DETECTORS[name][1]
    return str(getattr(tvd, enum).COCO_V1.url)


def _check_name_hash(path: Path, spec: str) -> None:
    """torchvision names its weight files ``NAME-<sha256 prefix>.pth``: check the prefix."""
    m = _HASH_IN_NAME.search(path.name)
    if m is None:
        return
    actual = sha256_file(path)
    if not actual.startswith(m.group(1)):
        raise SourceError(
            f"{spec}: SHA-256 {actual} does not start with {m.group(1)}, the hash its file "
            f"name declares; the file is damaged or not the one named"
        )


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several kinds for a file that is not a state dict
        raise ValueError(
            f"{path}: not a torch state dict: {' '.join(str(exc).split())[:200]}"
        ) from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a torch state dict (a {type(state).__name__})")
    return state


def torchvision_model(name: str, *, score_threshold: float = 0.5) -> torch.nn.Module:
    """Torchvision detector ``name`` with random weights (91 COCO labels), its own score cut
    at ``score_threshold`` so it keeps every box the caller may want."""
    import torchvision.models.detection as tvd

    builder = TORCHVISION_DETECTORS[name][0]
    cut = {
        "box_score_thresh" if builder.startswith("fasterrcnn") else "score_thresh": score_threshold
    }
    return getattr(tvd, builder)(weights=None, weights_backbone=None, num_classes=91, **cut)


def build_detector(
    name: str,
    *,
    weights: str | Path | None = None,
    score_threshold: float = 0.5,
    batch_size: int = 4,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    offline: bool | None = None,
    progress: bool | None = None,
) -> Detector:
    """The detector called ``name`` (one of :data:`DETECTORS`).

    Torchvision detectors load ``weights`` (a path, ``https://...[#sha256=HEX]`` or
    ``hf://...``; default: torchvision's COCO weights for the model, through the abdnet
    cache). ``yolo`` loads ``weights`` (an ultralytics model file, required) with
    ultralytics, which must be installed.
    """
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"--detector-score must be in [0, 1], got {score_threshold}")
    if batch_size < 1:
        raise ValueError(f"--detector-batch must be >= 1, got {batch_size}")
    if name == YOLO:
        return _build_yolo(weights, score_threshold, batch_size, device, cache_dir, offline)
    if name not in TORCHVISION_DETECTORS:
        raise ValueError(f"--detector {name}: expected one of {', '.join(DETECTORS)}")
    spec = str(weights) if weights is not None else default_weights(name)
    path = resolve_source(spec, cache_dir=cache_dir, offline=offline, progress=progress)
    if not path.is_file():
        raise FileNotFoundError(f"--detector-weights {spec}: no such file")
    if isinstance(parse_source(spec), UrlSource) or weights is None:
        _check_name_hash(path, spec)
    model = torchvision_model(name, score_threshold=score_threshold)
    try:
        model.load_state_dict(_load_state(path))
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise ValueError(
            f"--detector-weights {spec}: not weights of {name}: {first[0].strip()}"
        ) from None
    log.info("detector %s: weights %s", name, path)
    return TorchvisionDetector(model, score_threshold, batch_size, device=device)


def _build_yolo(weights, score_threshold, batch_size, device, cache_dir, offline) -> Detector:
    try:
        from ultralytics import YOLO as UltralyticsYOLO
    except ImportError:
        raise ValueError(
            "--detector yolo needs ultralytics, which abdnet does not install (it is "
            "AGPL-3.0): 'pip install ultralytics', or use a torchvision detector "
            f"({', '.join(TORCHVISION_DETECTORS)})"
        ) from None
    if weights is None:
        raise ValueError("--detector yolo: give the model file with --detector-weights PATH|URL")
    path = resolve_source(str(weights), cache_dir=cache_dir, offline=offline)
    if not path.is_file():
        raise FileNotFoundError(f"--detector-weights {weights}: no such file")
    return YoloDetector(UltralyticsYOLO(str(path)), score_threshold, batch_size, device=device)
