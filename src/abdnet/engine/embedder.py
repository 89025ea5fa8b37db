"""The Embedder: images in, vectors of one declared embedding space out.

:class:`Embedder` is the contract every front end (feature files, the index, the gallery,
calibration, evaluation, the figures, the service, tracking) embeds through; it has one
implementation, :class:`ModelEmbedder`, built once from a network or an inference backend
and owning the test transform, batching, flip averaging, normalisation, precision and the
skip-bad policy. :class:`abdnet.retrieval.FeatureExtractor` is that class with a constructor
that loads a checkpoint and picks the backend (``export.select_backend``, a layer above).

Input kinds of :meth:`ModelEmbedder.embed` (a sequence, or one of them alone):

- an image: a file path, a PIL image or an ``(H, W, 3)`` uint8 array (read by
  :func:`abdnet.data.read_image`, resized by the transform);
- a crop of a frame, the tuple ``(frame, box)``: ``frame`` an ``(H, W, 3)`` uint8 array or a
  PIL image, ``box`` ``(x1, y1, x2, y2)`` in pixels (``x2``, ``y2`` exclusive, so
  ``frame[y1:y2, x1:x2]`` is the crop of an integer box). A fractional box takes the
  smallest pixel rectangle covering it; a box reaching outside the frame is **clipped** to
  it, and a box with nothing inside the frame is an unreadable input. ``(frame, boxes)``
  with ``boxes`` of shape ``(K, 4)`` stands for the K crops ``(frame, boxes[k])``, in order:
  ``kept`` and ``skipped`` count crops, not frames;
- a transformed ``(B, 3, H, W)`` float tensor, given as the whole input.

One skip-bad policy: an input that cannot be read raises :class:`abdnet.data.ImageReadError`
naming it, or with ``skip_bad=True`` is logged and listed in ``Extraction.skipped``.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from abdnet.config import Config, FlipMode, Metric, PrecisionName
from abdnet.data import (
    ImageInput,
    ImageReadError,
    build_test_transform,
    read_image,
    upscale_warning,
)
from abdnet.engine.inference import Runner, extract_features
from abdnet.engine.precision import Precision, choose_precision, resolve_device
from abdnet.engine.space import EmbeddingSpace, project
from abdnet.models import weights_digest

__all__ = ["EmbedInput", "Embedder", "Extraction", "FrameBox", "ModelEmbedder", "crop_frame"]

log = logging.getLogger(__name__)

# A crop of a frame: ``(frame, (x1, y1, x2, y2))`` or ``(frame, boxes (K, 4))``.
FrameBox = tuple[np.ndarray | Image.Image, Sequence[float] | np.ndarray]
EmbedInput = ImageInput | FrameBox


@dataclass
class Extraction:
    """Result of :meth:`Embedder.embed`.

    ``features`` ``(N_kept, D)`` float32 CPU tensor in the embedder's space, in input order;
    ``kept`` the input positions they belong to; ``skipped`` ``(input, reason)`` for each
    input that could not be read (only with ``skip_bad=True``); ``raw`` the network's
    embeddings before the space's normalisation (only with ``keep_raw=True``: the
    evaluation protocols defined on raw embeddings rank them).
    """

    features: torch.Tensor
    kept: list[int]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    raw: torch.Tensor | None = None


@runtime_checkable
class Embedder(Protocol):
    """What every front end embeds through (module docstring); :class:`ModelEmbedder` is
    the implementation."""

    @property
    def space(self) -> EmbeddingSpace:
        """The space of the vectors, with its distance rule."""
        ...

    @property
    def config(self) -> Config:
        """The model's config: its test transform (``config.data``) and evaluation defaults."""
        ...

    @property
    def flip(self) -> bool:
        """Whether embeddings are averaged with the mirrored image's."""
        ...

    def transform(self, image: Image.Image) -> torch.Tensor:
        """The test transform: PIL image -> ``(3, H, W)`` float tensor."""
        ...

    def embed(
        self,
        inputs: Iterable[EmbedInput] | EmbedInput | torch.Tensor,
        *,
        skip_bad: bool = False,
        progress: Callable[[int], None] | None = None,
        keep_raw: bool = False,
    ) -> Extraction:
        """Vectors of ``inputs`` in :attr:`space`; ``progress(n)`` after each batch of ``n``."""
        ...

    def __call__(self, inputs: Iterable[EmbedInput] | EmbedInput | torch.Tensor) -> torch.Tensor:
        """``embed(inputs).features``; an unreadable input raises."""
        ...


def _describe(item: Any) -> str:
    if isinstance(item, (str, Path)):
        return str(item)
    if isinstance(item, np.ndarray):
        return f"numpy array of shape {item.shape}"
    return type(item).__name__


