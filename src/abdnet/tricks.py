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
