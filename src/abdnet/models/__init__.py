"""abdnet.models: ABD-Net architectures (paper and official), attention, backbones, loaders."""

from abdnet.models.abdnet import ABDNet
from abdnet.models.attention import CAM, PAM
from abdnet.models.backbones import BACKBONES, Trunk, build_trunk
from abdnet.models.factory import build_model, build_model_from_config, official_model_config
from abdnet.models.io import (
    LoadedModel,
    load_model,
    resolve_checkpoint,
    save_model,
    weights_digest,
)
from abdnet.models.layers import weight_decay_groups
from abdnet.models.official import OfficialABDNet, canonical_official_state_dict, load_official
from abdnet.models.output import FeatureMaps, ModelOutput
from abdnet.models.svd_layer import EigenLayer, svd_restraint_

__all__ = [
    "ABDNet",
    "OfficialABDNet",
    "FeatureMaps",
    "ModelOutput",
    "CAM",
    "PAM",
    "EigenLayer",
    "svd_restraint_",
    "Trunk",
    "BACKBONES",
    "build_trunk",
    "build_model",
    "build_model_from_config",
    "official_model_config",
    "load_official",
    "LoadedModel",
    "save_model",
    "load_model",
    "resolve_checkpoint",
    "weights_digest",
    "canonical_official_state_dict",
    "weight_decay_groups",
]
