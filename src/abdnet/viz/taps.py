"""Where the figures read a network: its final feature maps, the ones global average pooling
turns into the embedding ("taps"), and the raw attention responses.

A ``FeatureTap`` names the modules whose outputs form one map. Several modules are joined
on channels (ABD-Net's attentive branch pools the concatenation [Ta, CAM(Ta), PAM(Ta)]);
a module called several times in one forward pass (the official network's per-stripe
heads) has its outputs joined on height, stripe after stripe, which rebuilds the full map.

Gradients: when the map feeds global average pooling only, ``dy/dX`` is uniform over
positions and equals ``(1/N) dy/dv`` with ``v = GAP(X)``. For a concatenated map the
gradient at each part's own output would also contain the paths through the other parts
(Ta feeds CAM and PAM), so such a tap names ``pooled_by``, the module that takes ``v`` as
its input, and Grad-CAM's weights are read from ``v``'s gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from abdnet.viz.gradcam import backward_scores

__all__ = [
    "FeatureTap",
    "TapCapture",
    "default_taps",
    "attention_taps",
    "capture_taps",
    "classifier_mode",
]


@dataclass(frozen=True)
class FeatureTap:
    label: str  # shown in figure titles
    modules: tuple[str, ...]  # names from model.named_modules(); outputs joined on channels
    pooled_by: str | None = None  # module whose input is GAP of the joined map (see module doc)


@dataclass
class TapCapture:
    maps: dict[str, Tensor]  # tap name -> (B, C, H, W), detached
    # tap name -> d(sum of scores)/d map, same shape (empty without a score)
    gradients: dict[str, Tensor]
    output: object  # what the model returned (detached not guaranteed)
    scores: Tensor | None


def default_taps(model: nn.Module) -> dict[str, FeatureTap]:
    """The maps right before global average pooling, per branch (the first is the default)."""
    names = {n for n, _ in model.named_modules()}
    if {"global_deep", "reduction", "attentive_reduction"} <= names:  # arch "abd"
        parts = tuple(n for n in ("reduction", "cam", "pam") if n in names)
        shown = ", ".join({"reduction": "Ta", "cam": "CAM(Ta)", "pam": "PAM(Ta)"}[n] for n in parts)
        return {
            "attentive": FeatureTap(
                f"attentive branch [{shown}] before GAP", parts, "attentive_reduction"
            ),
            "global": FeatureTap("global branch res_conv_5 before GAP", ("global_deep",)),
        }
    if "branches.0.1.sum_conv" in names:  # arch "official": find which branch is which
        abd = "branches.0" if "branches.0.1.reduction" in names else "branches.1"
        glob = "branches.1" if abd == "branches.0" else "branches.0"
        return {
            "attentive": FeatureTap(
                "ABD branch sum_conv (2 stripes) before GAP", (f"{abd}.1.sum_conv",)
            ),
            "global": FeatureTap("global branch res_conv_5 before GAP", (f"{glob}.0",)),
        }
    raise ValueError(
        f"{type(model).__name__}: no known feature maps; name a module with --layer (one of the "
        f"modules with 4-D outputs, e.g. {sorted(names)[-3:]})"
    )


def attention_taps(model: nn.Module) -> dict[str, FeatureTap]:
    """Raw outputs of the attentive branch: Ta and the CAM / PAM modules (when present)."""
    names = {n for n, _ in model.named_modules()}
    out: dict[str, FeatureTap] = {}
    if "reduction" in names and "attentive_reduction" in names:  # arch "abd"
        candidates = {"Ta": "reduction", "CAM": "cam", "PAM": "pam", "shallow CAM": "shallow_cam"}
    else:
        abd = "branches.0" if "branches.0.1.reduction" in names else "branches.1"
        candidates = {
            "Ta": f"{abd}.1.reduction",
            "CAM": f"{abd}.1.cam_module.attention_module",
            "PAM": f"{abd}.1.pam_module.attention_module",
            "shallow CAM": "common_branch.shallow_cam",
        }
    for label, name in candidates.items():
        if name in names and not isinstance(dict(model.named_modules())[name], nn.Identity):
            out[label] = FeatureTap(label, (name,))
    return out


class classifier_mode:
    """Context: the model's train-mode forward (so it returns logits) with every other layer
    behaving as in eval mode (BN running statistics, no dropout). Restores the flags."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.flags: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> nn.Module:
        self.flags = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        self.model.training = True  # only the top-level switch: logits are returned
        return self.model

    def __exit__(self, *exc) -> None:
        for m, flag in self.flags:
            m.training = flag


