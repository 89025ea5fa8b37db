"""export/onnx.py: ONNX Runtime parity with PyTorch, metadata, refusal on mismatch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from abdnet.export import ExportParityError, OnnxEmbedder, export_onnx
from abdnet.export import onnx as onnx_mod
from abdnet.models.io import load_model

H, W = 64, 32


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    result = export_onnx(checkpoint, out, dynamic_batch=True)
    return out, result


def test_dynamic_batch_parity_1_and_5(checkpoint, exported):
    out, result = exported
    assert result.batch_sizes == (1, 5) and result.max_abs_diff <= result.tolerance
    model = load_model(checkpoint).model
    emb = OnnxEmbedder(out)
    gen = torch.Generator().manual_seed(123)
    for b in (1, 5):
        x = torch.randn(b, 3, H, W, generator=gen)
        with torch.no_grad():
            ref = model(x).embedding.numpy()
        got = emb(x)
        assert got.shape == ref.shape == (b, model.feature_dim)
        assert np.abs(got - ref).max() <= 1e-4


def test_metadata_carries_the_transform(checkpoint, exported):
    out, result = exported
    emb = OnnxEmbedder(out)
    cfg = load_model(checkpoint).config
    assert emb.config.data == cfg.data
    assert emb.config == cfg
    assert emb.flip is False
    assert emb.metadata["normalize"] == "false"
    assert (int(emb.metadata["input_height"]), int(emb.metadata["input_width"])) == (H, W)
    assert emb.feature_dim == result.feature_dim == 64


def test_flip_inside_graph_equals_mirrored_average(checkpoint, tmp_path):
    out = tmp_path / "flip.onnx"
    export_onnx(checkpoint, out, flip=True, batch_size=2)
    model = load_model(checkpoint).model
    emb = OnnxEmbedder(out)
    assert emb.flip and emb.fixed_batch == 2
    x = torch.randn(3, 3, H, W)  # 3 rows through a fixed batch of 2: chunked and padded
    with torch.no_grad():
        ref = ((model(x).embedding + model(x.flip(3)).embedding) / 2).numpy()
    assert np.abs(emb(x) - ref).max() <= 1e-4


def test_refuses_and_leaves_no_file_when_parity_fails(checkpoint, tmp_path, monkeypatch):
    real = onnx_mod._run_onnxruntime
    model = load_model(checkpoint).model
    with torch.no_grad():
        scale = max(1.0, float(model(torch.randn(4, 3, H, W)).embedding.abs().max()))

    def off_by_a_bit(path, x):
        out = real(path, x)
        out[0, 0] += 1e-2 * scale  # far above the bound atol * max(1, |embedding|)
        return out

    monkeypatch.setattr(onnx_mod, "_run_onnxruntime", off_by_a_bit)
    out = tmp_path / "bad.onnx"
    with pytest.raises(ExportParityError, match=r"bad.onnx refused.*max abs.*> tolerance"):
        export_onnx(checkpoint, out, atol=1e-4)
    assert list(tmp_path.iterdir()) == []  # (the unperturbed export passes: see the fixture)


def test_onnx_embedder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        OnnxEmbedder(tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match="junk.onnx"):
        OnnxEmbedder(junk)
