"""Where the figures read a network: the named maps of its :class:`FeatureMaps` ("taps").

A :class:`FeatureTap` names one map of ``model.forward_features`` (or one raw attention
response). A map cut into horizontal stripes (the official network's heads) is shown whole,
stripe after stripe on height. The default taps are the maps global average pooling turns
into the embedding's branch vectors (``attentive`` and ``global``); ``attention_taps`` are
the raw responses of Ta and the CAM / PAM modules.

Gradients: :func:`capture_taps` runs ``forward_features``, keeps the gradient of each tapped
map, runs ``forward_head`` and back-propagates one score per image (e.g. a logit for
Grad-CAM, a retrieval score for RAM). The tapped tensors are the ones the head computes
from, so their gradients are exactly ``d score / d map``. Batch images must not interact:
the model is used in eval mode (BN running statistics, no dropout).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from abdnet.models import FeatureMaps, ModelOutput

__all__ = [
    "FeatureTap",
    "TapCapture",
    "default_taps",
    "attention_taps",
    "map_tap",
    "capture_taps",
]


@dataclass(frozen=True)
class FeatureTap:
    label: str  # shown in figure titles
    name: str  # a map of FeatureMaps.maps, or of FeatureMaps.attention when ``attention``
    attention: bool = False

    def parts(self, features: FeatureMaps) -> tuple[Tensor, ...]:
        table = features.attention if self.attention else features.maps
        if self.name not in table:
            kind = "attention response" if self.attention else "feature map"
            raise ValueError(
                f"--layer: the network has no {kind} {self.name!r}; it has {sorted(table)}"
            )
        return table[self.name]


@dataclass
class TapCapture:
    maps: dict[str, Tensor]  # tap key -> (B, C, H, W), detached
    # tap key -> d(sum of scores)/d map, same shape (empty without a score)
    gradients: dict[str, Tensor]
    output: ModelOutput  # what the model returned
    scores: Tensor | None  # (B,) the back-propagated scores


def default_taps() -> dict[str, FeatureTap]:
    """The maps right before global average pooling, per branch (the first is the default)."""
    return {
        "attentive": FeatureTap("attentive branch map before GAP", "attentive"),
        "global": FeatureTap("global branch res_conv_5 map before GAP", "global"),
    }


def map_tap(name: str) -> FeatureTap:
    """A tap on any named map of the network (``--layer``)."""
    return FeatureTap(name, name)


def attention_taps(features: FeatureMaps) -> dict[str, FeatureTap]:
    """Raw outputs of the attentive branch: Ta and the CAM / PAM modules (when present)."""
    out: dict[str, FeatureTap] = {}
    if "reduction" in features.maps:
        out["Ta"] = FeatureTap("Ta", "reduction")
    for label, name in (("CAM", "cam"), ("PAM", "pam"), ("shallow CAM", "shallow_cam")):
        if name in features.attention:
            out[label] = FeatureTap(label, name, attention=True)
    return out


def capture_taps(
    model: nn.Module,
    images: Tensor,
    taps: dict[str, FeatureTap],
    score_fn: Callable[[ModelOutput], Tensor] | None = None,
) -> TapCapture:
    """One forward pass recording each tap's map; with ``score_fn(output) -> (B,)`` also a
    backward pass giving each map's gradient. Without ``score_fn`` nothing keeps a graph."""
    want_grad = score_fn is not None
    scores = None
    with torch.set_grad_enabled(want_grad):
        # The input requires grad so that a network whose weights are frozen records a graph.
        x = images.detach().clone().requires_grad_(want_grad)
        features = model.forward_features(x)
        tapped = {key: tap.parts(features) for key, tap in taps.items()}
        if want_grad:
            for parts in tapped.values():
                for t in parts:
                    if t.requires_grad:
                        t.retain_grad()
        output = model.forward_head(features)
        if want_grad:
            scores = score_fn(output)
            if scores.dim() != 1 or scores.shape[0] != images.shape[0]:
                raise ValueError(
                    f"score_fn must return one score per image (B,), got {tuple(scores.shape)}"
                )
            model.zero_grad(set_to_none=True)
            scores.sum().backward()
    maps = {key: torch.cat([t.detach() for t in parts], dim=2) for key, parts in tapped.items()}
    grads: dict[str, Tensor] = {}
    if want_grad:
        for key, parts in tapped.items():
            g = [t.grad if t.grad is not None else torch.zeros_like(t) for t in parts]
            grads[key] = torch.cat([t.detach() for t in g], dim=2)
    return TapCapture(
        maps=maps,
        gradients=grads,
        output=output,
        scores=None if scores is None else scores.detach(),
    )