def capture_taps(
    model: nn.Module,
    images: Tensor,
    taps: dict[str, FeatureTap],
    score_fn: Callable[[object], Tensor] | None = None,
) -> TapCapture:
    """One forward pass recording each tap's map; with ``score_fn(output) -> (B,)`` also a
    backward pass giving each map's gradient (see the module doc). Without ``score_fn``
    nothing keeps a graph."""
    modules = dict(model.named_modules())
    for tap in taps.values():
        for n in tap.modules + ((tap.pooled_by,) if tap.pooled_by else ()):
            if n not in modules:
                raise ValueError(f"--layer: the model has no module named {n!r}")
    want_grad = score_fn is not None
    calls: dict[str, list[Tensor]] = {}
    pooled: dict[str, Tensor] = {}
    handles = []

    def out_hook(name: str):
        def hook(_m, _inp, out):
            if isinstance(out, (tuple, list)):
                out = out[0]
            if not isinstance(out, Tensor) or out.dim() != 4:
                raise ValueError(f"module {name!r} must output a (B, C, H, W) tensor for a figure")
            if want_grad and out.requires_grad:
                out.retain_grad()
            calls.setdefault(name, []).append(out)

        return hook

    def pre_hook(name: str):
        def hook(_m, inp):
            v = inp[0]
            if want_grad and v.requires_grad:
                v.retain_grad()
            pooled[name] = v

        return hook

    needed = {n for tap in taps.values() for n in tap.modules}
    for n in needed:
        handles.append(modules[n].register_forward_hook(out_hook(n)))
    for tap in taps.values():
        if tap.pooled_by and tap.pooled_by not in pooled:
            handles.append(
                modules[tap.pooled_by].register_forward_pre_hook(pre_hook(tap.pooled_by))
            )
    scores = None
    try:
        if want_grad:
            output, scores = backward_scores(model, images, score_fn)
        else:
            with torch.no_grad():
                output = model(images)
    finally:
        for h in handles:
            h.remove()

    maps: dict[str, Tensor] = {}
    grads: dict[str, Tensor] = {}
    for key, tap in taps.items():
        missing = [n for n in tap.modules if n not in calls]
        if missing:
            raise ValueError(f"tap {key!r}: modules {missing} did not run in the forward pass")
        parts = [
            torch.cat([t.detach() for t in calls[n]], dim=2) for n in tap.modules
        ]  # stripes on H
        maps[key] = torch.cat(parts, dim=1)  # (B, C, H, W)
        if not want_grad:
            continue
        if tap.pooled_by:
            v = pooled[tap.pooled_by]
            if v.grad is None or v.shape[1] != maps[key].shape[1]:
                raise ValueError(
                    f"tap {key!r}: the input of {tap.pooled_by!r} ({tuple(v.shape)}) is not the pooled map "
                    f"({tuple(maps[key].shape)})"
                )
            n_pos = maps[key].shape[2] * maps[key].shape[3]
            grads[key] = (v.grad.detach() / n_pos)[:, :, None, None].expand_as(maps[key]).clone()
        else:
            g_parts = []
            for n in tap.modules:
                g = [t.grad if t.grad is not None else torch.zeros_like(t) for t in calls[n]]
                g_parts.append(torch.cat([x.detach() for x in g], dim=2))
            grads[key] = torch.cat(g_parts, dim=1)
    return TapCapture(
        maps=maps,
        gradients=grads,
        output=output,
        scores=None if scores is None else scores.detach(),
    )
