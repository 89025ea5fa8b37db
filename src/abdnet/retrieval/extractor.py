"""Embeddings of person crops: the model's test transform, batched, optionally flip-averaged.

Returned features are **L2-normalized by default** (``normalize=False`` gives the raw
embeddings the model outputs). Flip averaging follows the official code: the *raw*
embeddings of the image and of its horizontal mirror are averaged, and only then
normalized (when ``normalize`` is on).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from abdnet.config import Config
from abdnet.models.io import LoadedModel, load_model

__all__ = [
    "FeatureExtractor",
    "Extraction",
    "ImageReadError",
    "ImageInput",
    "read_image",
    "resolve_device",
]

log = logging.getLogger(__name__)

# One image: a file path, a PIL image or an (H, W, 3) uint8 array.
ImageInput = str | Path | Image.Image | np.ndarray


class ImageReadError(ValueError):
    """An input image cannot be read or is not an RGB image; the message names it."""


@dataclass
class Extraction:
    """Result of :meth:`FeatureExtractor.extract`.

    ``features`` (N_kept, D) float32 CPU tensor, in input order; ``kept`` the input
    positions they belong to; ``skipped`` ``(input, reason)`` for each input that could
    not be read (only with ``skip_bad=True``).
    """

    features: torch.Tensor
    kept: list[int]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _describe(item: Any) -> str:
    if isinstance(item, (str, Path)):
        return str(item)
    if isinstance(item, np.ndarray):
        return f"numpy array of shape {item.shape}"
    return type(item).__name__


def read_image(item: ImageInput) -> Image.Image:
    """An RGB PIL image from a path, a PIL image or an (H, W, 3) uint8 array.

    Raises :class:`ImageReadError` (a ``ValueError``) naming the path or input at fault.
    """
    if isinstance(item, (str, Path)):
        path = Path(item)
        if not path.is_file():
            raise ImageReadError(f"image not found: {path}")
        try:
            with Image.open(path) as img:
                return img.convert(
                    "RGB"
                )  # convert() loads the pixels: decoding errors surface here
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageReadError(f"{path}: cannot read image: {exc}") from None
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, np.ndarray):
        if item.ndim != 3 or item.shape[2] != 3 or item.dtype != np.uint8:
            raise ImageReadError(
                f"numpy image: expected an (H, W, 3) uint8 array, got shape {item.shape} "
                f"dtype {item.dtype}"
            )
        return Image.fromarray(item, mode="RGB")
    raise ImageReadError(
        f"unsupported image input of type {type(item).__name__}: expected a path, a PIL "
        f"image, an (H, W, 3) uint8 numpy array or a (B, 3, H, W) float tensor"
    )


class FeatureExtractor:
    """Embeddings for person crops with the model's own test transform.

    ``checkpoint_or_model`` is anything :func:`abdnet.models.load_model` accepts (run folder,
    checkpoint folder, ``.safetensors``, official ``.pth.tar``), a :class:`LoadedModel`, an
    ``nn.Module`` (eval-mode forward = raw embedding) or any other callable mapping a
    ``(B, 3, H, W)`` float tensor to ``(B, D)`` embeddings (e.g. the ONNX Runtime backend
    :class:`abdnet.export.OnnxEmbedder`). ``config`` supplies the data transform
    (``abdnet.data.build_test_transform(config.data)``); it is taken from the checkpoint when
    loading one, from the callable's ``config`` attribute if it has one, and defaults to
    ``Config()`` (384x128, ImageNet mean/std) otherwise.

    Calling the extractor on a list of paths / PIL images / (H, W, 3) uint8 arrays, or on an
    already transformed ``(B, 3, H, W)`` float tensor, returns a ``(N, D)`` float32 CPU
    tensor: **L2-normalized** unless ``normalize=False``. With ``flip=True`` the raw
    embeddings of each image and its mirror are averaged (official code), then normalized.
    Inference runs under ``torch.inference_mode`` in batches of ``batch_size``; on CUDA
    with fp16 autocast (AMP), on CPU in fp32.
    """

    def __init__(
        self,
        checkpoint_or_model: str | Path | LoadedModel | nn.Module | Callable[[torch.Tensor], Any],
        device: str | torch.device = "auto",
        batch_size: int = 64,
        flip: bool = False,
        normalize: bool = True,
        config: Config | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        source = checkpoint_or_model
        if isinstance(source, (str, Path)):
            source = load_model(source, map_location="cpu")
        if isinstance(source, LoadedModel):
            config = config or source.config
            source = source.model
        if isinstance(source, nn.Module):
            self.model: Callable[[torch.Tensor], Any] = source.to(self.device)
            self.is_module = True
        elif callable(source):
            self.model = source
            self.is_module = False
            config = config or getattr(source, "config", None)
        else:
            raise TypeError(
                f"FeatureExtractor: expected a checkpoint path, LoadedModel, nn.Module or "
                f"callable, got {type(source).__name__}"
            )
        self.config: Config = config if config is not None else Config()
        self.batch_size = int(batch_size)
        self.flip = bool(flip)
        self.normalize = bool(normalize)
        from abdnet.data import build_test_transform

        self.transform = build_test_transform(self.config.data)

    def __call__(self, inputs: Sequence[ImageInput] | ImageInput | torch.Tensor) -> torch.Tensor:
        """``(N, D)`` float32 CPU features; any unreadable input raises ImageReadError."""
        return self.extract(inputs).features

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw embedding ``(B, D)`` float32 of a transformed batch ``(B, 3, H, W)``."""
        if not self.is_module:
            out = self.model(x.cpu())
            return torch.as_tensor(np.asarray(out) if not torch.is_tensor(out) else out).float()
        x = x.to(self.device, non_blocking=True)
        amp = self.device.type == "cuda"
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp):
            out = self.model(x)
        return out.float()

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        f = self._forward(x)  # (B, D)
        if self.flip:
            # Raw averaging with the mirrored image (official code), normalized afterwards.
            f = (f + self._forward(torch.flip(x, dims=[3]))) / 2
        if self.normalize:
            f = F.normalize(f, p=2, dim=1)
        return f.cpu()

    def extract(
        self,
        inputs: Sequence[ImageInput] | ImageInput | torch.Tensor,
        *,
        skip_bad: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> Extraction:
        """Features of ``inputs`` with the unreadable ones skipped (``skip_bad``) or raised.

        ``progress`` is called with the number of inputs done after each batch.
        """
        module = self.model if self.is_module else None
        was_training = bool(module.training) if isinstance(module, nn.Module) else False
        if isinstance(module, nn.Module):
            module.eval()
        try:
            with torch.inference_mode():
                if torch.is_tensor(inputs):
                    return self._extract_tensor(inputs, progress)
                if isinstance(inputs, (str, Path, Image.Image, np.ndarray)):
                    inputs = [inputs]
                return self._extract_images(list(inputs), skip_bad, progress)
        finally:
            if isinstance(module, nn.Module):
                module.train(was_training)

    def _extract_tensor(
        self, x: torch.Tensor, progress: Callable[[int], None] | None
    ) -> Extraction:
        if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
            raise ValueError(
                f"tensor input: expected a transformed (B, 3, H, W) float batch, got shape "
                f"{tuple(x.shape)} dtype {x.dtype}"
            )
        chunks = []
        for start in range(0, x.shape[0], self.batch_size):
            batch = x[start : start + self.batch_size]
            chunks.append(self._embed(batch.float()))
            if progress is not None:
                progress(batch.shape[0])
        return Extraction(features=self._cat(chunks), kept=list(range(x.shape[0])))

    def _extract_images(
        self,
        items: list[ImageInput],
        skip_bad: bool,
        progress: Callable[[int], None] | None,
    ) -> Extraction:
        chunks: list[torch.Tensor] = []
        kept: list[int] = []
        skipped: list[tuple[str, str]] = []
        for start in range(0, len(items), self.batch_size):
            tensors = []
            for i in range(start, min(start + self.batch_size, len(items))):
                try:
                    tensors.append(self.transform(read_image(items[i])))
                except ImageReadError as exc:
                    if not skip_bad:
                        raise
                    log.warning("skipping %s", exc)
                    skipped.append((_describe(items[i]), str(exc)))
                    continue
                kept.append(i)
            if tensors:
                chunks.append(self._embed(torch.stack(tensors)))  # (b, 3, H, W)
            if progress is not None:
                progress(min(self.batch_size, len(items) - start))
        return Extraction(features=self._cat(chunks), kept=kept, skipped=skipped)

    def _cat(self, chunks: list[torch.Tensor]) -> torch.Tensor:
        if chunks:
            return torch.cat(chunks).float()
        return torch.empty(0, self.feature_dim or 0, dtype=torch.float32)

    @property
    def feature_dim(self) -> int | None:
        """D when the model declares it (``feature_dim`` attribute), else None."""
        value = getattr(self.model, "feature_dim", None)
        return int(value) if value is not None else None
