"""Typed configuration: frozen dataclasses, YAML files and ``--set a.b=c`` overrides.

The dataclasses below are the one source of defaults. A YAML file lists only what it
changes; ``load_config`` merges it over the defaults, applies command-line overrides and
checks every key and type, naming the key at fault. The ``model`` section may name a
``preset`` (see ``MODEL_PRESETS``): its values are the base the other model keys override.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ModelConfig",
    "SyntheticConfig",
    "DataConfig",
    "LossConfig",
    "OptimConfig",
    "TrainConfig",
    "EvalConfig",
    "Config",
    "MODEL_PRESETS",
    "ConfigError",
    "model_config",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "apply_overrides",
    "save_config",
    "dump_config",
]


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the key."""


@dataclass(frozen=True)
class ModelConfig:
    """The network. Every switch of the paper's Table 1 is a field here."""

    preset: str = "paper"  # name of the MODEL_PRESETS entry these values started from
    arch: str = "abd"  # "abd": sections 3/4.1 of the paper; "official": the authors' code, weight-compatible
    backbone: str = "resnet50"  # resnet18/34/50/101/152 or densenet121
    pretrained: str = (
        "none"  # "none", "imagenet" (torchvision weights API, downloads) or a state-dict path
    )
    shallow_cam: bool = True  # CAM after res_conv_2 (section 3.3)
    cam: bool = True  # CAM on Ta in the attentive branch
    pam: bool = True  # PAM on Ta in the attentive branch
    # Where O.F. (SVDO on features) is applied; names are checked against the architecture.
    # abd: "shallow" (res_conv_2 / shallow-CAM output), "reduction" (Ta), "cam", "pam".
    of_positions: tuple[str, ...] = ("shallow", "reduction", "cam", "pam")
    # Which conv weights O.W. regularizes: "all" (paper: res_conv_1..4 and both res_conv_5),
    # "stem" (what the official code actually reaches: the 7x7 conv only) or "none".
    ow_scope: str = "all"
    svd_layer: bool = False  # Table 1 "baseline + SVD layer": SVDNet-style decorrelated FC layer
    dropout: float = 0.5  # dropout of the reduction layers (Table 1 footnote: on)
    global_dim: int = 1024  # kg: global-branch vector size
    attentive_dim: int = 1024  # ka: attentive-branch vector size
    reduction_dim: int = 1024  # channels of Ta after the attentive branch's reduction layer
    last_stride: int = 1  # stride of res_conv_5 (paper: down-sampling removed -> 1)


# Presets are plain ModelConfig values: no registry, no string magic beyond this dict.
MODEL_PRESETS: dict[str, ModelConfig] = {
    "paper": ModelConfig(),
    # The authors' released network: 2 stripes x (before + CAM + PAM heads), 3072-d.
    "official": ModelConfig(
        preset="official",
        arch="official",
        of_positions=("shallow", "before", "cam", "pam", "sum"),
        ow_scope="all",
    ),
    # Table 1 baseline (XE): ResNet-50 with two duplicated res_conv_5 branches, no attention.
    "baseline": ModelConfig(
        preset="baseline",
        shallow_cam=False,
        cam=False,
        pam=False,
        of_positions=(),
        ow_scope="none",
    ),
}


@dataclass(frozen=True)
class SyntheticConfig:
    """The built-in synthetic re-ID data set (``data.name: synthetic``)."""

    ids: int = 40  # identities in total (half train, half test)
    cams: int = 4  # cameras
    per_id: int = 8  # images per identity and split
    height: int = 128  # rendered image height
    width: int = 64  # rendered image width
    seed: int = 0  # everything is deterministic from this


@dataclass(frozen=True)
class DataConfig:
    name: str = "synthetic"  # "synthetic", "market1501", "dukemtmcreid", "msmt17", "folder", "csv" or "auto"
    root: str = ""  # data-set root (or CSV file); "auto" detects the layout from it
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    height: int = 384  # network input height (paper: 384)
    width: int = 128  # network input width (paper: 128)
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)  # ImageNet normalization
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    flip_p: float = 0.5  # random horizontal flip probability
    erasing_p: float = 0.5  # random erasing probability (ref. [52])
    translate_p: float = (
        0.0  # random 2D translation (resize x1.125 + random crop), official code: 0.5
    )
    color_jitter: bool = False  # optional colour jitter
    num_instances: int = 4  # K images per identity in a batch (paper: 4)
    batch_size: int = 64  # P*K (paper: 16 ids x 4)
    workers: int = -1  # DataLoader workers; -1 picks min(8, cpus - 1)
    val_fraction: float = 0.0  # share of training identities held out for model selection
    # brightness, contrast, saturation, hue of the colour jitter (used when color_jitter is on)
    color_jitter_strength: tuple[float, ...] = (0.2, 0.15, 0.1, 0.0)
    grayscale_p: float = 0.0  # probability of turning a training image grey (all 3 channels)
    # per-channel gains ~ U(1 - g, 1 + g) on training images (another camera's white balance)
    channel_gain: float = 0.0


