"""Re-ID's standard training tricks by name: each a set of config overrides.

Every trick is an ordinary config option (documented, with its source, where the option is
defined); this table only gives the usual bundles short names for ``abdnet cv --trick NAME``
and ``abdnet train --trick NAME``, applied before ``--set`` so a ``--set`` still wins. None
is on in the ``paper`` preset unless the paper has it (label smoothing, random erasing).

This module imports nothing else of abdnet.
"""

from __future__ import annotations

__all__ = ["TRICKS", "trick_overrides"]

# name -> (what it does, the --set overrides it stands for)
TRICKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "bnneck": ("BNNeck (Luo et al. 2019)", ("model.bnneck=true",)),
    "gem": ("GeM pooling, p from 3 (Radenovic et al. 2018)", ("model.pooling=gem",)),
    "cosine": ("scaled-cosine ID head, s = 30 (Wang et al. 2017)", ("model.id_head=cosine",)),
    "arcface": (
        "cosine head + additive angular margin 0.5 (Deng et al. 2019)",
        ("model.id_head=cosine", "loss.arc_margin=0.5"),
    ),
    "center": ("center loss, beta 5e-4 (Wen et al. 2016)", ("loss.beta_center=5.0e-4",)),
    "autoaugment": (
        "AutoAugment, ImageNet policy (Cubuk et al. 2019)",
        ("data.auto_augment=autoaugment",),
    ),
    "randaugment": ("RandAugment (Cubuk et al. 2020)", ("data.auto_augment=randaugment",)),
    "trivialaugment": (
        "TrivialAugmentWide (Mueller & Hutter 2021)",
        ("data.auto_augment=trivialaugment",),
    ),
    "augmix": ("AugMix (Hendrycks et al. 2020)", ("data.auto_augment=augmix",)),
    "of-ramp-up": ("beta_OF ramps 0 -> 1 over step 2", ("loss.of_schedule=ramp_up",)),
    "of-fade": (
        "beta_OF fades 1 -> 0 (half cosine) over step 2",
        ("loss.of_schedule=cosine_down",),
    ),
    "ow-fade": (
        "beta_OW fades 1 -> 0 (half cosine) over step 2",
        ("loss.ow_schedule=cosine_down",),
    ),
    "no-erasing": (
        "random erasing off (Zhong et al. 2020; on by default)",
        ("data.erasing_p=0.0",),
    ),
    "no-label-smooth": (
        "cross-entropy without label smoothing (Szegedy et al. 2016; on by default)",
        ("loss.label_smooth=0.0",),
    ),
    "warmup": (
        "10-epoch linear learning-rate warm-up (Luo et al. 2019)",
        ("optim.warmup_epochs=10",),
    ),
}


def trick_overrides(names: list[str] | tuple[str, ...]) -> list[str]:
    """The ``--set`` strings of the named tricks, in order; an unknown name is a
    ``ValueError`` listing the known ones."""
    out: list[str] = []
    for name in names:
        if name not in TRICKS:
            raise ValueError(f"--trick: unknown trick {name!r}; known: {', '.join(sorted(TRICKS))}")
        out.extend(TRICKS[name][1])
    return out
