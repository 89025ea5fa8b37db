"""ABD-Net as the paper describes it (sections 3 and 4.1): the ``abd`` architecture."""

from __future__ import annotations

import copy
from typing import cast

import torch
from torch import nn

from abdnet.config import ModelConfig
from abdnet.models.attention import CAM, PAM
from abdnet.models.backbones import build_trunk
from abdnet.models.heads import BNNeck, make_classifier, make_pool
from abdnet.models.layers import TrunkParameterGroups, init_new_layers_, reduction_layer
from abdnet.models.output import FeatureMaps, ModelOutput
from abdnet.models.svd_layer import EigenLayer

__all__ = ["ABDNet"]


class ABDNet(TrunkParameterGroups, nn.Module):
    """ABD-Net, sections 3 and 4.1 of the paper (presets ``paper`` and ``baseline``), built
    from a :class:`~abdnet.config.ModelConfig` (default: the ``paper`` preset).

    trunk res_conv_1..2 -> shallow CAM -> res_conv_3..4 -> two branches, each with its own
    copy of res_conv_5 (stride ``last_stride``, paper 1):

    - global: GAP -> reduction layer (Linear C5->kg, BN, ReLU, dropout) -> kg-d vector.
    - attentive: Ta = conv1x1(C5->reduction_dim) + BN + ReLU; CAM(Ta) and PAM(Ta); concat
      [Ta, CAM(Ta), PAM(Ta)] on channels -> GAP -> reduction layer (Linear
      3·reduction_dim->ka, BN, ReLU, dropout). The paper does not say how this concatenation
      becomes a ka-d vector. We pool first and then use a reduction layer: a Linear after GAP
      equals a 1x1 conv before GAP (both are linear, GAP commutes with them), it keeps all
      three components instead of summing them, and it mirrors the global branch (the
      footnote's "reduction layer"). Disabled modules drop out of the concatenation.

    Embedding = concat(global, attentive), kg + ka = 2048-d for the paper. Each branch
    vector has its own classifier; the triplet loss uses the embedding. ``svd_layer=True``
    (Table 1 g): a bias-free ``EigenLayer`` maps the embedding to the returned embedding,
    followed by one classifier (SVDNet's layout; see ``svd_layer.py``).

    Feature maps (``forward_features``): ``shallow``, ``reduction`` (Ta), ``cam``, ``pam``,
    ``attentive`` (the concatenation before GAP) and ``global`` (res_conv_5 before GAP).
    CAM and PAM are the paper's variants (softmax over the energy, eq. 1; PAM projections
    conv+BN+ReLU with ``channels // pam_reduction`` query/key channels, 1 = eq. 3). New
    layers use the official initialisation (``init_new_layers_``).

    Re-ID tricks (``models/heads.py``, all off by default): ``pooling: gem`` replaces both
    GAPs by GeM; ``bnneck`` puts a BNNeck after each classified vector (the embedding and the
    logits then come after it, the triplet feature before); ``id_head: cosine`` scaled-cosine
    classifiers.
    """

    def __init__(self, num_classes: int, config: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = ModelConfig() if config is None else config
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive integer, got {num_classes!r}")
        self.num_classes = num_classes
        self.ow_scope = cfg.ow_scope
        self.svd_layer = cfg.svd_layer
        self.bnneck = cfg.bnneck

        trunk = build_trunk(cfg.backbone, pretrained=cfg.pretrained, last_stride=cfg.last_stride)
        self.stem = trunk.stem  # res_conv_1..2
        self.shallow_cam = CAM("paper") if cfg.shallow_cam else None
        self.middle = trunk.middle  # res_conv_3..4
        self.global_deep = trunk.deep  # res_conv_5, global branch
        self.attentive_deep = copy.deepcopy(trunk.deep)  # res_conv_5, attentive branch

        c5, r = trunk.deep_channels, cfg.reduction_dim
        self.global_pool, self.attentive_pool = make_pool(cfg), make_pool(cfg)
        self.global_reduction = reduction_layer(c5, cfg.global_dim, cfg.dropout)
        self.reduction = nn.Sequential(
            nn.Conv2d(c5, r, kernel_size=1, bias=False), nn.BatchNorm2d(r), nn.ReLU(inplace=True)
        )
        self.cam = CAM("paper") if cfg.cam else None
        self.pam = PAM(r, variant="paper", qk_reduction=cfg.pam_reduction) if cfg.pam else None
        n_parts = 1 + int(cfg.cam) + int(cfg.pam)
        self.attentive_reduction = reduction_layer(n_parts * r, cfg.attentive_dim, cfg.dropout)

        self.feature_dim = cfg.global_dim + cfg.attentive_dim
        # the vectors the classifiers (and BNNecks) sit on: the embedding after the
        # EigenLayer (svd_layer), else the two branch vectors
        dims = [self.feature_dim] if cfg.svd_layer else [cfg.global_dim, cfg.attentive_dim]
        if cfg.svd_layer:
            self.eigenlayer = EigenLayer(self.feature_dim)
            self.classifier = make_classifier(cfg, self.feature_dim, num_classes)
        else:
            self.global_classifier = make_classifier(cfg, cfg.global_dim, num_classes)
            self.attentive_classifier = make_classifier(cfg, cfg.attentive_dim, num_classes)
        self.necks = nn.ModuleList([BNNeck(d) for d in dims]) if cfg.bnneck else None

        for m in self._new_modules():
            init_new_layers_(m)
        if cfg.svd_layer:
            nn.init.orthogonal_(self.eigenlayer.weight)  # starts as a rotation: distances kept

    @property
    def of_positions_available(self) -> tuple[str, ...]:
        """The O.F. positions this network has maps for."""
        return (
            ("shallow", "reduction")
            + ("cam",) * (self.cam is not None)
            + ("pam",) * (self.pam is not None)
        )

    # -- parameter groups -------------------------------------------------------------
    def backbone_modules(self) -> list[nn.Module]:
        """The torchvision trunk pieces (res_conv_1..4 and both res_conv_5)."""
        return [self.stem, self.middle, self.global_deep, self.attentive_deep]

    def _new_modules(self) -> list[nn.Module]:
        backbone = {id(m) for m in self.backbone_modules()}
        return [m for m in self.children() if id(m) not in backbone]

    def stem_conv(self) -> nn.Conv2d:
        return cast(nn.Conv2d, self.stem[0])  # res_conv_1's conv (conv1 / conv0)

    # -- forward ------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> FeatureMaps:
        f = FeatureMaps()
        s = self.stem(x)  # (B, C2, H/4, W/4)
        if self.shallow_cam is not None:
            s = self.shallow_cam(s)
            f.attention["shallow_cam"] = (s,)
        f.add("shallow", s)
        m = self.middle(s)  # (B, C4, H/16, W/16)
        f.add("global", self.global_deep(m))  # (B, C5, h, w)

        ta = self.reduction(self.attentive_deep(m))  # (B, R, h, w)
        f.add("reduction", ta)
        parts = [ta]
        for name, module in (("cam", self.cam), ("pam", self.pam)):
            if module is not None:
                out = module(ta)  # (B, R, h, w)
                f.add(name, out)
                f.attention[name] = (out,)
                parts.append(out)
        f.add("attentive", torch.cat(parts, dim=1))  # (B, n_parts * R, h, w)
        return f

    def forward_head(self, f: FeatureMaps) -> ModelOutput:
        g = self.global_reduction(self.global_pool(f.map("global")))  # (B, kg)
        a = self.attentive_reduction(self.attentive_pool(f.map("attentive")))  # (B, ka)
        emb = torch.cat([g, a], dim=1)  # (B, kg + ka)
        if self.svd_layer:
            emb = self.eigenlayer(emb)  # (B, D)
            vectors, classifiers = [emb], [self.classifier]
        else:
            vectors, classifiers = [g, a], [self.global_classifier, self.attentive_classifier]
        if self.necks is not None:  # BNNeck: metric losses before, ID loss and retrieval after
            vectors = [neck(v) for neck, v in zip(self.necks, vectors)]
        logits = [c(v) for c, v in zip(classifiers, vectors)]
        out = vectors[0] if len(vectors) == 1 else torch.cat(vectors, dim=1)
        return ModelOutput(embedding=out, logits=logits, triplet_features=[emb], features=f)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return self.forward_head(self.forward_features(x))
