"""Choosing the arithmetic precision of training and inference.

The rule: never default to a path that is slower on the machine at hand.

* CUDA: bf16 autocast when the GPU supports it, else fp16 autocast with a GradScaler.
* CPU: bf16 autocast only when the CPU has native bf16 instructions (AVX512-BF16 or AMX).
  Without them bf16 convolutions and matmuls are emulated and run many times slower than
  fp32. Even with AVX512-BF16 (but no AMX) oneDNN's bf16 convolutions are not always
  faster than fp32 (NCHW 3x3 convolutions can be slower, channels_last ones faster; numbers
  in docs/benchmarks.md), so on a native-bf16 CPU "auto" also times two ResNet basic blocks
  forward+backward in both precisions once per process and keeps bf16 only when it is at
  least ``_MIN_SPEEDUP`` faster. The probe is a proxy: ``benchmarks/train_speed.py``
  measures the real model both ways.

An explicit request ("fp32", "bf16", "fp16") is honoured; a request that is known to be slow
is logged as a warning.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from abdnet.config import PrecisionName, choices

__all__ = [
    "Precision",
    "choose_precision",
    "cpu_has_native_bf16",
    "cpu_identity",
    "cpu_info",
    "resolve_device",
]

log = logging.getLogger(__name__)

_VALID = choices(PrecisionName)
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# bf16 must beat fp32 by this factor in the probe before "auto" picks it on a CPU.
_MIN_SPEEDUP = 1.2


@dataclass(frozen=True)
class Precision:
    """What autocast and the grad scaler do on one device."""

    name: str  # "fp32", "bf16" or "fp16"
    device_type: str  # "cpu" or "cuda"
    use_scaler: bool  # fp16 needs loss scaling; bf16 and fp32 do not
    reason: str  # why this precision was chosen (logged, written to the run folder)

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, None for plain fp32."""
        return _DTYPES[self.name]

    def autocast(self) -> contextlib.AbstractContextManager:
        """Context manager for the forward pass (a no-op in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler that is enabled only for fp16."""
        return torch.amp.GradScaler(self.device_type, enabled=self.use_scaler)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is parsed by torch."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device: not a device: {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available")
    return dev


def cpu_info(path: str = "/proc/cpuinfo") -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # end of the first processor
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def _cpuinfo_flags(path: str = "/proc/cpuinfo") -> set[str]:
    return set(cpu_info(path).get("flags", "").split())


def cpu_identity() -> str:
    """The CPU's model name and its instruction-set flags (what decides which kernels run):
    a key for results measured on this kind of machine."""
    info = cpu_info()
    name = info.get("model name") or platform.processor() or platform.machine()
    flags = " ".join(sorted(set(info.get("flags", "").split())))
    return f"{name} | {torch.backends.cpu.get_cpu_capability()} | {flags}"


def cpu_has_native_bf16() -> bool:
    """True when the CPU executes bf16 arithmetic natively (AVX512-BF16 or AMX-BF16).

    Uses the kernel's CPU flags where available (Linux) and falls back to torch's
    dispatch capability (which reports "AMX" only on AMX machines). AVX2-only CPUs emulate
    bf16 and return False.
    """
    flags = _cpuinfo_flags()
    if flags:
        return bool({"avx512_bf16", "amx_bf16"} & flags)
    capability = torch.backends.cpu.get_cpu_capability()
    return "AMX" in capability.upper()


@functools.lru_cache(maxsize=1)
def _cpu_bf16_speedup() -> float:
    """fp32 time / bf16-autocast time of ResNet basic blocks, forward + backward.

    Once per process (about a second). The two precisions are timed alternately and the
    fastest of five runs each is compared, so that load from other processes (which only
    ever adds time) distorts the ratio as little as possible.
    """
    # fork_rng: the probe must not move (or reseed) the global RNG a run was seeded with.
    # One thread: with several, any load from other processes makes every parallel region
    # wait for a descheduled sibling, and the small probe then misreads bf16 as slower than
    # fp32 while the real model is faster in bf16 (docs/benchmarks.md).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            return _probe_bf16_speedup()
    finally:
        torch.set_num_threads(threads)


def _probe_bf16_speedup() -> float:
    from torchvision.models.resnet import BasicBlock

    torch.manual_seed(0)
    down = torch.nn.Sequential(
        torch.nn.Conv2d(64, 128, 1, stride=2, bias=False), torch.nn.BatchNorm2d(128)
    )
    net = torch.nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 128, stride=2, downsample=down))
    net = net.to(memory_format=torch.channels_last)
    x = torch.randn(8, 64, 32, 16).contiguous(memory_format=torch.channels_last)

    def once(dtype: torch.dtype | None) -> float:
        ctx = torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()
        t0 = time.perf_counter()
        with ctx:
            y = net(x)
        y.float().sum().backward()
        return time.perf_counter() - t0

    once(None), once(torch.bfloat16)  # warm-up: oneDNN primitive creation
    times: dict[torch.dtype | None, list[float]] = {None: [], torch.bfloat16: []}
    for _ in range(5):
        for dtype, seen in times.items():
            seen.append(once(dtype))
    return min(times[None]) / min(times[torch.bfloat16])


def choose_precision(
    device: str | torch.device, requested: str = "auto", *, measure: bool = True
) -> Precision:
    """Pick the precision for ``device`` (``train.precision`` / inference).

    ``requested`` is "auto", "fp32", "bf16" or "fp16". With "auto": CUDA -> bf16 if the GPU
    supports it else fp16 + GradScaler; CPU -> bf16 only on a CPU with native bf16 *and*
    (when ``measure``) a measured speed-up over fp32, else fp32.
    """
    if requested not in _VALID:
        raise ValueError(f"precision: expected one of {list(_VALID)}, got {requested!r}")
    dev = resolve_device(device)
    kind = dev.type
    if kind not in ("cpu", "cuda"):
        return Precision("fp32", kind, False, f"{kind}: autocast not supported here")
    if requested != "auto":
        if kind == "cpu" and requested in ("bf16", "fp16") and not cpu_has_native_bf16():
            log.warning(
                "%s requested on a CPU without native bf16/fp16: expect it to be much slower "
                "than fp32",
                requested,
            )
        return Precision(requested, kind, requested == "fp16", "requested")
    if kind == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", kind, False, "auto: GPU supports bf16")
        return Precision("fp16", kind, True, "auto: GPU without bf16, fp16 with GradScaler")
    if not cpu_has_native_bf16():
        return Precision("fp32", kind, False, "auto: CPU without native bf16")
    if not measure:
        return Precision("bf16", kind, False, "auto: CPU with native bf16 (not measured)")
    speedup = _cpu_bf16_speedup()
    if speedup >= _MIN_SPEEDUP:
        return Precision("bf16", kind, False, f"auto: native bf16, measured {speedup:.2f}x fp32")
    return Precision(
        "fp32", kind, False, f"auto: native bf16 but measured only {speedup:.2f}x fp32"
    )
