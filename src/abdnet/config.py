"""Typed configuration: frozen dataclasses, YAML files and ``--set a.b=c`` overrides.

The dataclasses below are the one source of defaults. A YAML file lists only what it
changes; ``load_config`` merges it over the defaults, applies command-line overrides and
checks every key, type, enumerated choice (``Literal``) and range (``Range``), once, naming
the key at fault and where its value came from (the file or ``--set``). YAML is read with
YAML 1.2's rules for numbers and booleans (``1e-4`` is a float, ``yes`` is a string) and a
key given twice in one mapping is an error. The ``model`` section may name a ``preset`` (see
``MODEL_PRESETS``): its values are the base the other model keys override.

One concept in one file (over 450 lines): the typed configuration, its validation and its
YAML form.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

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
    "Range",
    "Backbone",
    "Arch",
    "OFPosition",
    "OWScope",
    "DatasetName",
    "SVDOForm",
    "GramNorm",
    "OptimizerName",
    "DecayScope",
    "LRSchedule",
    "PrecisionName",
    "BackendName",
    "Metric",
    "FlipMode",
    "Pooling",
    "IDHead",
    "AutoAugment",
    "OrthoSchedule",
    "choices",
    "model_config",
    "load_config",
    "load_yaml",
    "config_from_dict",
    "config_to_dict",
    "apply_overrides",
    "replace_checked",
    "with_data_root",
    "save_config",
    "dump_config",
]


_T = TypeVar("_T")


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the key (``key`` holds it)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric field, used as ``Annotated[float, Range(gt=0)]``.

    Floats must also be finite unless ``finite=False``.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    finite: bool = True

    def check(self, value: float, key: str) -> None:
        if self.finite and isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}", key)
        for bound, ok, word in (
            (self.ge, lambda b: value >= b, ">="),
            (self.gt, lambda b: value > b, ">"),
            (self.le, lambda b: value <= b, "<="),
            (self.lt, lambda b: value < b, "<"),
        ):
            if bound is not None and not ok(bound):
                raise ConfigError(f"{key}: expected a value {word} {bound:g}, got {value!r}", key)


# Enumerated options: the Literal type is the list of allowed values.
Backbone = Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "densenet121"]
Arch = Literal["abd", "official"]
# O.F. positions: "shallow" (res_conv_2 / shallow-CAM output), "reduction" (Ta), "cam" and
# "pam" (attention outputs) exist in both architectures; "before" and "sum" (the heads'
# outputs) only in "official".
OFPosition = Literal["shallow", "reduction", "cam", "pam", "before", "sum"]
OWScope = Literal["all", "stem", "none"]
DatasetName = Literal["synthetic", "market1501", "dukemtmcreid", "msmt17", "folder", "csv", "auto"]
SVDOForm = Literal["paper", "official"]
GramNorm = Literal["relative", "spatial", "none"]
OptimizerName = Literal["adam", "sgd"]
DecayScope = Literal["weights", "all"]
LRSchedule = Literal["step", "cosine"]
PrecisionName = Literal["auto", "fp32", "bf16", "fp16"]
# the runtime that runs a network for inference (abdnet.export.backend)
BackendName = Literal["auto", "torch", "onnx", "openvino"]
Metric = Literal["euclidean", "cosine"]
FlipMode = Literal["raw", "normalized"]
Pooling = Literal["avg", "gem"]
IDHead = Literal["linear", "cosine"]
AutoAugment = Literal["none", "autoaugment", "randaugment", "trivialaugment", "augmix"]
# How beta_OF / beta_OW change over step 2 (engine/schedule.py): a factor in [0, 1].
OrthoSchedule = Literal["constant", "ramp_up", "ramp_down", "cosine_down"]

Positive = Annotated[int, Range(ge=1)]
NonNegative = Annotated[int, Range(ge=0)]
Probability = Annotated[float, Range(ge=0.0, le=1.0)]


def choices(literal: Any) -> tuple[Any, ...]:
    """The allowed values of a ``Literal`` type."""
    return typing.get_args(literal)


@dataclass(frozen=True)
class ModelConfig:
    """The network. Every switch of the paper's Table 1 is a field here."""

    preset: Literal["paper", "official", "baseline"] = "paper"  # the MODEL_PRESETS base
    arch: Arch = "abd"  # "abd": sections 3/4.1 of the paper; "official": the authors' code
    backbone: Backbone = "resnet50"
    # "none", "imagenet" (torchvision weights API, downloads) or a torchvision state-dict path
    pretrained: str = "none"
    shallow_cam: bool = True  # CAM after res_conv_2 (section 3.3)
    cam: bool = True  # CAM on Ta in the attentive branch
    pam: bool = True  # PAM on Ta in the attentive branch
    # PAM's query/key projections have C / pam_reduction channels: 1 is the paper's eq. 3
    # (B, C with C channels), 8 the authors' code (DANet's choice).
    pam_reduction: Positive = 1
    # Where O.F. (SVDO on features) is applied; checked against the architecture's maps.
    of_positions: tuple[OFPosition, ...] = ("shallow", "reduction", "cam", "pam")
    # Conv weights O.W. regularizes: "all" (paper: res_conv_1..4 and both res_conv_5),
    # "stem" (what the official code actually reaches: the 7x7 conv only) or "none".
    ow_scope: OWScope = "all"
    svd_layer: bool = False  # Table 1 "baseline + SVD layer": SVDNet-style decorrelated FC layer
    dropout: Annotated[float, Range(ge=0.0, lt=1.0)] = 0.5  # dropout of the reduction layers
    global_dim: Positive = 1024  # kg: global-branch vector size
    attentive_dim: Positive = 1024  # ka: attentive-branch vector size
    reduction_dim: Positive = 1024  # channels of Ta after the attentive branch's reduction
    last_stride: Annotated[int, Range(ge=1, le=2)] = 1  # res_conv_5 stride (paper: 1)
    # -- re-ID training tricks (arch "abd"; off in every preset: the paper has none of them)
    # Branch pooling: "avg" (the paper's GAP) or "gem", generalized mean pooling
    # (Radenovic, Tolias, Chum, TPAMI 2018), (mean x^p)^(1/p) with a learned p from gem_p.
    pooling: Pooling = "avg"
    gem_p: Annotated[float, Range(ge=1.0)] = 3.0
    # BNNeck (Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person Re-ID",
    # CVPRW 2019): a BatchNorm1d (bias frozen at 0) after each branch vector; triplet and
    # center losses see the vectors before it, the ID classifiers and retrieval after it.
    bnneck: bool = False
    # ID classifier: "linear" (the paper) or "cosine": logits = head_scale * cos(x, w_c),
    # normalized features and class weights (NormFace, Wang et al. 2017), the head ArcFace
    # (Deng et al., CVPR 2019) puts its angular margin on (loss.arc_margin).
    id_head: IDHead = "linear"
    head_scale: Annotated[float, Range(gt=0.0)] = 30.0