def _boxes_of(item: Any) -> np.ndarray | None:
    """The ``(K, 4)`` boxes of a ``(frame, box[es])`` tuple, or None if ``item`` is not one."""
    if not (isinstance(item, tuple) and len(item) == 2):
        return None
    frame, box = item
    if not isinstance(frame, (np.ndarray, Image.Image)):
        return None
    try:
        b = np.asarray(box, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if b.shape == (4,):
        return b[None]
    if b.ndim == 2 and b.shape[1] == 4:
        return b
    return None


def crop_frame(frame: np.ndarray | Image.Image, box: Sequence[float] | np.ndarray) -> Image.Image:
    """The RGB crop of ``frame`` inside ``box`` ``(x1, y1, x2, y2)``, clipped to the frame.

    ``x2`` / ``y2`` are exclusive; a fractional box takes the smallest pixel rectangle that
    covers it. Raises :class:`ImageReadError` for a malformed frame or box, or a box with no
    pixel inside the frame.
    """
    if isinstance(frame, np.ndarray):
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ImageReadError(
                f"frame: expected an (H, W, 3) uint8 array, got shape {frame.shape} "
                f"dtype {frame.dtype}"
            )
        height, width = frame.shape[:2]
    elif isinstance(frame, Image.Image):
        width, height = frame.size
    else:
        raise ImageReadError(
            f"frame of type {type(frame).__name__}: expected an (H, W, 3) uint8 array or a "
            f"PIL image"
        )
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape != (4,) or not np.isfinite(b).all():
        raise ImageReadError(f"box {b.tolist()}: expected four finite numbers x1, y1, x2, y2")
    x1, y1 = max(0, math.floor(b[0])), max(0, math.floor(b[1]))
    x2, y2 = min(width, math.ceil(b[2])), min(height, math.ceil(b[3]))
    if x2 <= x1 or y2 <= y1:
        raise ImageReadError(
            f"box {b.tolist()}: no pixel inside the {width}x{height} frame (x1 < x2 and "
            f"y1 < y2 are needed after clipping)"
        )
    if isinstance(frame, np.ndarray):
        return Image.fromarray(np.ascontiguousarray(frame[y1:y2, x1:x2]), mode="RGB")
    return frame.crop((x1, y1, x2, y2)).convert("RGB")


class ModelEmbedder:
    """The :class:`Embedder` of a network or an inference backend.

    ``runner`` is an abdnet network (its ``ModelOutput.embedding`` is used) or a callable
    ``(B, 3, H, W)`` float tensor -> ``(B, D)`` raw embeddings (an ONNX Runtime or OpenVINO
    backend). ``config`` gives the test transform (``config.data``; default ``Config()``,
    384x128 with ImageNet mean/std). ``flip`` averages each embedding with its mirror's
    (``flip_mode`` "raw" as the official code, or "normalized"); ``normalize`` declares a
    space of unit vectors (squared L2 = ``2 - 2 cos``) instead of raw embeddings.
    ``precision`` (fp32 unless asked) and ``channels_last`` apply to a PyTorch network.
    ``network`` is the PyTorch network the runner runs, whatever the runtime (the space's
    ``model_digest`` is of its weights; default: the runner's). ``name`` says what runs.
    """

    def __init__(
        self,
        runner: Runner,
        *,
        config: Config | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        flip: bool = False,
        flip_mode: FlipMode = "raw",
        normalize: bool = True,
        metric: Metric = "euclidean",
        precision: Precision | PrecisionName | None = None,
        channels_last: bool = False,
        network: torch.nn.Module | None = None,
        name: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not callable(runner):
            raise TypeError(
                f"embedder: expected a network or a callable, got {type(runner).__name__}"
            )
        self.model: Runner = runner
        self.network = (
            network
            if network is not None
            else (runner if isinstance(runner, torch.nn.Module) else None)
        )
        self._config = config if config is not None else Config()
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        self._flip = bool(flip)
        self.flip_mode: FlipMode = flip_mode
        self.normalize = bool(normalize)
        self.metric: Metric = metric
        self._precision = (
            precision
            if isinstance(precision, Precision)
            else choose_precision(self.device, precision or "fp32")
        )
        self.precision: PrecisionName = self._precision.name  # type: ignore[assignment]
        self.channels_last = bool(channels_last)
        self.backend_name = name or getattr(runner, "backend_name", type(runner).__name__)
        self._transform = build_test_transform(self._config.data)
        self._input_size = (self._config.data.height, self._config.data.width)
        EmbeddingSpace(dim=1, normalized=self.normalize, metric=metric)  # refuse a bad rule now

    # -- the contract ------------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self._config

    @property
    def flip(self) -> bool:
        return self._flip

    def transform(self, image: Image.Image) -> torch.Tensor:
        return self._transform(image)

    @cached_property
    def space(self) -> EmbeddingSpace:
        """The declared space; the dimension comes from the model's ``feature_dim`` or one
        forward pass of a blank image, the digest from the weights (computed on first use;
        "" for a callable that has neither weights nor a model file)."""
        dim = self.feature_dim
        if dim is None:
            probe = torch.zeros(1, 3, *self._input_size)
            dim = int(self._run(iter([probe]), None).shape[1])
        try:
            digest = weights_digest(self.network if self.network is not None else self.model)
        except TypeError:
            digest = ""
        return EmbeddingSpace(
            dim=dim, normalized=self.normalize, metric=self.metric, model_digest=digest
        )

    @property
    def feature_dim(self) -> int | None:
        """D when the model declares it (``feature_dim`` attribute), else None."""
        value = getattr(self.model, "feature_dim", None)
        return int(value) if value is not None else None

    def __call__(self, inputs: Iterable[EmbedInput] | EmbedInput | torch.Tensor) -> torch.Tensor:
        return self.embed(inputs).features

    def embed(
        self,
        inputs: Iterable[EmbedInput] | EmbedInput | torch.Tensor,
        *,
        skip_bad: bool = False,
        progress: Callable[[int], None] | None = None,
        keep_raw: bool = False,
    ) -> Extraction:
        """Vectors of ``inputs`` (the input kinds of the module docstring) in :attr:`space`,
        the unreadable ones skipped (``skip_bad``) or raised. ``inputs`` is read lazily, one
        batch at a time; ``progress(n)`` is called after each batch of ``n`` inputs."""
        kept: list[int] = []
        skipped: list[tuple[str, str]] = []
        if torch.is_tensor(inputs):
            x = inputs
            if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
                raise ValueError(
                    f"tensor input: expected a transformed (B, 3, H, W) float batch, got shape "
                    f"{tuple(x.shape)} dtype {x.dtype}"
                )
            batches: Iterator[torch.Tensor] = (
                x[s : s + self.batch_size].float() for s in range(0, x.shape[0], self.batch_size)
            )
            raw = self._run(batches, progress)
            kept = list(range(x.shape[0]))
        else:
            if (
                isinstance(inputs, (str, Path, Image.Image, np.ndarray))
                or _boxes_of(inputs) is not None
            ):
                inputs = [inputs]  # type: ignore[list-item]
            raw = self._run(self._image_batches(inputs, skip_bad, kept, skipped, progress), None)
        return Extraction(
            features=project(raw, normalized=self.normalize),
            kept=kept,
            skipped=skipped,
            raw=raw if keep_raw else None,
        )

    # -- the one loop ------------------------------------------------------------------------

    def _entries(self, inputs: Iterable[Any]) -> Iterator[tuple[Any, Callable[[], Image.Image]]]:
        """``(description, reader)`` of each input, a ``(frame, boxes)`` item giving one per box."""
        for i, item in enumerate(inputs):
            boxes = _boxes_of(item)
            if boxes is None:
                yield _describe(item), functools.partial(read_image, item)
                continue
            frame = item[0]
            for box in boxes:
                what = f"input {i} ({_describe(frame)}) box {box.tolist()}"
                yield what, functools.partial(crop_frame, frame, box)

    def _image_batches(
        self,
        inputs: Iterable[Any],
        skip_bad: bool,
        kept: list[int],
        skipped: list[tuple[str, str]],
        progress: Callable[[int], None] | None,
    ) -> Iterator[torch.Tensor]:
        """Transformed batches of the readable inputs; fills ``kept`` and ``skipped``."""
        tensors: list[torch.Tensor] = []
        pending = 0  # inputs of the batch being filled, read or skipped
        for position, (what, reader) in enumerate(self._entries(inputs)):
            pending += 1
            try:
                image = reader()
            except ImageReadError as exc:
                if not skip_bad:
                    raise ImageReadError(
                        str(exc) if what in str(exc) else f"{what}: {exc}"
                    ) from None
                log.warning("skipping %s: %s", what, exc)
                skipped.append((what, str(exc)))
            else:
                warning = upscale_warning(what, image.size, self._input_size)
                if warning is not None:
                    log.warning("%s", warning)
                tensors.append(self._transform(image))
                kept.append(position)
            if pending == self.batch_size:
                if tensors:
                    yield torch.stack(tensors)  # (b, 3, H, W)
                if progress is not None:
                    progress(pending)
                tensors, pending = [], 0
        if tensors:
            yield torch.stack(tensors)
        if progress is not None and pending:
            progress(pending)

    def _run(
        self, batches: Iterator[torch.Tensor], progress: Callable[[int], None] | None
    ) -> torch.Tensor:
        """Raw (flip-averaged) embeddings ``(N, D)`` float32 CPU of transformed batches."""
        feats = extract_features(
            self.model,
            batches,
            device=self.device,
            precision=self._precision,
            channels_last=self.channels_last,
            flip=self.flip,
            flip_mode=self.flip_mode,
            progress=progress,
        )
        if feats.numel() == 0:
            return torch.empty(0, self.feature_dim or 0, dtype=torch.float32)
        return feats
