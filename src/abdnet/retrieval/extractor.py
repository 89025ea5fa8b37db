"""Embeddings of person crops: the model's test transform, batched, optionally flip-averaged.

Returned features are **L2-normalized by default** (``normalize=False`` gives the raw
embeddings the model outputs). Flip averaging follows the official code: the *raw*
embeddings of the image and of its horizontal mirror are averaged, and only then
normalized (when ``normalize`` is on). Batches go through the one extraction loop,
:func:`abdnet.engine.extract_features`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from abdnet.config import BackendName, Config, PrecisionName
from abdnet.data import (
    ImageInput,
    ImageReadError,
    build_test_transform,
    read_image,
    upscale_warning,
)
from abdnet.engine import Embedder, extract_features, resolve_device
from abdnet.export import BACKENDS, select_backend
from abdnet.models import LoadedModel, load_model

__all__ = ["FeatureExtractor", "Extraction"]

log = logging.getLogger(__name__)


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


def _describe(item: Any) -> str:
    if isinstance(item, (str, Path)):
        return str(item)
    if isinstance(item, np.ndarray):
        return f"numpy array of shape {item.shape}"
    return type(item).__name__


class FeatureExtractor:
    """Embeddings for person crops with the model's own test transform.

    ``checkpoint_or_model`` is anything :func:`abdnet.models.load_model` accepts (run folder,
    checkpoint folder, ``.safetensors``, official ``.pth.tar``), a :class:`LoadedModel`, an
    abdnet network, or any other callable mapping a ``(B, 3, H, W)`` float tensor to
    ``(B, D)`` embeddings (e.g. the ONNX Runtime backend :class:`abdnet.export.OnnxEmbedder`).
    ``config`` supplies the data transform (``abdnet.data.build_test_transform(config.data)``);
    it is taken from the checkpoint when loading one, from the callable's ``config``
    attribute if it has one, and defaults to ``Config()`` (384x128, ImageNet mean/std).

    Calling the extractor on a list of paths / PIL images / (H, W, 3) uint8 arrays, or on an
    already transformed ``(B, 3, H, W)`` float tensor, returns a ``(N, D)`` float32 CPU
    tensor: **L2-normalized** unless ``normalize=False``. With ``flip=True`` the raw
    embeddings of each image and its mirror are averaged (official code), then normalized.
    Inference runs in batches of ``batch_size``.

    ``backend`` runs a PyTorch network: ``"torch"`` (default) in ``precision`` (fp32 unless
    asked: "auto" picks bf16/fp16 where the device runs it faster); ``"onnx"`` (ONNX Runtime
    fp32) or ``"openvino"`` (fp32 unless ``precision`` says otherwise) on its exported,
    parity-checked graph; ``"auto"`` the fastest of these (and PyTorch bf16 + channels_last
    on CPUs with native bf16) whose features stay within cosine 0.999 of fp32 PyTorch,
    measured once per machine and model and cached under ``$ABDNET_CACHE/backends``
    (``remeasure=True`` measures again; see :mod:`abdnet.export.backend`). ``backend_name``
    says what runs; ``network`` is the PyTorch network (None for a callable given as is).
    A callable that is not an ``nn.Module`` runs as given and takes only "torch" or "auto".
    """

    def __init__(
        self,
        checkpoint_or_model: str | Path | LoadedModel | nn.Module | Callable[[torch.Tensor], Any],
        device: str | torch.device = "auto",
        batch_size: int = 64,
        flip: bool = False,
        normalize: bool = True,
        config: Config | None = None,
        precision: PrecisionName | None = None,
        backend: BackendName = "torch",
        remeasure: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {list(BACKENDS)}, got {backend!r}")
        self.device = resolve_device(device)
        source = checkpoint_or_model
        if isinstance(source, (str, Path)):
            source = load_model(source, map_location="cpu")
        if isinstance(source, LoadedModel):
            config = config or source.config
            source = source.model
        if not isinstance(source, nn.Module):
            config = config or getattr(source, "config", None)
        self.config: Config = config if config is not None else Config()
        self.batch_size = int(batch_size)
        self.flip = bool(flip)
        self.normalize = bool(normalize)
        self.network: nn.Module | None = None
        if isinstance(source, nn.Module):
            self.network = source.to(self.device)
            chosen = select_backend(
                backend,
                self.network,
                self.config,
                device=self.device,
                precision=precision,
                batch_size=self.batch_size,
                remeasure=remeasure,
            )
            self.model: Embedder = chosen.embed
            self.precision: PrecisionName = chosen.precision
            self.channels_last = chosen.channels_last
            self.backend_name = chosen.name
        elif callable(source):
            if backend not in ("torch", "auto"):
                raise ValueError(
                    f"backend {backend!r}: a {type(source).__name__} runs as given; the "
                    f"backend applies to a PyTorch checkpoint or network"
                )
            self.model = source
            self.precision = precision or "fp32"
            self.channels_last = False
            self.backend_name = getattr(source, "backend_name", type(source).__name__)
        else:
            raise TypeError(
                f"FeatureExtractor: expected a checkpoint path, LoadedModel, nn.Module or "
                f"callable, got {type(source).__name__}"
            )
        self.transform = build_test_transform(self.config.data)
        self._input_size = (self.config.data.height, self.config.data.width)

    def __call__(self, inputs: Sequence[ImageInput] | ImageInput | torch.Tensor) -> torch.Tensor:
        """``(N, D)`` float32 CPU features; any unreadable input raises ImageReadError."""
        return self.extract(inputs).features

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
            feats = self._run(batches, progress)
            return Extraction(features=feats, kept=list(range(x.shape[0])))
        if isinstance(inputs, (str, Path, Image.Image, np.ndarray)):
            inputs = [inputs]
        items = list(inputs)
        kept: list[int] = []
        skipped: list[tuple[str, str]] = []
        feats = self._run(self._image_batches(items, skip_bad, kept, skipped, progress), None)
        return Extraction(features=feats, kept=kept, skipped=skipped)

    def _image_batches(
        self,
        items: list[ImageInput],
        skip_bad: bool,
        kept: list[int],
        skipped: list[tuple[str, str]],
        progress: Callable[[int], None] | None,
    ) -> Iterator[torch.Tensor]:
        """Transformed batches of the readable ``items``; fills ``kept`` and ``skipped``."""
        for start in range(0, len(items), self.batch_size):
            tensors = []
            for i in range(start, min(start + self.batch_size, len(items))):
                try:
                    image = read_image(items[i])
                except ImageReadError as exc:
                    if not skip_bad:
                        raise
                    log.warning("skipping %s", exc)
                    skipped.append((_describe(items[i]), str(exc)))
                    continue
                warning = upscale_warning(_describe(items[i]), image.size, self._input_size)
                if warning is not None:
                    log.warning("%s", warning)
                tensors.append(self.transform(image))
                kept.append(i)
            if tensors:
                yield torch.stack(tensors)  # (b, 3, H, W)
            if progress is not None:
                progress(min(self.batch_size, len(items) - start))

    def _run(
        self, batches: Iterator[torch.Tensor], progress: Callable[[int], None] | None
    ) -> torch.Tensor:
        feats = extract_features(
            self.model,
            batches,
            device=self.device,
            precision=self.precision,
            channels_last=self.channels_last,
            flip=self.flip,
            normalize=self.normalize,
            progress=progress,
        )
        if feats.numel() == 0:
            return torch.empty(0, self.feature_dim or 0, dtype=torch.float32)
        return feats

    @property
    def feature_dim(self) -> int | None:
        """D when the model declares it (``feature_dim`` attribute), else None."""
        value = getattr(self.model, "feature_dim", None)
        return int(value) if value is not None else None