# Presets are plain ModelConfig values: no registry, no string magic beyond this dict.
MODEL_PRESETS: dict[str, ModelConfig] = {
    "paper": ModelConfig(),
    # The authors' released network: 2 stripes x (before + CAM + PAM heads), 3072-d.
    "official": ModelConfig(
        preset="official",
        arch="official",
        pam_reduction=8,
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

    ids: Annotated[int, Range(ge=2)] = 40  # identities in total (half train, half test)
    cams: Annotated[int, Range(ge=2)] = 4  # cameras
    per_id: Positive = 8  # images per identity and split
    height: Annotated[int, Range(ge=8)] = 128  # rendered image height
    width: Annotated[int, Range(ge=8)] = 64  # rendered image width
    seed: int = 0  # everything is deterministic from this


@dataclass(frozen=True)
class DataConfig:
    """The data set, the input transform and the P x K batches."""

    name: DatasetName = "synthetic"  # "auto" detects the layout from ``root``
    root: str = ""  # data-set root (or CSV file)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    height: Annotated[int, Range(ge=8)] = 384  # network input height (paper: 384)
    width: Annotated[int, Range(ge=8)] = 128  # network input width (paper: 128)
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)  # ImageNet normalization, per RGB channel
    std: tuple[Annotated[float, Range(gt=0.0)], ...] = (0.229, 0.224, 0.225)
    flip_p: Probability = 0.5  # random horizontal flip probability
    erasing_p: Probability = 0.5  # random erasing probability (ref. [52])
    translate_p: Probability = 0.0  # random 2D translation (resize x1.125 + crop); official: 0.5
    color_jitter: bool = False  # optional colour jitter
    # torchvision's learned / random augmentation policies on the PIL image, after the flip:
    # AutoAugment (Cubuk et al. 2019, its ImageNet policy), RandAugment (Cubuk et al. 2020),
    # TrivialAugmentWide (Mueller & Hutter 2021), AugMix (Hendrycks et al. 2020).
    auto_augment: AutoAugment = "none"
    num_instances: Positive = 4  # K images per identity in a batch (paper: 4)
    batch_size: Positive = 64  # P*K (paper: 16 ids x 4)
    workers: Annotated[int, Range(ge=-1)] = -1  # DataLoader workers; -1 picks min(8, cpus - 1)
    # share of training identities held out as a validation query/gallery for model selection
    val_fraction: Annotated[float, Range(ge=0.0, lt=1.0)] = 0.0
    # brightness, contrast, saturation, hue of the colour jitter (used when color_jitter is on)
    color_jitter_strength: tuple[Annotated[float, Range(ge=0.0)], ...] = (0.2, 0.15, 0.1, 0.0)
    grayscale_p: Probability = 0.0  # probability of turning a training image grey (3 channels)
    # per-channel gains ~ U(1 - g, 1 + g) on training images (another camera's white balance)
    channel_gain: Annotated[float, Range(ge=0.0, lt=1.0)] = 0.0
    # Unreadable image files (zero-byte, garbage, truncated; found when the data set is
    # loaded) are an error naming them all; true leaves them out and lists them in the run
    # folder's skipped_images.txt.
    skip_bad: bool = False


@dataclass(frozen=True)
class LossConfig:
    """Eq. (6): L = L_xent + beta_tr L_triplet + beta_OF L_OF + beta_OW L_OW."""

    label_smooth: Annotated[float, Range(ge=0.0, lt=1.0)] = 0.1  # epsilon of CE-LS
    beta_tr: Annotated[float, Range(ge=0.0)] = 0.1  # 0 disables the triplet term ("(XE)")
    margin: Annotated[float, Range(ge=0.0)] = 1.2  # batch-hard triplet margin alpha
    beta_of: Annotated[float, Range(ge=0.0)] = 1e-6  # beta_OF of eq. (6)
    beta_ow: Annotated[float, Range(ge=0.0)] = 1e-3  # beta_OW of eq. (6)
    power_iters: Positive = 2  # power-iteration steps of eq. (5)
    # "paper": eq. (4) squared, power_iters steps of eq. (5); "official": the authors' code
    # (one product + Rayleigh quotient from a fresh random start, O.F. un-squared summed over
    # the batch / (B/32), O.W. x10; power_iters, of_gram_norm and of_paper_scale do not apply).
    svdo_form: SVDOForm = "paper"
    # O.F. Gram normalization for svdo_form "paper": "relative" = eq. (4) on F F^T / sqrt(lambda_1),
    # i.e. (lambda_1 - lambda_min)^2 / lambda_1, of degree 2 in the activations like the
    # authors' penalty (so their ratio does not drift with the activation scale);
    # "spatial" = F F^T / N (N = H*W); "none" = raw F F^T (eq. 4 literally, 1e2-1e5 x the CE).
    # See losses/svdo.py and docs/paper-vs-official.md.
    of_gram_norm: GramNorm = "relative"
    # Multiplies L_OF of svdo_form "paper" (with beta_of), whatever of_gram_norm. 31 = 32 (the
    # authors' sum over the batch / (B/32) vs our mean) x 0.97 (their one-step estimator's
    # expected gradient / the exact lambda_1 gradient on post-ReLU 1024 x 24*8 maps) makes the
    # expected O.F. gradient with "relative" equal to the authors' code's (the quantity SGD
    # applies; losses/svdo.py derives it, benchmarks/svdo_magnitude.py of measures it).
    of_paper_scale: Annotated[float, Range(ge=0.0)] = 31.0
    # ArcFace's additive angular margin m (Deng et al., CVPR 2019): the target logit becomes
    # s cos(theta + m); needs model.id_head "cosine"; 0 = off. Their value: 0.5.
    arc_margin: Annotated[float, Range(ge=0.0, lt=1.5)] = 0.0
    # Center loss (Wen et al., ECCV 2016): beta_center * 1/2 mean_i ||f_i - c_{y_i}||^2 on the
    # triplet features (before BNNeck); centers move by their update rule with rate
    # center_alpha (no gradient). 0 = off; Luo et al. 2019 use 5e-4.
    beta_center: Annotated[float, Range(ge=0.0)] = 0.0
    center_alpha: Annotated[float, Range(gt=0.0, le=1.0)] = 0.5
    # beta_OF / beta_OW over step 2 (from their start epochs to the last epoch), a factor of
    # the beta: "constant" (the paper), "ramp_up" (0 -> 1, linear), "ramp_down" (1 -> 0,
    # linear), "cosine_down" (half a cosine 1 -> 0). On small data a regularizer that is
    # strong while the network fits and fades later (or the reverse) can help.
    of_schedule: OrthoSchedule = "constant"
    ow_schedule: OrthoSchedule = "constant"


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and learning-rate steps."""

    optimizer: OptimizerName = "adam"
    lr: Annotated[float, Range(gt=0.0)] = 3e-4  # base learning rate
    weight_decay: Annotated[float, Range(ge=0.0)] = 5e-4  # L2 penalty (Adam: coupled, as torch)
    # Which parameters decay: "weights" = conv and linear weights only (norms, biases and
    # attention gammas are not pulled towards 0); "all" = every parameter.
    weight_decay_scope: DecayScope = "weights"
    momentum: Probability = 0.9  # sgd only
    milestones: tuple[NonNegative, ...] = (30, 40)  # step-2 epochs where the LR is x gamma
    gamma: Annotated[float, Range(gt=0.0)] = 0.1  # LR decay factor at each milestone
    # step-2 learning-rate curve: "step" (x gamma at each milestone) or "cosine" (half a
    # cosine from lr down to lr * gamma at the last epoch; milestones unused)
    lr_schedule: LRSchedule = "step"
    warmup_epochs: NonNegative = 0  # first step-2 epochs ramp linearly up to the curve above


@dataclass(frozen=True)
class TrainConfig:
    """The two-step schedule and the run's machinery."""

    frozen_epochs: NonNegative = 10  # step 1: backbone frozen, CE + triplet only
    epochs: NonNegative = 60  # step 2: all layers, the full eq. (6)
    of_start_epoch: NonNegative = 0  # step-2 epoch from which O.F. is on
    ow_start_epoch: NonNegative = 0  # step-2 epoch from which O.W. is on
    reset_optimizer: bool = True  # fresh optimizer state at the step boundary
    seed: int = 0  # seeds python, numpy, torch, the sampler and the loader workers
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    precision: PrecisionName = "auto"  # training arithmetic; see engine/precision.py
    channels_last: bool = False  # NHWC memory format (faster convolutions on most hardware)
    compile: bool = False  # torch.compile the model
    grad_clip: Annotated[float, Range(ge=0.0)] = 0.0  # max gradient norm, 0 = off
    deterministic: bool = False  # deterministic kernels (exact resume, slower)
    eval_every: NonNegative = 10  # epochs between query/gallery evaluations (0 = only at the end)
    checkpoint_every: Positive = 1  # epochs between checkpoints


@dataclass(frozen=True)
class EvalConfig:
    """How query/gallery features are extracted and ranked."""

    metric: Metric = "euclidean"  # squared Euclidean (torchreid, official code) or 1 - cos
    normalize: bool = False  # L2-normalize embeddings before matching
    flip: bool = False  # average with the horizontally mirrored image
    flip_mode: FlipMode = "raw"  # "raw" (official code) or "normalized" averaging
    rerank: bool = False  # k-reciprocal re-ranking
    aqe: bool = False  # average query expansion
    batch_size: Positive = 128  # images per forward pass
    max_rank: Positive = 50  # length of the CMC curve
    # Arithmetic of evaluation, during training and in ``abdnet eval`` alike, so both report
    # the same numbers; "auto" lets the machine choose as training does.
    precision: PrecisionName = "fp32"
    # False-accept rates whose true-accept rate ``abdnet eval`` reports beside CMC/mAP/mINP
    # (with the EER); empty: no verification numbers.
    verification_fars: tuple[Annotated[float, Range(gt=0.0, lt=1.0)], ...] = (1e-2, 1e-3)


@dataclass(frozen=True)
class Config:
    """Everything a run needs; saved as ``config.yaml`` in the run folder."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _check_config(cfg: Config) -> None:
    """Rules that tie several keys together (single keys are checked by their types)."""
    d = cfg.data
    if d.batch_size % d.num_instances:
        raise ConfigError(
            f"data.batch_size: {d.batch_size} is not a multiple of data.num_instances="
            f"{d.num_instances} (a batch is P identities x K images)",
            "data.batch_size",
        )
    if len(d.mean) != 3 or len(d.std) != 3:
        raise ConfigError(
            f"data.mean / data.std: expected 3 values (R, G, B), got {len(d.mean)} / {len(d.std)}",
            "data.mean",
        )
    jitter = d.color_jitter_strength
    if len(jitter) != 4 or jitter[3] > 0.5:
        raise ConfigError(
            "data.color_jitter_strength: expected 4 values (brightness, contrast, saturation, "
            f"hue <= 0.5), got {list(jitter)}",
            "data.color_jitter_strength",
        )
    m = cfg.optim.milestones
    if list(m) != sorted(set(m)):
        raise ConfigError(
            f"optim.milestones: must be increasing, got {list(m)}", "optim.milestones"
        )
    if cfg.loss.arc_margin > 0 and cfg.model.id_head != "cosine":
        raise ConfigError(
            "loss.arc_margin: the angular margin needs model.id_head: cosine "
            f"(got {cfg.model.id_head!r})",
            "loss.arc_margin",
        )
    if cfg.train.frozen_epochs + cfg.train.epochs == 0:
        raise ConfigError(
            "train.frozen_epochs + train.epochs: nothing to train (both 0)", "train.epochs"
        )


def _model_values(model: dict[str, Any]) -> dict[str, Any]:
    """The ``model`` section's values over those of the preset it names (default "paper")."""
    preset = model.get("preset", "paper")
    if not isinstance(preset, str) or preset not in MODEL_PRESETS:
        raise ConfigError(
            f"model.preset: unknown preset {preset!r}; expected one of {sorted(MODEL_PRESETS)}",
            "model.preset",
        )
    return {**config_to_dict(MODEL_PRESETS[preset]), **model}


def model_config(preset: str = "paper", **overrides: Any) -> ModelConfig:
    """The preset's ModelConfig with ``overrides`` applied (unknown names are an error)."""
    return _build(ModelConfig, _model_values({**overrides, "preset": preset}), "model")


# ---------------------------------------------------------------------------------------
# dict <-> dataclass, with checks that name the key


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples become lists) suitable for YAML/JSON."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return v

    return conv(cfg)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _check_value(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *extras = typing.get_args(tp)
        value = _check_value(base, value, key)
        for extra in extras:
            if isinstance(extra, Range):
                extra.check(value, key)
        return value
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, bool) or value not in allowed:
            raise ConfigError(
                f"{key}: expected one of {', '.join(repr(a) for a in allowed)}, got {value!r}", key
            )
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}", key)
        return _build(tp, value, key)
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}", key)
        return tuple(_check_value(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _check_value(arg, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} does not match {tp}", key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}", key)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}", key)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}", key)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}", key)
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}", key)


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key(s): {', '.join(where + str(u) for u in unknown)}; "
            f"valid keys{' of ' + prefix if prefix else ''}: {', '.join(sorted(names))}",
            where + str(unknown[0]),
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _check_value(hints[name], value, key)
    return cls(**kwargs)


