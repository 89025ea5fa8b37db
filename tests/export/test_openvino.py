"""export/openvino.py: OpenVINO runs the exported graph like PyTorch does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from abdnet.export import OnnxEmbedder, OpenVinoEmbedder, export_onnx
from abdnet.models.io import load_model
from abdnet.retrieval import FeatureExtractor

pytest.importorskip("openvino")
pytestmark = pytest.mark.openvino

H, W = 64, 32


def _reference(checkpoint, x):
    with torch.no_grad():
        return load_model(checkpoint).model(x).embedding.double()


def test_fp32_from_onnx_file_and_from_checkpoint(checkpoint, tmp_path):
    onnx_path = tmp_path / "m.onnx"
    export_onnx(checkpoint, onnx_path, dynamic_batch=True)
    x = torch.randn(5, 3, H, W, generator=torch.Generator().manual_seed(1))
    ref = _reference(checkpoint, x)
    scale = float(ref.abs().max())
    for emb in (OpenVinoEmbedder(onnx_path), OpenVinoEmbedder(str(checkpoint))):
        assert emb.config == load_model(checkpoint).config and emb.feature_dim == 64
        got = torch.from_numpy(emb(x)).double()
        assert got.shape == ref.shape
        assert (got - ref).abs().max() <= 1e-4 * max(1.0, scale)
    assert OpenVinoEmbedder(onnx_path)(x[:1]).shape == (1, 64)  # any batch size


def test_bf16_hint_stays_close_and_plugs_into_feature_extractor(checkpoint, tmp_path):
    onnx_path = tmp_path / "m.onnx"
    export_onnx(checkpoint, onnx_path, dynamic_batch=True)
    capabilities = OpenVinoEmbedder(onnx_path).core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" not in capabilities:
        with pytest.raises(ValueError, match="no native bf16"):
            OpenVinoEmbedder(onnx_path, precision="bf16")
        return
    x = torch.randn(4, 3, H, W, generator=torch.Generator().manual_seed(2))
    emb = OpenVinoEmbedder(onnx_path, precision="bf16", threads=1)
    got = FeatureExtractor(emb, batch_size=3)(x)  # L2-normalized, in chunks of 3
    ref = FeatureExtractor(OnnxEmbedder(onnx_path), batch_size=4)(x)
    cos = (got * ref).sum(dim=1)
    assert cos.min() > 0.995, cos


def test_errors(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="precision"):
        OpenVinoEmbedder(checkpoint, precision="int4")
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        OpenVinoEmbedder(tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match="junk.onnx"):
        OpenVinoEmbedder(junk)
    emb = OpenVinoEmbedder(str(checkpoint))
    with pytest.raises(ValueError, match=r"input of shape \(2, 3, 32, 32\)"):
        emb(np.zeros((2, 3, 32, 32), np.float32))
