import pytest
import torch

from abdnet.engine import precision as P
from abdnet.engine.precision import choose_precision, cpu_has_native_bf16


def test_auto_on_cpu_without_native_bf16_is_fp32(monkeypatch):
    # an AVX2-only CPU: the flags list has avx2 but neither avx512_bf16 nor amx_bf16
    monkeypatch.setattr(P, "_cpuinfo_flags", lambda: {"fpu", "sse4_2", "avx", "avx2", "fma"})
    assert cpu_has_native_bf16() is False
    p = choose_precision("cpu", "auto")
    assert p.name == "fp32" and p.dtype is None and not p.use_scaler


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_native_bf16_flags_are_detected(monkeypatch, flag):
    monkeypatch.setattr(P, "_cpuinfo_flags", lambda: {"avx2", "avx512f", flag})
    assert cpu_has_native_bf16() is True
    assert choose_precision("cpu", "auto", measure=False).name == "bf16"


def test_native_bf16_but_slow_measurement_keeps_fp32(monkeypatch):
    monkeypatch.setattr(P, "_cpuinfo_flags", lambda: {"avx512_bf16"})
    monkeypatch.setattr(P, "_cpu_bf16_speedup", lambda: 0.8)
    assert choose_precision("cpu", "auto").name == "fp32"
    monkeypatch.setattr(P, "_cpu_bf16_speedup", lambda: 1.5)
    assert choose_precision("cpu", "auto").name == "bf16"


def test_fallback_to_torch_capability_without_cpuinfo(monkeypatch):
    monkeypatch.setattr(P, "_cpuinfo_flags", lambda: set())
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert cpu_has_native_bf16() is False
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AMX")
    assert cpu_has_native_bf16() is True


def test_explicit_requests_are_honoured_and_bad_names_rejected():
    assert choose_precision("cpu", "fp32").name == "fp32"
    fp16 = choose_precision("cpu", "fp16")
    assert fp16.use_scaler and fp16.dtype == torch.float16
    with pytest.raises(ValueError, match="precision: expected one of"):
        choose_precision("cpu", "half")


def test_bf16_autocast_step_runs_on_cpu():
    # correctness, not speed: a bf16 autocast training step changes the weights and the
    # conv output really is computed in bf16
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    x = torch.randn(2, 3, 8, 6)
    net(x)
    p = choose_precision("cpu", "bf16")
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    scaler = p.grad_scaler()
    before = [t.detach().clone() for t in net.parameters()]
    with p.autocast():
        y = net(x)
        assert net[0](x).dtype == torch.bfloat16
    loss = torch.nn.functional.cross_entropy(y.float(), torch.tensor([0, 1]))
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.isfinite(loss)
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