def replace_checked(section: _T, key: str, /, **changes: Any) -> _T:
    """``dataclasses.replace`` for a config section (``key`` is its place, e.g. ``"eval"``)
    with the checks a loaded config gets: types, choices and ranges, errors naming
    ``key.field``. Command-line options that override config values go through this."""
    if not dataclasses.is_dataclass(section) or isinstance(section, type):
        raise TypeError(f"replace_checked: expected a config section, got {section!r}")
    data = config_to_dict(section)
    data.update(changes)
    return _build(type(section), data, key)


def with_data_root(data: DataConfig, root: str | Path) -> DataConfig:
    """``data`` reading the data set at ``root`` (layout detected, ``--data ROOT``); the input
    size, augmentation and batch composition stay."""
    return replace_checked(data, "data", name="auto", root=str(root))


def config_from_dict(data: dict[str, Any] | None) -> Config:
    """Build and check a Config from a nested dict; ``model.preset`` selects the model base."""
    data = dict(data or {})
    model = data.get("model") or {}
    if not isinstance(model, dict):
        raise ConfigError(f"model: expected a mapping, got {type(model).__name__}", "model")
    data["model"] = _model_values(model)
    cfg = _build(Config, data, "")
    _check_config(cfg)
    return cfg


# ---------------------------------------------------------------------------------------
# YAML 1.2 reading


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 (core schema) scalars and no duplicate keys."""


# PyYAML implements YAML 1.1, where ``1e-4`` is a string and ``yes``/``on`` are booleans.
# Replace its implicit resolvers for bool, int, float and null by the YAML 1.2 core schema.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (
        "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int",
        "tag:yaml.org,2002:float", "tag:yaml.org,2002:null",
    )]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}  # fmt: skip
for _tag, _pattern, _first in (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
):
    _Loader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text)  # "010" is ten in YAML 1.2 (no implicit octal)


def _construct_bool(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> bool:
    return loader.construct_scalar(node).lower() == "true"


class _DuplicateKeyError(yaml.YAMLError):
    """A mapping names a key twice."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise _DuplicateKeyError(
                f"line {key_node.start_mark.line + 1}: the key {key!r} appears twice in one "
                "mapping (the second would silently replace the first)"
            )
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(source: str | typing.TextIO) -> Any:
    """Parse YAML as configs are parsed (YAML 1.2 scalars, duplicate keys refused).

    ``source`` is text or an open file (whose name then appears in error messages).
    """
    return yaml.load(source, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


# ---------------------------------------------------------------------------------------
# files and --set overrides


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.sub=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {exc}", key) from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``a.b=c`` strings (values parsed as YAML 1.2) to a nested dict, in place."""
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


def _override_keys(overrides: list[str] | tuple[str, ...]) -> set[str]:
    return {item.split("=", 1)[0].strip() for item in overrides if "=" in item}


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides.

    An error names the key and where its value came from: ``--set`` or the file.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            with p.open(encoding="utf-8") as f:
                loaded = load_yaml(f)
        except _DuplicateKeyError as exc:
            raise ConfigError(f"{p}: {exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
        data = loaded
    apply_overrides(data, overrides)
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        from_set = exc.key is not None and any(
            exc.key == k or exc.key.startswith(k + ".") or exc.key.startswith(k + "[")
            for k in _override_keys(overrides)
        )
        if from_set:
            raise ConfigError(f"--set {exc}", exc.key) from None
        if path is not None:
            raise ConfigError(f"{path}: {exc}", exc.key) from None
        raise


def dump_config(cfg: Config) -> str:
    """The config as YAML (every key, the resolved values)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the config as YAML, atomically."""
    from abdnet.files import atomic_write

    atomic_write(path, dump_config(cfg))
