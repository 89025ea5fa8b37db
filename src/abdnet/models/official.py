"""The network of the authors' code (VITA-Group/ABD-Net, ``--arch resnet50``): ``arch="official"``.

Weight-compatible with their checkpoints: module names and shapes equal theirs
(``common_branch.backbone1`` ... ``branches.{0,1}``), 69,175,184 parameters with 751
classes, 3072-d embedding. What it computes (facts of their code; ``docs/paper-vs-official.md``
lists where it departs from the paper):

- trunk conv1..layer1 -> shallow CAM (their DANet CAM variant) -> layer2, layer3;
- two branches, each with a deep copy of layer4 (stride ``last_stride``):
  - ABD: reduction conv1x1(2048->1024, no bias)+BN+ReLU; the map is cut into 2 horizontal
    stripes; on each stripe three DANet heads (no attention / CAM / PAM) are summed, then
    ``sum_conv`` (Dropout2d(0.1) + conv1x1 with bias) and GAP -> 1024-d, one classifier per
    stripe;
  - global: GAP -> Linear(2048, 1024), BN1d, ReLU, Dropout(``dropout``) -> 1024-d + classifier.
- the embedding is the concatenation of the branch vectors, raw (no L2 norm).

Branch order: this module always has the ABD branch at ``branches.0`` and the global branch
at ``branches.1`` (the layout of the reference key list), so the embedding is
``[stripe 1, stripe 2, global]``. The authors' code orders branches by a per-process hash,
so their embedding may be ``[global, stripe 1, stripe 2]`` for a given checkpoint;
``load_official`` maps either order onto this layout. Euclidean distances are the same.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import pickle
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from abdnet.config import MODEL_PRESETS, ModelConfig
from abdnet.models.attention import CAM, PAM
from abdnet.models.backbones import build_trunk, check_state_dict_fits
from abdnet.models.layers import (
    TrunkParameterGroups,
    global_avg_pool,
    init_new_layers_,
    reduction_layer,
)
from abdnet.models.output import FeatureMaps, ModelOutput

__all__ = [
    "OfficialABDNet",
    "DANetHead",
    "OFFICIAL_NUM_STRIPES",
    "SHALLOW_OF_WEIGHT",
    "canonical_official_state_dict",
    "load_official",
]

logger = logging.getLogger(__name__)

OFFICIAL_NUM_STRIPES = 2  # their --abd-np default
SHALLOW_OF_WEIGHT = 0.01  # their O.F. weight for the shallow-CAM output ("intermediate")


class _ShallowCAM(nn.Module):
    def __init__(self, enabled: bool) -> None:
        super().__init__()
        self._cam_module = CAM("official") if enabled else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self._cam_module is None else self._cam_module(x)


class _CommonBranch(nn.Module):
    def __init__(self, stem: nn.Sequential, middle: nn.Sequential, shallow_cam: bool) -> None:
        super().__init__()
        self.backbone1 = stem  # conv1, bn1, relu, maxpool, layer1
        self.shallow_cam = _ShallowCAM(shallow_cam)
        self.backbone2 = middle  # layer2, layer3

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shallow = self.shallow_cam(self.backbone1(x))  # (B, C2, H/4, W/4)
        return self.backbone2(shallow), shallow


class _DeepBranch(nn.Module):
    def __init__(self, deep: nn.Module) -> None:
        super().__init__()
        self.backbone = deep  # a copy of layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


class DANetHead(nn.Module):
    """conv3x3(C->C/2)+BN+ReLU -> attention -> conv3x3(C/2->C/2)+BN+ReLU -> Dropout2d(0.1) ->
    conv1x1(C/2->out). Returns the head's output and the attention module's raw response."""

    def __init__(
        self, in_channels: int, out_channels: int, attention: str, pam_reduction: int = 8
    ) -> None:
        super().__init__()
        inter = in_channels // 2
        self.conv5c = nn.Sequential(
            nn.Conv2d(in_channels, inter, 3, padding=1, bias=False),
            nn.BatchNorm2d(inter),
            nn.ReLU(),
        )
        if attention == "before":
            self.attention_module: nn.Module = nn.Identity()
        elif attention == "cam":
            self.attention_module = CAM("official")
        elif attention == "pam":
            self.attention_module = PAM(inter, variant="official", qk_reduction=pam_reduction)
        else:
            raise ValueError(
                f"DANetHead: attention must be 'before', 'cam' or 'pam', got {attention!r}"
            )
        self.conv52 = nn.Sequential(
            nn.Conv2d(inter, inter, 3, padding=1, bias=False), nn.BatchNorm2d(inter), nn.ReLU()
        )
        self.conv7 = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(inter, out_channels, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended = self.attention_module(self.conv5c(x))  # (B, C/2, h, w)
        return self.conv7(self.conv52(attended)), attended  # (B, out, h, w), (B, C/2, h, w)


class _ABDBranch(nn.Module):
    def __init__(
        self, in_channels: int, dim: int, num_classes: int, cam: bool, pam: bool, pam_reduction: int
    ) -> None:
        super().__init__()
        self.reduction = nn.Sequential(
            nn.Conv2d(in_channels, dim, 1, bias=False), nn.BatchNorm2d(dim), nn.ReLU(inplace=True)
        )
        self.before_module = DANetHead(dim, dim, "before")
        self.cam_module = DANetHead(dim, dim, "cam") if cam else None
        self.pam_module = DANetHead(dim, dim, "pam", pam_reduction) if pam else None
        self.sum_conv = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(dim, dim, 1))
        self.classifiers = nn.ModuleList(
            [nn.Linear(dim, num_classes) for _ in range(OFFICIAL_NUM_STRIPES)]
        )

    def heads(self) -> list[tuple[str, nn.Module]]:
        named = [("before", self.before_module), ("cam", self.cam_module), ("pam", self.pam_module)]
        return [(n, m) for n, m in named if m is not None]

    def add_features(self, x: torch.Tensor, f: FeatureMaps) -> None:
        """Ta, the heads' outputs and ``sum_conv``'s per stripe, the attention responses."""
        x = self.reduction(x)  # (B, R, h, w)
        f.add("reduction", x)
        h = x.shape[2]
        if h % OFFICIAL_NUM_STRIPES:
            raise ValueError(
                f"official ABD branch: feature-map height {h} is not divisible by "
                f"{OFFICIAL_NUM_STRIPES} stripes; use an input height that is a multiple of 32 "
                "(e.g. 384)"
            )
        step = h // OFFICIAL_NUM_STRIPES
        outs: dict[str, list[torch.Tensor]] = {name: [] for name, _ in self.heads()}
        attended: dict[str, list[torch.Tensor]] = {name: [] for name, _ in self.heads()}
        sums: list[torch.Tensor] = []
        for p in range(OFFICIAL_NUM_STRIPES):
            stripe = x[:, :, p * step : (p + 1) * step, :]  # (B, R, h/2, w)
            total = None
            for name, head in self.heads():
                out, att = head(stripe)  # (B, R, h/2, w), (B, R/2, h/2, w)
                outs[name].append(out)
                attended[name].append(att)
                total = out if total is None else total + out
            sums.append(self.sum_conv(total))  # (B, R, h/2, w)
        for name, parts in outs.items():
            f.add(name, *parts)
            if name != "before":
                f.attention[name] = tuple(attended[name])
        f.add("sum", *sums)
        f.add("attentive", *sums)  # the maps the stripe vectors pool

    def vectors(self, f: FeatureMaps) -> list[torch.Tensor]:
        return [global_avg_pool(part) for part in f.maps["attentive"]]  # 2 x (B, R)


class _GlobalBranch(nn.Module):
    def __init__(self, in_channels: int, dim: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.fc = reduction_layer(in_channels, dim, dropout)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(global_avg_pool(x))  # (B, C5, h, w) -> (B, kg)


class OfficialABDNet(TrunkParameterGroups, nn.Module):
    """The authors' released network (see the module docstring), ``arch="official"``.

    Embedding ``(B, kg + 2·R)`` = 3072-d. Logits ``[stripe 1, stripe 2, global]``, triplet
    features the three branch vectors (their code applies the triplet loss to each). Feature
    maps: ``shallow`` (O.F. weight 0.01), ``reduction`` (Ta), ``before`` / ``cam`` / ``pam``
    (head outputs) and ``sum`` per stripe (O.F. weight 1/2 each: their code averages over
    stripes), ``attentive`` (= ``sum``, what the stripe vectors pool) and ``global``.
    ``cam`` / ``pam`` false drop that head; ``shallow_cam`` false drops the shallow CAM.
    Backbones other than resnet50 build the same layout (not weight-compatible). Built
    from a :class:`~abdnet.config.ModelConfig` (default: the ``official`` preset); the
    ``abd``-only fields (``svd_layer``, ``attentive_dim``, the head tricks) are checked by
    ``models.factory``.
    """

    def __init__(self, num_classes: int, config: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = MODEL_PRESETS["official"] if config is None else config
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive integer, got {num_classes!r}")
        self.num_classes = num_classes
        self.ow_scope = cfg.ow_scope
        self.has_shallow_cam, self.has_cam, self.has_pam = cfg.shallow_cam, cfg.cam, cfg.pam

        trunk = build_trunk(cfg.backbone, pretrained=cfg.pretrained, last_stride=cfg.last_stride)
        self.common_branch = _CommonBranch(trunk.stem, trunk.middle, cfg.shallow_cam)
        r, c5 = cfg.reduction_dim, trunk.deep_channels
        abd = _ABDBranch(c5, r, num_classes, cfg.cam, cfg.pam, cfg.pam_reduction)
        glob = _GlobalBranch(c5, cfg.global_dim, num_classes, cfg.dropout)
        init_new_layers_(abd)
        init_new_layers_(glob)
        self.branches = nn.ModuleList(
            [
                nn.Sequential(_DeepBranch(copy.deepcopy(trunk.deep)), abd),
                nn.Sequential(_DeepBranch(trunk.deep), glob),
            ]
        )
        self.feature_dim = OFFICIAL_NUM_STRIPES * r + cfg.global_dim

    @property
    def of_positions_available(self) -> tuple[str, ...]:
        """The O.F. positions this network has maps for."""
        return (
            ("shallow", "reduction", "before", "sum")
            + ("cam",) * self.has_cam
            + ("pam",) * self.has_pam
        )

    # -- parameter groups -------------------------------------------------------------
    def _abd_branch(self) -> tuple[_DeepBranch, _ABDBranch]:
        """``branches[0]`` (the authors' layout): its res_conv_5 copy and the ABD head."""
        deep, head = cast(nn.Sequential, self.branches[0])
        return cast(_DeepBranch, deep), cast(_ABDBranch, head)

    def _global_branch(self) -> tuple[_DeepBranch, _GlobalBranch]:
        """``branches[1]``: its res_conv_5 and the global head."""
        deep, head = cast(nn.Sequential, self.branches[1])
        return cast(_DeepBranch, deep), cast(_GlobalBranch, head)

    def backbone_modules(self) -> list[nn.Module]:
        """The torchvision trunk pieces (res_conv_1..4 and both res_conv_5)."""
        cb = self.common_branch
        return [cb.backbone1, cb.backbone2, self._abd_branch()[0], self._global_branch()[0]]

    def stem_conv(self) -> nn.Conv2d:
        return cast(nn.Conv2d, self.common_branch.backbone1[0])  # the 7x7 conv

    # -- forward ------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> FeatureMaps:
        f = FeatureMaps()
        m, shallow = self.common_branch(x)  # (B, C4, H/16, W/16), (B, C2, H/4, W/4)
        f.add("shallow", shallow, of_weight=SHALLOW_OF_WEIGHT)
        if self.has_shallow_cam:
            f.attention["shallow_cam"] = (shallow,)
        abd_deep, abd = self._abd_branch()
        glob_deep, _glob = self._global_branch()
        abd.add_features(abd_deep(m), f)
        f.add("global", glob_deep(m))  # (B, C5, h, w)
        return f

    def forward_head(self, f: FeatureMaps) -> ModelOutput:
        abd, glob = self._abd_branch()[1], self._global_branch()[1]
        stripe_vecs = abd.vectors(f)  # 2 x (B, R)
        g = glob(f.map("global"))  # (B, kg)
        emb = torch.cat([*stripe_vecs, g], dim=1)  # (B, 2R + kg)
        logits = [abd.classifiers[p](v) for p, v in enumerate(stripe_vecs)] + [glob.classifier(g)]
        return ModelOutput(
            embedding=emb, logits=logits, triplet_features=[*stripe_vecs, g], features=f
        )

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return self.forward_head(self.forward_features(x))


# -- loading the authors' checkpoints -------------------------------------------------------


def _branch_kind(state: dict[str, torch.Tensor], index: int) -> str | None:
    prefix = f"branches.{index}.1."
    if any(k.startswith(prefix + "reduction.") for k in state):
        return "abd"
    if any(k.startswith(prefix + "fc.") for k in state):
        return "global"
    return None


def canonical_official_state_dict(
    state: dict[str, Any], source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Strip ``module.``, drop the shallow CAM's alias ``_cam_module_abc``, and put the ABD
    branch at ``branches.0`` and the global branch at ``branches.1`` (found by content:
    the ABD branch has ``reduction`` keys, the global one ``fc`` keys)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ValueError(
                f"{source}: not a state dict of tensors (entry {key!r}: {type(value).__name__})"
            )
        while key.startswith("module."):
            key = key[len("module.") :]
        if ".shallow_cam._cam_module_abc." in key:  # --compatibility alias of _cam_module
            continue
        out[key] = value
    kinds = {i: _branch_kind(out, i) for i in (0, 1)}
    if sorted(k for k in kinds.values() if k) != ["abd", "global"]:
        raise ValueError(
            f"{source}: cannot identify the ABD and global branches (branches.0 looks like {kinds[0]!r}, "
            f"branches.1 like {kinds[1]!r}); expected one with 'reduction' keys and one with 'fc' keys"
        )
    if kinds[0] == "global":
        swapped: dict[str, torch.Tensor] = {}
        for key, value in out.items():
            for a, b in (("branches.0.", "branches.1."), ("branches.1.", "branches.0.")):
                if key.startswith(a):
                    key = b + key[len(a) :]
                    break
            swapped[key] = value
        out = swapped
    return out


def load_official(path: str | Path, num_classes: int | None = None) -> OfficialABDNet:
    """Load a checkpoint written by the authors' code into an ``official`` model, eval mode.

    Accepts ``{'state_dict': ..., ...}`` (their ``.pth.tar``) or a bare state dict, keys
    possibly prefixed ``module.``, branches in either order (see the module docstring on
    the embedding order). Read with ``torch.load(weights_only=True)``: a pickle holding
    anything but tensors and plain containers is refused. ``num_classes`` is inferred from
    the classifiers; if given, it must agree. Shallow CAM / CAM / PAM heads are switched on
    or off as the checkpoint has them. A checkpoint that does not fit raises ``ValueError``
    listing the missing, unexpected and mis-shaped keys.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"official checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{path}: refused: it cannot be loaded with weights_only=True (it holds Python objects "
            f"other than tensors and plain containers, and unpickling those can run code): {exc}"
        ) from exc
    except Exception as exc:
        raise ValueError(f"{path}: not a readable torch checkpoint: {exc}") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(
            f"{path}: expected a dict with 'state_dict' or a state dict, got {type(obj).__name__}"
        )
    state = canonical_official_state_dict(obj, str(path))

    cls_key = "branches.1.1.classifier.weight"
    if cls_key not in state:
        raise ValueError(f"{path}: missing key {cls_key!r}: cannot infer the number of classes")
    found = int(state[cls_key].shape[0])
    if num_classes is not None and num_classes != found:
        raise ValueError(
            f"{path}: num_classes={num_classes} but the checkpoint's classifiers have {found} classes"
        )
    shallow_cam = "common_branch.shallow_cam._cam_module.gamma" in state
    cam = any(k.startswith("branches.0.1.cam_module.") for k in state)
    pam = any(k.startswith("branches.0.1.pam_module.") for k in state)
    preset = MODEL_PRESETS["official"]
    model = OfficialABDNet(
        found, dataclasses.replace(preset, shallow_cam=shallow_cam, cam=cam, pam=pam)
    )

    check_state_dict_fits(model, state, f"{path}: does not fit the official ABD-Net (resnet50)")
    model.load_state_dict(state, strict=True)
    model.eval()
    logger.info("loaded official checkpoint %s (%d classes)", path, found)
    return model
