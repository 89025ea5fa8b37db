"""Table 1's rows as ``Variant``s and the model/loss values each sets over a base config.

This module is the one source of those values; the YAML files under ``configs/ablation/``
must agree with it (``tests/test_ablation.py`` checks). The decisions where the paper leaves
room are listed in ``abdnet.ablation``'s docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from abdnet.config import Config, LossConfig, config_from_dict, config_to_dict

__all__ = [
    "EXTRA_VARIANTS",
    "PaperRow",
    "TABLE1_VARIANTS",
    "VARIANTS",
    "Variant",
    "resolve_variants",
    "variant_config",
    "variant_overrides",
]


class PaperRow(NamedTuple):
    """A row of the paper's Table 1 (ResNet-50, full schedule), in %."""

    market_rank1: float
    market_mAP: float
    duke_rank1: float
    duke_mAP: float


@dataclass(frozen=True)
class Variant:
    """One ablation row. ``model``/``loss`` hold the values the row sets; ``"of"``/``"ow"``
    say whether the orthogonality terms are on (their positions/scope are derived from the
    attention modules present and the base config)."""

    name: str  # run-folder name, e.g. "pam_cam"
    label: str  # the paper's row label, e.g. "baseline (XE) + PAM + CAM"
    shallow_cam: bool = False
    cam: bool = False
    pam: bool = False
    of: bool = False
    ow: bool = False
    svd_layer: bool = False
    triplet: bool = False  # False: "(XE)", beta_tr = 0
    paper: PaperRow | None = None  # the paper's Table 1 numbers for this row
    note: str = ""


TABLE1_VARIANTS: tuple[Variant, ...] = (
    Variant("baseline", "baseline (XE)", paper=PaperRow(91.50, 77.40, 82.80, 66.40)),
    Variant("pam", "baseline (XE) + PAM", pam=True, paper=PaperRow(92.10, 78.10, 83.80, 67.00)),
    Variant(
        "cam",
        "baseline (XE) + CAM",
        shallow_cam=True,
        cam=True,
        paper=PaperRow(91.80, 78.00, 84.30, 67.60),
        note="CAM in both places: shallow (after res_conv_2) and attentive branch",
    ),
    Variant(
        "pam_cam",
        "baseline (XE) + PAM + CAM",
        shallow_cam=True,
        cam=True,
        pam=True,
        paper=PaperRow(92.70, 78.50, 84.40, 67.90),
    ),
    Variant("of", "baseline (XE) + O.F.", of=True, paper=PaperRow(92.90, 82.10, 84.90, 71.30)),
    Variant("ow", "baseline (XE) + O.W.", ow=True, paper=PaperRow(92.50, 78.50, 83.70, 67.40)),
    Variant(
        "of_ow",
        "baseline (XE) + O.F. + O.W.",
        of=True,
        ow=True,
        paper=PaperRow(93.20, 82.30, 85.30, 72.20),
    ),
    Variant(
        "svd", "baseline + SVD layer", svd_layer=True, paper=PaperRow(90.80, 76.90, 79.40, 62.50)
    ),
    Variant(
        "abdnet_xe",
        "ABD-Net (XE)",
        shallow_cam=True,
        cam=True,
        pam=True,
        of=True,
        ow=True,
        paper=PaperRow(94.90, 85.90, 87.30, 76.00),
    ),
    Variant(
        "abdnet",
        "ABD-Net",
        shallow_cam=True,
        cam=True,
        pam=True,
        of=True,
        ow=True,
        triplet=True,
        paper=PaperRow(95.60, 88.28, 89.00, 78.59),
    ),
)

EXTRA_VARIANTS: tuple[Variant, ...] = (
    Variant(
        "abdnet_no_shallow_cam",
        "ABD-Net w/o shallow CAM",
        cam=True,
        pam=True,
        of=True,
        ow=True,
        triplet=True,
        note="extra: ABD-Net without the CAM after res_conv_2",
    ),
    Variant(
        "abdnet_no_of",
        "ABD-Net w/o O.F.",
        shallow_cam=True,
        cam=True,
        pam=True,
        ow=True,
        triplet=True,
        note="extra: attention + O.W. + triplet, no feature orthogonality",
    ),
)

VARIANTS: dict[str, Variant] = {v.name: v for v in TABLE1_VARIANTS + EXTRA_VARIANTS}


def variant_overrides(variant: Variant, base: Config) -> dict[str, dict[str, Any]]:
    """The ``model``/``loss`` values ``variant`` sets over ``base`` (a nested dict, YAML-ready)."""
    of_positions: list[str] = []
    if variant.of:
        # Feature maps that exist in the network: res_conv_2 output (shallow-CAM output when
        # there is one), Ta, and the attention outputs.
        of_positions = ["shallow", "reduction"]
        if variant.cam:
            of_positions.append("cam")
        if variant.pam:
            of_positions.append("pam")
    ow_scope = "none"
    if variant.ow:
        ow_scope = base.model.ow_scope if base.model.ow_scope in ("all", "stem") else "all"
    beta_tr = 0.0
    if variant.triplet:
        beta_tr = base.loss.beta_tr if base.loss.beta_tr > 0 else LossConfig().beta_tr
    attention = variant.shallow_cam or variant.cam or variant.pam
    preset = "paper" if attention or variant.of or variant.ow else "baseline"
    return {
        "model": {
            "preset": preset,
            "arch": "abd",
            "shallow_cam": variant.shallow_cam,
            "cam": variant.cam,
            "pam": variant.pam,
            "of_positions": of_positions,
            "ow_scope": ow_scope,
            "svd_layer": variant.svd_layer,
        },
        "loss": {"beta_tr": beta_tr},
    }


def variant_config(variant: Variant | str, base: Config, *, seed: int | None = None) -> Config:
    """``base`` with ``variant``'s model/loss values (and ``train.seed = seed`` when given);
    data, optim, eval and the rest of train untouched."""
    if isinstance(variant, str):
        variant = resolve_variants([variant])[0]
    data = config_to_dict(base)
    for section, values in variant_overrides(variant, base).items():
        data[section].update(values)
    if seed is not None:
        data["train"]["seed"] = seed
    return config_from_dict(data)


def resolve_variants(names: Sequence[str] | None) -> list[Variant]:
    """Variants by name (``None``/empty: the ten Table 1 rows; ``all``: plus the extras)."""
    if not names:
        return list(TABLE1_VARIANTS)
    out: list[Variant] = []
    for n in names:
        if n == "all":
            out.extend(v for v in VARIANTS.values() if v not in out)
            continue
        if n not in VARIANTS:
            raise ValueError(
                f"--variants: unknown variant {n!r}; expected 'all' or some of {', '.join(VARIANTS)}"
            )
        if VARIANTS[n] not in out:
            out.append(VARIANTS[n])
    return out