@dataclass(frozen=True)
class LossConfig:
    """Eq. (6): L = L_xent + beta_tr L_triplet + beta_OF L_OF + beta_OW L_OW."""

    label_smooth: float = 0.1  # epsilon of label-smoothed cross-entropy
    beta_tr: float = 0.1  # 0 disables the triplet term (Table 1 "ABD-Net (XE)")
    margin: float = 1.2  # batch-hard triplet margin alpha
    beta_of: float = 1e-6
    beta_ow: float = 1e-3
    power_iters: int = 2  # power-iteration steps of eq. (5)
    svdo_form: str = "paper"  # "paper": squared eq. (4); "official": the authors' code's scaling
    # O.F. Gram for svdo_form "paper" (added by the losses engineer): "spatial" = F F^T / N,
    # N = H*W, keeps the squared eq. (4) at a trainable scale (raw: 1e2-1e5 x the CE, see
    # losses/svdo.py); "none" = raw F F^T (eq. 4 literally). "official" always uses the raw Gram.
    of_gram_norm: str = "spatial"


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = "adam"  # "adam" or "sgd"
    lr: float = 3e-4
    weight_decay: float = 5e-4
    momentum: float = 0.9  # sgd only
    milestones: tuple[int, ...] = (30, 40)  # epochs (of step 2) where the LR is multiplied by gamma
    gamma: float = 0.1
    # step-2 learning-rate curve: "step" (x gamma at each milestone) or "cosine" (half a
    # cosine from lr down to lr * gamma at the last epoch; milestones unused)
    lr_schedule: str = "step"
    warmup_epochs: int = 0  # first step-2 epochs ramp linearly up to the curve above


@dataclass(frozen=True)
class TrainConfig:
    frozen_epochs: int = 10  # step 1: backbone frozen, CE + triplet only
    epochs: int = 60  # step 2: all layers, the full eq. (6)
    of_start_epoch: int = 0  # step-2 epoch from which O.F. is on
    ow_start_epoch: int = 0  # step-2 epoch from which O.W. is on
    reset_optimizer: bool = True  # fresh optimizer/scheduler state at the step boundary
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    precision: str = "auto"  # "auto", "fp32", "bf16", "fp16"
    channels_last: bool = False
    compile: bool = False
    grad_clip: float = 0.0  # max gradient norm, 0 = off
    deterministic: bool = False
    eval_every: int = 10  # epochs between query/gallery evaluations (0 = only at the end)
    checkpoint_every: int = 1  # epochs between checkpoints


@dataclass(frozen=True)
class EvalConfig:
    metric: str = "euclidean"  # "euclidean" or "cosine"
    normalize: bool = False  # L2-normalize embeddings before matching
    flip: bool = False  # average with the horizontally mirrored image
    flip_mode: str = "raw"  # "raw" (official code) or "normalized" averaging
    rerank: bool = False  # k-reciprocal re-ranking
    aqe: bool = False  # average query expansion
    batch_size: int = 128
    max_rank: int = 50


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def model_config(preset: str = "paper", **overrides: Any) -> ModelConfig:
    """The preset's ModelConfig with ``overrides`` applied (unknown names are an error)."""
    if preset not in MODEL_PRESETS:
        raise ConfigError(
            f"model.preset: unknown preset {preset!r}; expected one of {sorted(MODEL_PRESETS)}"
        )
    base = config_to_dict(MODEL_PRESETS[preset])
    base.update(overrides)
    base["preset"] = preset
    return _build(ModelConfig, base, "model")


# ---------------------------------------------------------------------------------------
# dict <-> dataclass, with type checks that name the key


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples become lists) suitable for YAML/JSON."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return v

    return conv(cfg)


def _check_value(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, key)
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list of {item_tp.__name__}, got {value!r}")
        return tuple(_check_value(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _check_value(arg, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} does not match {tp}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key(s): {', '.join(where + u for u in unknown)}; "
            f"valid keys{' of ' + prefix if prefix else ''}: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _check_value(hints[name], value, key)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any] | None) -> Config:
    """Build a Config from a nested dict; ``model.preset`` selects the model base values."""
    data = dict(data or {})
    model = dict(data.get("model") or {})
    preset = model.get("preset", "paper")
    if not isinstance(preset, str) or preset not in MODEL_PRESETS:
        raise ConfigError(
            f"model.preset: unknown preset {preset!r}; expected one of {sorted(MODEL_PRESETS)}"
        )
    merged = config_to_dict(MODEL_PRESETS[preset])
    merged.update(model)
    data["model"] = merged
    return _build(Config, data, "")


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.sub=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {exc}") from exc
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``a.b=c`` strings (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        parts, value = _parse_override(item)
        node = data
        for p in parts[:-1]:
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {'.'.join(parts)}: {p!r} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
        data = loaded
    apply_overrides(data, overrides)
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{exc}") from None


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(dump_config(cfg))
