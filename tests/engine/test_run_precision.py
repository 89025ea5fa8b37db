"""The precision a run resolves "auto" to is fixed for the whole run (resume, other ranks)."""

import torch

from abdnet.config import Config, config_from_dict
from abdnet.engine import precision as P
from abdnet.engine import run_folder as R
from abdnet.engine.distributed import DistContext
from abdnet.layout import RunLayout


def test_bf16_probe_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    P._cpu_bf16_speedup.__wrapped__()  # the uncached probe
    assert torch.equal(torch.rand(4), expected)


def test_resume_reuses_the_precision_auto_chose(tmp_path, monkeypatch):
    cfg: Config = config_from_dict({"train": {"precision": "auto", "device": "cpu"}})
    real = P.choose_precision

    def fake(device, requested="auto", **kw):  # "auto" decides by a (noisy) measurement
        return real(device, "bf16" if requested == "auto" else requested)

    monkeypatch.setattr(R, "choose_precision", fake)
    first = R.run_precision(
        cfg, RunLayout(tmp_path), torch.device("cpu"), DistContext(), resume=False
    )
    assert first.name == "bf16"

    def fake_later(device, requested="auto", **kw):  # the measurement now says otherwise
        return real(device, "fp32" if requested == "auto" else requested)

    monkeypatch.setattr(R, "choose_precision", fake_later)
    resumed = R.run_precision(
        cfg, RunLayout(tmp_path), torch.device("cpu"), DistContext(), resume=True
    )
    assert resumed.name == "bf16"
    (tmp_path / "other").mkdir()
    fresh = R.run_precision(
        cfg, RunLayout(tmp_path / "other"), torch.device("cpu"), DistContext(), resume=False
    )
    assert fresh.name == "fp32"
