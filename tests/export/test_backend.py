"""export/backend.py: explicit backends match fp32 PyTorch; "auto" measures once, caches the
choice per machine and model, and survives a damaged cache."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from abdnet.export import COSINE_MIN
from abdnet.retrieval import FeatureExtractor

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.openvino]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ABDNET_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "backends"


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(3)
    return torch.randn(6, 3, 64, 32, generator=gen)  # transformed (B, 3, H, W) inputs


@pytest.fixture(scope="module")
def reference(tiny_checkpoint, batch):
    """fp32 PyTorch features, computed by hand: eval mode, no autocast, L2-normalized."""
    from abdnet.models import load_model

    model = load_model(tiny_checkpoint).model.eval()
    with torch.no_grad():
        return torch.nn.functional.normalize(model(batch).embedding.double(), dim=1)


def _min_cosine(features: torch.Tensor, reference: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(features.double(), reference, dim=1).min())


def _cached_record(cache) -> tuple[dict, object]:
    files = sorted(cache.glob("*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text()), files[0]


@pytest.mark.parametrize("backend", ["torch", "onnx", "openvino"])
def test_explicit_backend_matches_fp32_pytorch(tiny_checkpoint, cache, batch, reference, backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    fx = FeatureExtractor(tiny_checkpoint, device="cpu", backend=backend)
    assert fx.backend_name.split()[0] == {"onnx": "onnxruntime"}.get(backend, backend)
    assert _min_cosine(fx(batch), reference) >= COSINE_MIN
    assert not list(cache.glob("*.json"))  # an explicit backend measures nothing
    if backend != "torch":  # the exported graph is cached and reused
        (onnx_file,) = cache.glob("*.onnx")
        before = onnx_file.stat().st_mtime_ns
        FeatureExtractor(tiny_checkpoint, device="cpu", backend=backend)
        assert onnx_file.stat().st_mtime_ns == before


def test_auto_picks_an_exact_candidate_and_caches_it(tiny_checkpoint, cache, batch, reference):
    fx = FeatureExtractor(tiny_checkpoint, device="cpu", backend="auto", batch_size=4)
    record, path = _cached_record(cache)
    table = {m["name"]: m for m in record["table"]}
    assert record["chosen"] == fx.backend_name
    chosen = table[fx.backend_name]
    assert chosen["status"] == "ok" and chosen["cosine"] >= COSINE_MIN
    assert table["torch fp32"]["status"] == "ok"
    measured = [m for m in table.values() if m["status"] == "ok"]
    assert chosen["images_per_s"] == max(m["images_per_s"] for m in measured)
    assert _min_cosine(fx(batch), reference) >= COSINE_MIN
    assert record["key"]["input"] == [64, 32] and record["key"]["batch"] == 4

    # the second extractor reads the cache: the file is not rewritten
    stamp = path.stat().st_mtime_ns
    again = FeatureExtractor(tiny_checkpoint, device="cpu", backend="auto", batch_size=4)
    assert again.backend_name == fx.backend_name
    assert path.stat().st_mtime_ns == stamp
    assert json.loads(path.read_text()) == record

    # remeasure=True measures again and rewrites it
    FeatureExtractor(tiny_checkpoint, device="cpu", backend="auto", batch_size=4, remeasure=True)
    assert path.stat().st_mtime_ns != stamp


def test_auto_remeasures_over_a_damaged_cache_file(tiny_checkpoint, cache, caplog):
    FeatureExtractor(tiny_checkpoint, device="cpu", backend="auto", batch_size=2)
    _, path = _cached_record(cache)
    path.write_text('{"key": {"format": 1}, "chos')  # cut short
    fx = FeatureExtractor(tiny_checkpoint, device="cpu", backend="auto", batch_size=2)
    assert "unreadable" in caplog.text and str(path) in caplog.text
    record, _ = _cached_record(cache)
    assert record["chosen"] == fx.backend_name


def test_auto_skips_a_missing_runtime_with_its_reason(tiny_checkpoint, cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` fails
    fx = FeatureExtractor(tiny_checkpoint, device="cpu", backend="auto", batch_size=2)
    record, _ = _cached_record(cache)
    table = {m["name"]: m for m in record["table"]}
    for name in ("openvino fp32", "openvino bf16"):
        assert table[name]["status"].startswith("skipped: ")
        assert "openvino" in table[name]["status"]
        assert table[name]["images_per_s"] is None
    assert not fx.backend_name.startswith("openvino")


def test_bad_backend_name_and_combinations_are_refused(tiny_checkpoint, cache):
    with pytest.raises(ValueError, match=r"backend: expected one of .*'auto'.* got 'fast'"):
        FeatureExtractor(tiny_checkpoint, device="cpu", backend="fast")
    with pytest.raises(ValueError, match="precision 'bf16' with backend 'auto'"):
        FeatureExtractor(tiny_checkpoint, device="cpu", backend="auto", precision="bf16")
    with pytest.raises(ValueError, match="backend 'onnx'.*runs as given"):
        FeatureExtractor(lambda x: x.mean(dim=(2, 3)), device="cpu", backend="onnx")
