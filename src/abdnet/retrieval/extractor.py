"""Embeddings of person crops from a checkpoint: the :class:`~abdnet.engine.Embedder` with the
backend chosen for it.

:class:`FeatureExtractor` is :class:`abdnet.engine.ModelEmbedder` (the one implementation of
the Embedder contract: test transform, batching, flip averaging, normalisation, the input
kinds, the skip-bad policy) with a constructor that loads a checkpoint and picks the runtime
through :func:`abdnet.export.select_backend`, which the engine layer below cannot import.

Returned features are **L2-normalized by default** (``normalize=False`` declares the space of
the raw embeddings the model outputs). Flip averaging follows the official code: the *raw*
embeddings of the image and of its horizontal mirror are averaged, and only then
normalized.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from abdnet.config import BackendName, Config, FlipMode, PrecisionName
from abdnet.engine import Extraction, ModelEmbedder, Runner, resolve_device
from abdnet.export import BACKENDS, select_backend
from abdnet.models import LoadedModel, load_model

__all__ = ["FeatureExtractor", "Extraction"]

log = logging.getLogger(__name__)


class FeatureExtractor(ModelEmbedder):
    """Embeddings for person crops with the model's own test transform.

    ``checkpoint_or_model`` is anything :func:`abdnet.models.load_model` accepts (run folder,
    checkpoint folder, ``.safetensors``, official ``.pth.tar``), a :class:`LoadedModel`, an
    abdnet network, or any other callable mapping a ``(B, 3, H, W)`` float tensor to
    ``(B, D)`` embeddings (e.g. the ONNX Runtime backend :class:`abdnet.export.OnnxEmbedder`).
    ``config`` supplies the data transform (``abdnet.data.build_test_transform(config.data)``);
    it is taken from the checkpoint when loading one, from the callable's ``config``
    attribute if it has one, and defaults to ``Config()`` (384x128, ImageNet mean/std).

    :meth:`embed` takes paths, PIL images, (H, W, 3) uint8 arrays, ``(frame, box)`` crops or
    an already transformed ``(B, 3, H, W)`` float tensor (:mod:`abdnet.engine.embedder`) and
    returns an :class:`Extraction` whose ``(N, D)`` float32 CPU features are
    **L2-normalized** unless ``normalize=False``; calling the extractor returns the features
    alone. With ``flip=True`` the raw embeddings of each image and its mirror are averaged
    (official code; ``flip_mode="normalized"`` averages the unit vectors instead), then
    normalized. Inference runs in batches of ``batch_size``.
    ``space`` declares the vectors' :class:`~abdnet.engine.EmbeddingSpace`.

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
        flip_mode: FlipMode = "raw",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {list(BACKENDS)}, got {backend!r}")
        dev = resolve_device(device)
        source = checkpoint_or_model
        if isinstance(source, (str, Path)):
            source = load_model(source, map_location="cpu")
        if isinstance(source, LoadedModel):
            config = config or source.config
            source = source.model
        if not isinstance(source, nn.Module):
            config = config or getattr(source, "config", None)
        config = config if config is not None else Config()
        if isinstance(source, nn.Module):
            network = source.to(dev)
            chosen = select_backend(
                backend,
                network,
                config,
                device=dev,
                precision=precision,
                batch_size=int(batch_size),
                remeasure=remeasure,
            )
            runner: Runner = chosen.embed
            chosen_precision: PrecisionName | None = chosen.precision
            channels_last, name = chosen.channels_last, chosen.name
        elif callable(source):
            if backend not in ("torch", "auto"):
                raise ValueError(
                    f"backend {backend!r}: a {type(source).__name__} runs as given; the "
                    f"backend applies to a PyTorch checkpoint or network"
                )
            network, runner, chosen_precision = None, source, precision
            channels_last = False
            name = getattr(source, "backend_name", type(source).__name__)
        else:
            raise TypeError(
                f"FeatureExtractor: expected a checkpoint path, LoadedModel, nn.Module or "
                f"callable, got {type(source).__name__}"
            )
        super().__init__(
            runner,
            config=config,
            device=dev,
            batch_size=batch_size,
            flip=flip,
            flip_mode=flip_mode,
            normalize=normalize,
            precision=chosen_precision,
            channels_last=channels_last,
            network=network,
            name=name,
        )

    def extract(
        self,
        inputs: Any,
        *,
        skip_bad: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> Extraction:
        """:meth:`embed` (the name feature-file code has always used)."""
        return self.embed(inputs, skip_bad=skip_bad, progress=progress)
