"""FeatureExtractor against a manual forward pass with the model config's test transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from abdnet.config import Config, DataConfig, model_config
from abdnet.data import build_test_transform
from abdnet.models import build_model_from_config
from abdnet.models.io import save_model
from abdnet.retrieval import FeatureExtractor, ImageReadError

H, W = 64, 32


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cfg = Config(
        model=model_config(
            "paper", backbone="resnet18", global_dim=16, attentive_dim=16, reduction_dim=16
        ),
        # a non-default mean/std: the extractor must take the transform from the checkpoint
        data=DataConfig(height=H, width=W, mean=(0.3, 0.5, 0.7), std=(0.3, 0.2, 0.1)),
    )
    torch.manual_seed(0)
    model = build_model_from_config(cfg.model, 4).eval()
    root = tmp_path_factory.mktemp("ext")
    ckpt = save_model(root / "ckpt", model, cfg)
    rng = np.random.default_rng(0)
    arrays = [
        rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        for h, w in [(80, 40), (64, 32), (50, 30), (100, 44), (70, 35)]
    ]
    paths = []
    for i, a in enumerate(arrays):
        p = root / f"img{i}.png"  # lossless, so the file decodes to exactly the array
        Image.fromarray(a).save(p)
        paths.append(str(p))
    return cfg, model, ckpt, arrays, paths


def _manual(model, cfg, arrays, flip=False, normalize=True):
    t = build_test_transform(cfg.data)
    x = torch.stack([t(Image.fromarray(a)) for a in arrays])  # (N, 3, H, W)
    with torch.no_grad():
        f = model(x).embedding
        if flip:
            f = (f + model(torch.flip(x, dims=[3])).embedding) / 2
    return F.normalize(f, dim=1) if normalize else f


@pytest.mark.parametrize("kind", ["paths", "pil", "numpy", "tensor"])
def test_inputs_equal_manual_forward(setup, kind):
    cfg, model, ckpt, arrays, paths = setup
    ext = FeatureExtractor(ckpt, device="cpu", batch_size=2)
    assert ext.config == cfg
    if kind == "paths":
        inputs = paths
    elif kind == "pil":
        inputs = [Image.fromarray(a) for a in arrays]
    elif kind == "numpy":
        inputs = arrays
    else:
        t = build_test_transform(cfg.data)
        inputs = torch.stack([t(Image.fromarray(a)) for a in arrays])
    out = ext(inputs)
    ref = _manual(model, cfg, arrays)
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    assert out.shape == (5, model.feature_dim)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5))


def test_normalize_off_gives_raw_embeddings(setup):
    cfg, model, ckpt, arrays, paths = setup
    out = FeatureExtractor(ckpt, device="cpu", normalize=False)(paths)
    ref = _manual(model, cfg, arrays, normalize=False)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(out.norm(dim=1), torch.ones(5))


@pytest.mark.parametrize("normalize", [True, False])
def test_flip_averages_raw_then_normalizes(setup, normalize):
    cfg, model, ckpt, arrays, paths = setup
    out = FeatureExtractor(ckpt, device="cpu", flip=True, normalize=normalize)(paths)
    ref = _manual(model, cfg, arrays, flip=True, normalize=normalize)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    # and it is not the same as averaging normalized features
    t = build_test_transform(cfg.data)
    x = torch.stack([t(Image.fromarray(a)) for a in arrays])
    with torch.no_grad():
        wrong = F.normalize(
            F.normalize(model(x).embedding, dim=1) + F.normalize(model(x.flip(3)).embedding, dim=1),
            dim=1,
        )
    if normalize:
        assert (out - wrong).abs().max() > 1e-6


def test_module_input_restores_training_mode(setup):
    cfg, model, _, arrays, _ = setup
    model.train()
    try:
        out = FeatureExtractor(model, device="cpu", config=cfg)(arrays)
        assert model.training
    finally:
        model.eval()
    torch.testing.assert_close(out, _manual(model, cfg, arrays), atol=1e-5, rtol=1e-4)


def test_missing_and_non_image_files_are_named(setup, tmp_path):
    _, _, ckpt, _, paths = setup
    ext = FeatureExtractor(ckpt, device="cpu")
    missing = tmp_path / "gone.jpg"
    with pytest.raises(ImageReadError, match="gone.jpg"):
        ext([paths[0], str(missing)])
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is not an image")
    with pytest.raises(ImageReadError, match="notes.jpg.*cannot read image"):
        ext([str(fake)])
    with pytest.raises(ImageReadError, match=r"\(H, W, 3\) uint8"):
        ext([np.zeros((8, 8), np.float32)])


def test_skip_bad_lists_skipped_and_keeps_the_rest(setup, tmp_path):
    cfg, model, ckpt, arrays, paths = setup
    fake = tmp_path / "broken.png"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)  # PNG signature, truncated body
    inputs = [paths[0], str(fake), paths[1], str(tmp_path / "gone.png"), paths[2]]
    res = FeatureExtractor(ckpt, device="cpu", batch_size=2).extract(inputs, skip_bad=True)
    assert res.kept == [0, 2, 4]
    assert [s for s, _ in res.skipped] == [str(fake), str(tmp_path / "gone.png")]
    ref = _manual(model, cfg, [arrays[0], arrays[1], arrays[2]])
    torch.testing.assert_close(res.features, ref, atol=1e-5, rtol=1e-4)


def test_bad_tensor_shape(setup):
    _, _, ckpt, _, _ = setup
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        FeatureExtractor(ckpt, device="cpu")(torch.zeros(2, 1, H, W))
