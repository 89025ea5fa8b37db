"""Resume equality: a run stopped after a checkpoint and resumed ends bit-identical to an
uninterrupted run (CPU, deterministic mode)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from abdnet.config import config_from_dict, load_config
from abdnet.engine import load_checkpoint, train

ROOT = Path(__file__).resolve().parents[2]


SMALL_RUN = ROOT / "tests" / "fixtures" / "small-run.yaml"


def small_config(**train_overrides):
    """The small run of tests/fixtures/small-run.yaml as 1 frozen + 1 epoch with an LR step,
    deterministic kernels and no checkpoint between the final ones."""
    cfg = yaml.safe_load(SMALL_RUN.read_text())
    cfg["optim"] = {"milestones": [1]}
    cfg["train"].update(frozen_epochs=1, epochs=2, deterministic=True, checkpoint_every=10)
    cfg["train"].update(train_overrides)
    return config_from_dict(cfg)


def weights(run):
    return load_file(str(Path(run) / "checkpoints" / "last" / "model.safetensors"))


def losses(run):
    return [
        json.loads(line)["loss"] for line in (Path(run) / "metrics.jsonl").read_text().splitlines()
    ]


@pytest.mark.slow
def test_stop_and_resume_is_bit_identical(tmp_path):
    cfg = small_config()
    full = train(cfg, tmp_path / "full")
    assert full.epochs == 3 and full.test is not None
    # the uninterrupted run's weights and losses stay in memory; its folder (a 78 MB model
    # and a 157 MB optimizer state) goes before the second run writes its own
    a, full_losses = weights(tmp_path / "full"), losses(tmp_path / "full")
    shutil.rmtree(tmp_path / "full")

    part = train(cfg, tmp_path / "part", max_epochs=2)  # "crash" after epoch 2's checkpoint
    assert load_checkpoint(tmp_path / "part").epoch == 2
    resumed = train(None, tmp_path / "part", resume=True)
    assert part.epochs == 2 and resumed.epochs == 3

    b = weights(tmp_path / "part")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the logged losses of every epoch agree too, and a single line per epoch was kept
    assert full_losses == losses(tmp_path / "part")
    assert resumed.test == full.test


def test_fresh_run_into_existing_run_is_refused(tmp_path):
    cfg = small_config(frozen_epochs=0, epochs=1)
    train(cfg, tmp_path / "r", max_epochs=1)
    with pytest.raises(FileExistsError, match="--resume .*--force"):
        train(cfg, tmp_path / "r")
    before = (tmp_path / "r" / "metrics.jsonl").read_text()
    train(cfg, tmp_path / "r", force=True, max_epochs=1)  # replaces the run
    assert (tmp_path / "r" / "metrics.jsonl").read_text().count("\n") == before.count("\n")
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        train(None, tmp_path / "nothing", resume=True)


def _abdnet(*args):
    return [sys.executable, "-m", "abdnet.cli.main", *args]


@pytest.mark.slow
def test_sigkill_and_resume_tiny_config_matches_uninterrupted(tmp_path):
    # As a user would run it: tiny.yaml (shortened with --set to 1 + 3 epochs of 4 small
    # batches, a checkpoint each), killed with SIGKILL as soon as the first checkpoint
    # exists, resumed with `abdnet train --resume`.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    config = str(ROOT / "configs" / "tiny.yaml")
    short = [
        f"{k}={v}"
        for k, v in {
            "train.epochs": 3, "train.checkpoint_every": 1, "optim.milestones": "[2]",
            "data.synthetic.cams": 2, "data.synthetic.per_id": 4, "data.batch_size": 16,
        }.items()
    ]  # fmt: skip
    short = [a for s in short for a in ("--set", s)]
    full, killed = tmp_path / "full", tmp_path / "killed"
    proc = subprocess.Popen(
        _abdnet("train", "--config", config, "--out", str(killed), "--no-progress", *short),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    marker = killed / "checkpoints" / "last" / "model.safetensors"
    deadline = time.monotonic() + 600
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    total = load_config(config).train
    assert load_checkpoint(killed).epoch < total.frozen_epochs + 3

    subprocess.run(
        _abdnet("train", "--resume", str(killed), "--no-progress"),
        check=True,
        env=env,
        capture_output=True,
    )
    # the resumed run's weights stay in memory; its folder goes before the second run
    b, resumed_epoch = weights(killed), load_checkpoint(killed).epoch
    shutil.rmtree(killed)
    subprocess.run(
        _abdnet("train", "--config", config, "--out", str(full), "--no-progress", *short),
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    a = weights(full)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)
        assert torch.equal(a[k], b[k]), k  # in fact bit-identical
    assert resumed_epoch == total.frozen_epochs + 3
