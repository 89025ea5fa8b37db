"""abdnet.models: ABD-Net architectures (paper and official), attention, backbones, loaders."""

from abdnet.models.abdnet import OW_SCOPES, ABDNet, build_model, build_model_from_config
from abdnet.models.attention import CAM, PAM
from abdnet.models.backbones import BACKBONES, Trunk, build_trunk
from abdnet.models.io import LoadedModel, load_model, resolve_checkpoint, save_model
from abdnet.models.official import OfficialABDNet, canonical_official_state_dict, load_official
from abdnet.models.output import ModelOutput
from abdnet.models.svd_layer import EigenLayer, svd_restraint_

__all__ = [
    "ABDNet",
    "OfficialABDNet",
    "ModelOutput",
    "CAM",
    "PAM",
    "EigenLayer",
    "svd_restraint_",
    "Trunk",
    "BACKBONES",
    "OW_SCOPES",
    "build_trunk",
    "build_model",
    "build_model_from_config",
    "load_official",
    "LoadedModel",
    "save_model",
    "load_model",
    "resolve_checkpoint",
    "canonical_official_state_dict",
]
