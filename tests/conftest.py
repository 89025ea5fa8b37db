"""Fixtures shared by the gallery and service tests: a tiny model file and synthetic crops."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from abdnet.config import Config, DataConfig, SyntheticConfig, model_config
from abdnet.data import write_synthetic
from abdnet.models import build_model_from_config
from abdnet.models.io import save_model


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: on shared, busy cores two threads spinning for tiny tensors are
    many times slower than one (use with ``pytest.mark.usefixtures``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained ResNet-18 ABD-Net with 32-d embeddings at 64x32 input (random weights)."""
    root = tmp_path_factory.mktemp("tiny_model")
    cfg = Config(
        model=model_config(
            "paper", backbone="resnet18", global_dim=16, attentive_dim=16, reduction_dim=16
        ),
        data=DataConfig(height=64, width=32),
    )
    torch.manual_seed(0)
    return save_model(root / "model.safetensors", build_model_from_config(cfg.model, 4), cfg)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A synthetic set in the Market-1501 layout: 8 test identities over 2 cameras."""
    root = tmp_path_factory.mktemp("synth") / "syn"
    write_synthetic(root, SyntheticConfig(ids=16, cams=2, per_id=4, height=64, width=32))
    return root
