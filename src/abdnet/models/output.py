"""What every abdnet network returns: ``forward_features`` gives :class:`FeatureMaps`, the
head turns them into a :class:`ModelOutput` — the same type in training and evaluation.

Losses (O.F.), figures (attention maps, Grad-CAM, correlation) and exporters read tensors
from these two structures by their names below; nobody looks a tensor up by module name.
This file imports nothing else of abdnet.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["FeatureMaps", "ModelOutput", "MAP_NAMES"]

# The names a network may give its maps (the architectures document which they have).
MAP_NAMES = (
    "shallow",  # res_conv_2 output after the shallow CAM (B, C2, H/4, W/4)
    "reduction",  # Ta: the attentive branch's reduced res_conv_5 map
    "cam",  # CAM(Ta) (official: the CAM head's output per stripe)
    "pam",  # PAM(Ta) (official: the PAM head's output per stripe)
    "before",  # official: the attention-free head's output per stripe
    "sum",  # official: sum_conv output per stripe
    "attentive",  # the attentive map global average pooling turns into its vector(s)
    "global",  # the global branch's res_conv_5 map before pooling
)


@dataclass
class FeatureMaps:
    """Named feature maps of one forward pass.

    ``maps[name]`` is a tuple of ``(B, C, h, w)`` parts: one part, or one per horizontal
    stripe from top to bottom (the official network works on stripes). ``of_weights[name]``
    is the weight of a position in O.F. (default 1; split evenly over its stripes).
    ``attention[name]`` holds raw attention-module responses (``shallow_cam``, ``cam``,
    ``pam``) for the figures; for the paper's network they are the maps themselves.
    """

    maps: dict[str, tuple[Tensor, ...]] = field(default_factory=dict)
    attention: dict[str, tuple[Tensor, ...]] = field(default_factory=dict)
    of_weights: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, *parts: Tensor, of_weight: float = 1.0) -> None:
        if name not in MAP_NAMES:
            raise ValueError(f"feature map name {name!r} is not one of {MAP_NAMES}")
        self.maps[name] = tuple(parts)
        self.of_weights[name] = of_weight

    def map(self, name: str) -> Tensor:
        """The whole map ``(B, C, H, W)``: the stripes joined on height."""
        parts = self._get(self.maps, name, "map")
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)

    def attention_map(self, name: str) -> Tensor:
        """A raw attention response ``(B, C, H, W)``, stripes joined on height."""
        parts = self._get(self.attention, name, "attention map")
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)

    def of_terms(self, positions: Iterable[str]) -> list[tuple[str, Tensor, float]]:
        """``(name, part, weight)`` for O.F. at ``positions``; a position's weight is split
        evenly over its stripes (the authors' code averages over stripes)."""
        out: list[tuple[str, Tensor, float]] = []
        for name in positions:
            parts = self._get(self.maps, name, "O.F. position")
            weight = self.of_weights.get(name, 1.0) / len(parts)
            out.extend((name, part, weight) for part in parts)
        return out

    @staticmethod
    def _get(table: dict[str, tuple[Tensor, ...]], name: str, what: str) -> tuple[Tensor, ...]:
        if name not in table:
            raise KeyError(f"{what} {name!r}: this network has {sorted(table)}")
        return table[name]


@dataclass
class ModelOutput:
    """One forward pass of an abdnet network, in any mode.

    - ``embedding``: ``(B, D)``, the raw (not L2-normalized) re-ID embedding;
    - ``logits``: one ``(B, num_classes)`` tensor per classifier;
    - ``triplet_features``: the ``(B, d)`` features the batch-hard triplet loss uses;
    - ``features``: the :class:`FeatureMaps` the head was computed from.
    """

    embedding: Tensor
    logits: Sequence[Tensor] = ()
    triplet_features: Sequence[Tensor] = ()
    features: FeatureMaps = field(default_factory=FeatureMaps)
