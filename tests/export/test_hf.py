"""export/hf.py: the Hugging Face model folder, its model card, and loading it back (local
folder and hf:// through huggingface_hub against a server speaking the Hub's protocol)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from abdnet.cli.main import main
from abdnet.config import load_config
from abdnet.export import export_hf
from abdnet.files import OutputExistsError
from abdnet.models import load_model


def _last_record(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1])


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_folder_card_and_round_trip(trained_run, tmp_path):
    out = tmp_path / "abd-small"
    result = export_hf(trained_run, out, repo_id="me/abd-small")
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.yaml",
        "model.safetensors",
    ]
    source = load_model(trained_run)
    back = load_model(out)  # the folder is a checkpoint folder
    assert back.config == source.config == load_config(out / "config.yaml")
    state, back_state = source.model.state_dict(), back.model.state_dict()
    assert all(torch.equal(state[k], back_state[k]) for k in state)

    record = _last_record(trained_run)
    test = record["test"]
    assert result.metrics.epoch == record["epoch"] and result.metrics.test == test
    card = (out / "README.md").read_text()
    meta = _front_matter(card)
    assert meta["license"] == "mit" and meta["library_name"] == "abdnet"
    metrics = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert metrics == {
        k: round(100 * test[k], 2) for k in ("mAP", "rank1", "rank5", "rank10", "mINP")
    }
    for heading in ("## Architecture", "## Training data and recipe", "## Evaluation", "## Usage"):
        assert heading in card
    assert f"| {100 * test['mAP']:.2f} | {100 * test['rank1']:.2f} |" in card
    assert f"{result.feature_dim}-d" in card and "resnet18" in card and "8 ids" in card
    assert "hf://me/abd-small" in card and "@inproceedings{chen2019abdnet" in card
    assert "8351--8361" in card and "## Licence" in card


def test_refuses_to_overwrite_unless_forced(trained_run, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"m: already holds keep.txt.*--force"):
        export_hf(trained_run, out)
    assert (out / "keep.txt").read_text() == "mine"
    export_hf(trained_run, out, force=True, license="cc-by-nc-4.0")
    assert not (out / "keep.txt").exists()
    assert _front_matter((out / "README.md").read_text())["license"] == "cc-by-nc-4.0"


def test_checkpoint_outside_a_run_has_a_card_without_metrics(trained_run, tmp_path):
    bare = tmp_path / "bare.safetensors"
    shutil.copy(trained_run / "checkpoints" / "last" / "model.safetensors", bare)
    result = export_hf(bare, tmp_path / "out")
    card = (tmp_path / "out" / "README.md").read_text()
    assert result.metrics is None and "model-index" not in _front_matter(card)
    assert "No evaluation was recorded" in card


def test_cli_export_then_load_back_with_hf_uri(trained_run, tmp_path, file_server, capsys):
    out = tmp_path / "folder"
    assert (
        main(
            [
                "export",
                "hf",
                "--checkpoint",
                str(trained_run),
                "--out",
                str(out),
                "--repo",
                "me/abd",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "test mAP" in printed
    # what `hf upload me/abd folder` would publish, served by the Hub's resolve protocol
    commit = "c" * 40
    for f in out.iterdir():
        data = f.read_bytes()
        file_server.put(
            f"/me/abd/resolve/main/{f.name}",
            data,
            headers={
                "X-Repo-Commit": commit,
                "X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"',
            },
        )
    assert main(["eval", "--checkpoint", str(out), "--device", "cpu", "--json"]) == 0
    local = json.loads(capsys.readouterr().out)
    env = {
        **os.environ,
        "HF_ENDPOINT": file_server.url(""),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "abdnet.cli.main",
            "eval",
            "--checkpoint",
            "hf://me/abd",
            "--device",
            "cpu",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == local
