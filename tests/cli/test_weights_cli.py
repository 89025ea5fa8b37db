"""Checkpoints by URL on the command line: `abdnet eval --checkpoint URL#sha256=...` over a
real HTTP server, again from the cache with the server gone, and refused on a wrong pin."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from abdnet import hub
from abdnet.cli.main import main
from abdnet.retrieval import FeatureExtractor


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv(hub.CACHE_ENV, str(root))
    monkeypatch.delenv(hub.OFFLINE_ENV, raising=False)
    return root


def _eval_json(capsys, checkpoint: str) -> dict:
    capsys.readouterr()
    assert main(["eval", "--checkpoint", checkpoint, "--device", "cpu", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_by_url_with_pin_then_from_cache_then_wrong_pin(
    trained_run, file_server, cache, capsys
):
    weights = trained_run / "checkpoints" / "last" / "model.safetensors"
    data = weights.read_bytes()
    file_server.put("/models/abd.safetensors", data)
    url = file_server.url("/models/abd.safetensors")
    digest = hashlib.sha256(data).hexdigest()

    local = _eval_json(capsys, str(weights))
    assert _eval_json(capsys, f"{url}#sha256={digest}") == local
    file_server.stop()
    assert _eval_json(capsys, f"{url}#sha256={digest}") == local  # served by the cache
    assert file_server.bodies["/models/abd.safetensors"] == 1

    wrong = hashlib.sha256(b"other").hexdigest()
    fresh = cache.parent / "fresh-cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(hub.CACHE_ENV, str(fresh))
        server = type(file_server)()  # a new server: the old one is stopped
        try:
            server.put("/models/abd.safetensors", data)
            bad = server.url("/models/abd.safetensors") + f"#sha256={wrong}"
            capsys.readouterr()
            assert main(["eval", "--checkpoint", bad, "--device", "cpu", "--json"]) == 2
        finally:
            server.stop()
    err = capsys.readouterr().err
    assert "SHA-256 mismatch" in err and wrong in err and digest in err
    assert "nothing cached" in err and "Traceback" not in err
    assert [p for p in fresh.rglob("*") if p.is_file() and not p.name.endswith(".lock")] == []


def test_feature_extractor_takes_a_url(trained_run, file_server, cache):
    weights = trained_run / "checkpoints" / "last" / "model.safetensors"
    file_server.put("/abd.safetensors", weights.read_bytes())
    x = torch.randn(3, 3, 64, 32)
    by_url = FeatureExtractor(file_server.url("/abd.safetensors"), device="cpu")(x)
    local = FeatureExtractor(str(weights), device="cpu")(x)
    assert torch.equal(by_url, local)


@pytest.mark.parametrize(
    "argv", [["eval"], ["extract"], ["viz", "attention"], ["export", "onnx"], ["export", "hf"]]
)
def test_help_of_every_checkpoint_option_names_urls_and_hub(argv, capsys):
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--checkpoint" in text and "URL#sha256=HEX" in text and "hf://OWNER/REPO" in text
