import pickle
import random

import numpy as np
import pytest
import torch

from abdnet.config import Config, model_config
from abdnet.engine import TrainState, capture_rng_state, restore_rng_state
from abdnet.engine.checkpoint import load_checkpoint, restore_checkpoint, save_checkpoint
from abdnet.models import build_model_from_config


def test_rng_state_round_trip_through_weights_only_load(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    state = capture_rng_state()
    expected = (random.random(), np.random.randn(3), torch.rand(3))
    torch.save(state, tmp_path / "s.pt")
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    restore_rng_state(torch.load(tmp_path / "s.pt", weights_only=True))
    got = (random.random(), np.random.randn(3), torch.rand(3))
    assert got[0] == expected[0]
    np.testing.assert_array_equal(got[1], expected[1])
    assert torch.equal(got[2], expected[2])


def _state(seed: int) -> TrainState:
    torch.manual_seed(seed)
    model = build_model_from_config(
        model_config(
            "baseline", backbone="resnet18", global_dim=8, attentive_dim=8, reduction_dim=8
        ),
        3,
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return TrainState(model, opt, torch.amp.GradScaler("cpu", enabled=False))


def test_train_state_round_trip_restores_weights_optimizer_counters_and_rng(tmp_path):
    state = _state(0)
    x = torch.randn(4, 3, 64, 32)
    state.model.train()
    state.model(x).embedding.sum().backward()
    state.optimizer.step()
    state.epoch, state.step, state.best_metric, state.best_epoch = 3, 12, 0.25, 2
    save_checkpoint(tmp_path, "last", state, Config())
    expected_next = torch.rand(3)  # the RNG right after the save

    other = _state(1)
    torch.manual_seed(99)
    ckpt = restore_checkpoint(tmp_path, other)
    assert ckpt.epoch == 3
    assert (other.epoch, other.step, other.best_metric, other.best_epoch) == (3, 12, 0.25, 2)
    for a, b in zip(state.model.state_dict().values(), other.model.state_dict().values()):
        assert torch.equal(a, b)
    sa, sb = state.optimizer.state_dict()["state"], other.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys() and all(
        torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa
    )
    assert torch.equal(torch.rand(3), expected_next)
    assert "scheduler" not in ckpt.state and "sampler" not in ckpt.state  # nothing unread is saved


class _Payload:
    def __reduce__(self):
        return (print, ("this would run",))


def test_malicious_state_file_is_refused_with_its_name(tmp_path):
    save_checkpoint(tmp_path, "last", _state(0), Config())
    state_file = tmp_path / "checkpoints" / "last" / "state.pt"
    state_file.write_bytes(pickle.dumps({"epoch": 1, "x": _Payload()}))
    with pytest.raises(ValueError, match=r"state\.pt: refused"):
        load_checkpoint(tmp_path)


def test_dangling_last_link_is_an_error_not_a_fresh_start(tmp_path):
    save_checkpoint(tmp_path, "last", _state(0), Config())
    target = (tmp_path / "checkpoints" / "last").resolve()
    import shutil

    shutil.rmtree(target)
    with pytest.raises(FileNotFoundError, match="missing folder"):
        load_checkpoint(tmp_path)


def test_dropped_training_state_keeps_the_weights_and_refuses_resume(tmp_path):
    from safetensors.torch import load_file

    from abdnet.engine import drop_training_state

    state = _state(0)
    save_checkpoint(tmp_path, "last", state, Config())
    save_checkpoint(tmp_path, "best", state, Config())
    folders = [tmp_path / "checkpoints" / n for n in ("last", "best")]
    sizes = sum((f / "state.pt").stat().st_size for f in folders)
    weights = {f: (f / "model.safetensors").read_bytes() for f in folders}

    assert drop_training_state(tmp_path) == sizes > 0
    for f in folders:
        assert not (f / "state.pt").exists()
        assert (f / "model.safetensors").read_bytes() == weights[f]  # untouched
        loaded = load_file(str(f / "model.safetensors"))
        for k, v in state.model.state_dict().items():
            assert torch.equal(loaded[k], v), k
    with pytest.raises(FileNotFoundError, match=r"last: holds the weights .* not resumed"):
        load_checkpoint(tmp_path)
    assert drop_training_state(tmp_path) == 0  # nothing left to drop
