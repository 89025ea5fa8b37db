"""Self-describing model files: weights plus the config that rebuilds the network.

``save_model`` writes one ``model.safetensors`` whose safetensors metadata (string -> string)
carries::

    format          "abdnet-model"
    format_version  "1"
    config          the full resolved Config as YAML (abdnet.config.dump_config)
    num_classes     classifier size, needed to rebuild the classifiers

so the file alone rebuilds the model: no pickled code, no separate config file to lose.
``load_model`` reads it back, or an official ``.pth.tar`` release of the authors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from abdnet.config import Config, ConfigError, DataConfig, config_from_dict, dump_config, load_yaml
from abdnet.files import atomic_file
from abdnet.hub import resolve_source, sha256_file
from abdnet.layout import MODEL_FILE, resolve_checkpoint
from abdnet.models.factory import build_model_from_config, official_model_config
from abdnet.models.official import OfficialABDNet, load_official

__all__ = [
    "MODEL_FORMAT_VERSION",
    "MODEL_FILENAME",
    "LoadedModel",
    "save_model",
    "load_model",
    "resolve_checkpoint",
    "weights_digest",
]

log = logging.getLogger(__name__)

MODEL_FORMAT_VERSION = 1
MODEL_FILENAME = MODEL_FILE


@dataclass
class LoadedModel:
    """A model rebuilt from a file, in eval mode, with the Config it was trained with."""

    model: nn.Module
    config: Config
    num_classes: int = 0
    source: Path | None = None  # the file the weights came from


def _num_classes(model: nn.Module, num_classes: int | None) -> int:
    if num_classes is not None:
        return int(num_classes)
    value = getattr(model, "num_classes", None)
    if value is None:
        raise ValueError(
            "save_model: the model has no num_classes attribute; pass num_classes explicitly"
        )
    return int(value)


def save_model(
    path: str | Path, model: nn.Module, config: Config, *, num_classes: int | None = None
) -> Path:
    """Write ``model``'s weights and ``config`` to a safetensors file, atomically.

    ``path`` is the file (``*.safetensors``) or a folder that receives ``model.safetensors``.
    The file is written to a temporary name in the same folder and renamed over the target,
    so a crash never leaves a half-written model. Returns the file written.
    """
    if not isinstance(config, Config):
        raise TypeError(f"save_model: config must be an abdnet Config, got {type(config).__name__}")
    target = Path(path)
    if target.suffix != ".safetensors":
        target = target / MODEL_FILENAME
    target.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": "abdnet-model",
        "format_version": str(MODEL_FORMAT_VERSION),
        "config": dump_config(config),
        "num_classes": str(_num_classes(model, num_classes)),
    }
    # safetensors refuses tensors that share storage and non-contiguous ones: give it
    # independent contiguous CPU copies.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_file(target) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    log.debug("saved model to %s", target)
    return target


def _official_config(model: OfficialABDNet) -> Config:
    # The authors' release: official network, 384x128 input, ImageNet mean/std (their
    # defaults), flip-averaged raw embeddings at test time (their evaluation).
    return Config(
        model=official_model_config(model),
        data=DataConfig(height=384, width=128),
    )


def _load_safetensors(file: Path, map_location: str | torch.device) -> LoadedModel:
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{file}: not a readable safetensors file: {exc}") from None
    if "config" not in metadata or "num_classes" not in metadata:
        raise ValueError(
            f"{file}: config missing: the safetensors metadata has no abdnet 'config' / "
            f"'num_classes' (was it written by abdnet.models.save_model?)"
        )
    version = _metadata_int(metadata, "format_version", file, default="1")
    if version > MODEL_FORMAT_VERSION:
        raise ValueError(
            f"{file}: model format version {version} is newer than this abdnet supports "
            f"({MODEL_FORMAT_VERSION})"
        )
    try:
        config = config_from_dict(load_yaml(metadata["config"]))
    except (ConfigError, yaml.YAMLError) as exc:
        raise ValueError(f"{file}: the stored config is invalid: {exc}") from None
    num_classes = _metadata_int(metadata, "num_classes", file)
    # Every classifier weight in the file has num_classes rows: metadata asking for more
    # than the largest tensor dimension is inconsistent (and could allocate without bound).
    largest = max((int(t.shape[0]) for t in tensors.values() if t.dim() >= 1), default=0)
    if not 1 <= num_classes <= largest:
        raise ValueError(
            f"{file}: metadata num_classes={num_classes} does not fit the weights "
            f"(the file's tensors have at most {largest} rows)"
        )
    # The weights come from the file: never fetch pretrained ImageNet weights to rebuild.
    model = build_model_from_config(
        dataclasses.replace(config.model, pretrained="none"), num_classes
    )
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{file}: weights do not match the stored config: {exc}") from None
    return LoadedModel(model=model, config=config, num_classes=num_classes, source=file)


def _metadata_int(
    metadata: dict[str, str], key: str, file: Path, default: str | None = None
) -> int:
    raw = metadata.get(key, default)
    try:
        return int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{file}: safetensors metadata {key}={raw!r} is not an integer") from None


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a model from a run folder, checkpoint folder, ``.safetensors`` or ``.pth.tar``.

    ``path`` may also be an ``https://`` URL (optionally pinned, ``URL#sha256=HEX``) or
    ``hf://OWNER/REPO[/FILE][@REVISION]``: :func:`abdnet.hub.resolve_source` downloads,
    verifies and caches it first. See :func:`resolve_checkpoint` for how a folder is
    resolved. An official ``.pth.tar``
    goes through :func:`abdnet.models.load_official` and gets the ``official`` model preset
    with 384x128 ImageNet-normalized input. The model is returned in eval mode on
    ``map_location``.
    """
    file = resolve_checkpoint(resolve_source(path))
    if file.suffix == ".safetensors":
        loaded = _load_safetensors(file, map_location)
    else:
        model = load_official(str(file))
        loaded = LoadedModel(
            model=model,
            config=_official_config(model),
            num_classes=int(getattr(model, "num_classes", 0)),
            source=file,
        )
    loaded.model.to(map_location).eval()
    return loaded


def weights_digest(model: object) -> str:
    """sha256 hex of a network's weights: tensor names, dtypes, shapes and bytes, in name order
    (the same weights saved twice, or in another folder, have one digest); for a backend that
    runs a file (an ONNX embedder's ``path``), of the file's bytes."""
    if isinstance(model, nn.Module):
        h = hashlib.sha256()
        for name, t in sorted(model.state_dict().items()):
            t = t.detach().to("cpu").contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
            # uint8 view: bytes of any dtype (bfloat16 has no numpy equivalent)
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()
    path = getattr(model, "path", None)
    if path is not None and Path(path).is_file():
        return sha256_file(path)
    raise TypeError(
        f"cannot fingerprint a model of type {type(model).__name__}: expected an nn.Module "
        f"or a backend with the .path of its model file"
    )
