"""The export tests' model: a ResNet-18 ABD-Net (paper preset, 32-d parts) at 64x32 with
non-default mean/std and non-zero attention gammas, so that the preprocessing metadata and the
CAM/PAM paths are part of every parity check."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from abdnet.config import Config, DataConfig, model_config
from abdnet.models import build_model_from_config
from abdnet.models.io import save_model

H, W = 64, 32


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    cfg = Config(
        model=model_config(
            "paper", backbone="resnet18", global_dim=32, attentive_dim=32, reduction_dim=32
        ),
        data=DataConfig(height=H, width=W, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)),
    )
    torch.manual_seed(0)
    model = build_model_from_config(cfg.model, 6).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.5)
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_model(path, model, cfg)
    return path
