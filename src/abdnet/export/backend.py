"""The runtime that runs a network for inference, and the automatic choice of the fastest one.

:func:`select_backend` turns a PyTorch network and a backend name into a :class:`Backend`:
what :func:`abdnet.engine.extract_features` runs (an embedder, its autocast precision,
channels_last). Names:

- ``"torch"``: the network in PyTorch, in the requested precision (fp32 by default);
- ``"onnx"``: ONNX Runtime fp32 on the graph :func:`abdnet.export.export_onnx` writes
  (parity-checked against PyTorch);
- ``"openvino"``: OpenVINO on the same graph, fp32 unless another precision is asked for;
- ``"auto"``: the fastest of the candidates below whose features stay within cosine
  :data:`COSINE_MIN` of fp32 PyTorch on a probe batch, measured once per machine and model:

  ``torch fp32`` (the reference, always a candidate), ``torch bf16+cl`` (bf16 autocast and
  channels_last, only where :func:`abdnet.engine.choose_precision` picks a lower precision
  for the device without measuring: CPUs with native bf16, CUDA GPUs), and on the CPU
  ``onnxruntime fp32``, ``openvino fp32`` and ``openvino bf16`` (when ``openvino`` imports).

The probe is one batch of ``min(batch_size, PROBE_BATCH)`` random inputs at the model's input
size: each candidate runs it once to warm up (and for the cosine check), then
``_TIMED_ROUNDS`` times, rounds interleaved across candidates so that load from other
processes hits them alike; the best round counts. A candidate that cannot be built or run
(package missing, export refused) is skipped with its reason logged. The result goes to
``$ABDNET_CACHE/backends/<key>.json`` (``abdnet.hub.cache_root``), written atomically; the
key covers the weights (:func:`abdnet.models.weights_digest`), input size, probe batch,
device, CPU model and flags, thread count and the torch / onnxruntime / openvino versions, so
another machine, model or library version measures again. The exported graph is cached
beside it (``<weights digest>-HxW-torch<version>.onnx``). One process measures at a time
(a lock per key): the others, e.g. the ranks of a torchrun job, wait and read its result.
An unreadable cache file is measured again, with a warning.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import importlib.metadata
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from abdnet.config import BackendName, Config, PrecisionName, choices
from abdnet.engine import (
    Runner,
    choose_precision,
    cpu_identity,
    extract_features,
)
from abdnet.export.onnx import OnnxEmbedder, export_onnx, read_onnx_metadata
from abdnet.export.openvino import OpenVinoEmbedder
from abdnet.files import FolderLock, atomic_write
from abdnet.hub import cache_root
from abdnet.models.io import LoadedModel, weights_digest

__all__ = [
    "BACKENDS",
    "COSINE_MIN",
    "PROBE_BATCH",
    "Backend",
    "BackendChoice",
    "Measurement",
    "choose_backend",
    "select_backend",
]

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = choices(BackendName)
COSINE_MIN = 0.999  # smallest per-image cosine to fp32 PyTorch a candidate may have
PROBE_BATCH = 16  # largest probe batch
_TIMED_ROUNDS = 2
_CACHE_FORMAT = 1
_REFERENCE = "torch fp32"


@dataclass
class Backend:
    """How a network runs: what :func:`abdnet.engine.extract_features` is given."""

    name: str  # "torch fp32", "torch bf16+cl", "onnxruntime fp32", "openvino bf16", ...
    embed: Runner  # the network, or a callable (B, 3, H, W) -> (B, D) raw embedding
    precision: PrecisionName = "fp32"  # autocast of a PyTorch network
    channels_last: bool = False  # feed a PyTorch network channels_last batches


@dataclass
class Measurement:
    """One candidate of the automatic choice."""

    name: str
    images_per_s: float | None  # best timed round; None when skipped
    cosine: float | None  # smallest per-image cosine to fp32 PyTorch; None when skipped
    status: str  # "ok", "inexact" (cosine below COSINE_MIN) or "skipped: <reason>"


@dataclass
class BackendChoice:
    backend: Backend
    table: list[Measurement]  # every candidate, in the order measured
    cache_file: Path  # where the measurement is kept
    measured: bool  # False when the choice was read from the cache


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _onnx_file(model: nn.Module, config: Config, digest: str, cache_dir: Path) -> Path:
    """The exported fp32 graph of ``model`` (dynamic batch), from the cache or exported now."""
    height, width = config.data.height, config.data.width
    path = cache_dir / f"{digest[:32]}-{height}x{width}-torch{torch.__version__}.onnx"
    with FolderLock(path, timeout=None, what=f"ONNX export {path}"):
        if path.is_file():
            try:
                read_onnx_metadata(path)
                return path
            except ValueError as exc:
                log.warning("cached ONNX graph %s is unreadable (%s); exporting again", path, exc)
        export_onnx(LoadedModel(model, config), path, dynamic_batch=True)
    return path


def _build(
    name: str,
    model: nn.Module,
    config: Config,
    *,
    device: torch.device,
    digest: str,
    cache_dir: Path,
) -> Backend:
    """The candidate ``name`` (see the module docstring); raises when it cannot run here."""
    threads = torch.get_num_threads()
    if name == _REFERENCE:
        return Backend(name, model, "fp32")
    if name.startswith("torch "):
        precision = name.split()[1].removesuffix("+cl")
        model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        return Backend(name, model_cl, precision, channels_last=True)  # type: ignore[arg-type]
    if device.type != "cpu":
        raise ValueError(f"backend {name!r} runs on the CPU, not on {device}")
    onnx_path = _onnx_file(model, config, digest, cache_dir)
    if name == "onnxruntime fp32":
        return Backend(name, OnnxEmbedder(onnx_path, threads=threads))
    if name.startswith("openvino "):
        precision = name.split()[1]
        return Backend(name, OpenVinoEmbedder(onnx_path, precision=precision, threads=threads))
    raise ValueError(f"unknown backend candidate {name!r}")


def _candidates(device: torch.device) -> list[str]:
    names = [_REFERENCE]
    lower = choose_precision(device, "auto", measure=False).name
    if lower != "fp32":
        names.append(f"torch {lower}+cl")
    if device.type == "cpu":
        names.append("onnxruntime fp32")
        names += ["openvino fp32", "openvino bf16"]
    return names


def _cache_key(model: nn.Module, config: Config, device: torch.device, batch: int) -> dict:
    return {
        "format": _CACHE_FORMAT,
        "weights": weights_digest(model),
        "input": [config.data.height, config.data.width],
        "batch": batch,
        "device": str(device),
        "cpu": cpu_identity(),
        "threads": torch.get_num_threads(),
        "versions": {
            "torch": torch.__version__,
            "onnxruntime": _version("onnxruntime"),
            "openvino": _version("openvino"),
        },
    }


def _read_cache(path: Path, key: dict, candidates: list[str]) -> dict | None:
    """The cached measurement for ``key``, or None (missing, or unreadable: logged)."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if record["key"] != key:
            raise ValueError("its key does not match this machine and model")
        if record["chosen"] not in candidates:
            raise ValueError(f"unknown backend {record['chosen']!r}")
        [Measurement(**m) for m in record["table"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("backend cache %s is unreadable (%s); measuring again", path, exc)
        return None
    return record


def _time_once(backend: Backend, x: torch.Tensor, device: torch.device) -> tuple[float, Any]:
    t = time.perf_counter()
    f = extract_features(
        backend.embed,
        [x],
        device=device,
        precision=backend.precision,
        channels_last=backend.channels_last,
    )
    return time.perf_counter() - t, f


def _measure(
    model: nn.Module,
    config: Config,
    *,
    device: torch.device,
    batch: int,
    digest: str,
    cache_dir: Path,
) -> tuple[dict[str, Backend], list[Measurement]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, config.data.height, config.data.width, generator=gen)
    built: dict[str, Backend] = {}
    table: dict[str, Measurement] = {}
    reference: torch.Tensor | None = None
    for name in _candidates(device):
        try:
            backend = _build(name, model, config, device=device, digest=digest, cache_dir=cache_dir)
            _, f = _time_once(backend, x, device)  # warm-up: kernel selection, allocation
        except Exception as exc:  # any failure of an optional runtime skips the candidate
            if name == _REFERENCE:
                raise
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.info("backend %s skipped: %s", name, reason)
            table[name] = Measurement(name, None, None, f"skipped: {reason}")
            continue
        f = f.double()
        if reference is None:
            reference = f
        cosine = float(torch.nn.functional.cosine_similarity(f, reference, dim=1).min())
        ok = cosine >= COSINE_MIN
        table[name] = Measurement(name, None, cosine, "ok" if ok else "inexact")
        built[name] = backend
    times: dict[str, list[float]] = {name: [] for name in built}
    for _ in range(_TIMED_ROUNDS):
        for name, backend in built.items():
            times[name].append(_time_once(backend, x, device)[0])
    for name, seen in times.items():
        table[name].images_per_s = batch / min(seen)
    return built, list(table.values())


def _log_table(table: list[Measurement], chosen: str, batch: int, config: Config) -> None:
    log.info(
        "backend auto: chose %s (batch %d at %dx%d; candidates within cosine %s of fp32):",
        chosen,
        batch,
        config.data.height,
        config.data.width,
        COSINE_MIN,
    )
    reference = next(m.images_per_s for m in table if m.name == _REFERENCE) or 1.0
    for m in table:
        if m.images_per_s is None:
            log.info("  %-18s %s", m.name, m.status)
        else:
            log.info(
                "  %-18s %8.2f img/s %6.2fx  cos %.6f  %s",
                m.name,
                m.images_per_s,
                m.images_per_s / reference,
                m.cosine,
                m.status,
            )


def choose_backend(
    model: nn.Module,
    config: Config,
    *,
    device: torch.device,
    batch_size: int = PROBE_BATCH,
    cache_dir: str | Path | None = None,
    remeasure: bool = False,
) -> BackendChoice:
    """The fastest candidate within cosine :data:`COSINE_MIN` of fp32 PyTorch (module docs).

    Reads the cached measurement for this machine and model unless ``remeasure``; otherwise
    measures and caches. ``cache_dir`` defaults to ``$ABDNET_CACHE/backends``.
    """
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "backends"
    batch = max(1, min(int(batch_size), PROBE_BATCH))
    key = _cache_key(model, config, device, batch)
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    path = root / f"{name}.json"
    candidates = _candidates(device)
    with FolderLock(root / name, timeout=None, what=f"backend measurement {path}"):
        record = None if remeasure else _read_cache(path, key, candidates)
        if record is not None:
            chosen = record["chosen"]
            try:
                backend = _build(
                    chosen, model, config, device=device, digest=key["weights"], cache_dir=root
                )
            except Exception as exc:  # e.g. the runtime's package broke since: measure again
                log.warning(
                    "backend %s (cached in %s) failed: %s; measuring again", chosen, path, exc
                )
            else:
                log.info(
                    "backend auto: %s (measured %s, %s)", chosen, record.get("measured_at"), path
                )
                table = [Measurement(**m) for m in record["table"]]
                return BackendChoice(backend, table, path, measured=False)
        built, table = _measure(
            model, config, device=device, batch=batch, digest=key["weights"], cache_dir=root
        )
        exact = [m for m in table if m.status == "ok"]
        chosen = max(exact, key=lambda m: m.images_per_s or 0.0).name
        record = {
            "key": key,
            "chosen": chosen,
            "table": [asdict(m) for m in table],
            "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
        }
        atomic_write(path, json.dumps(record, indent=2) + "\n")
    _log_table(table, chosen, batch, config)
    return BackendChoice(built[chosen], table, path, measured=True)


def select_backend(
    requested: str,
    model: nn.Module,
    config: Config,
    *,
    device: torch.device,
    precision: PrecisionName | None = None,
    batch_size: int = PROBE_BATCH,
    cache_dir: str | Path | None = None,
    remeasure: bool = False,
) -> Backend:
    """The :class:`Backend` named ``requested`` (one of :data:`BACKENDS`) for ``model``.

    ``precision`` applies to ``"torch"`` (default fp32) and ``"openvino"`` (fp32, bf16 or
    OpenVINO's own "auto"); ``"onnx"`` runs fp32, and ``"auto"`` chooses the precision itself,
    so neither takes one.
    """
    if requested not in BACKENDS:
        raise ValueError(f"backend: expected one of {list(BACKENDS)}, got {requested!r}")
    if requested == "torch":
        return Backend(f"torch {precision or 'fp32'}", model, precision or "fp32")
    if precision is not None and requested in ("auto", "onnx"):
        raise ValueError(
            f"precision {precision!r} with backend {requested!r}: the precision applies to the "
            f"'torch' and 'openvino' backends ('auto' chooses its own, 'onnx' runs fp32)"
        )
    if requested == "auto":
        return choose_backend(
            model,
            config,
            device=device,
            batch_size=batch_size,
            cache_dir=cache_dir,
            remeasure=remeasure,
        ).backend
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "backends"
    name = "onnxruntime fp32" if requested == "onnx" else f"openvino {precision or 'fp32'}"
    return _build(name, model, config, device=device, digest=weights_digest(model), cache_dir=root)
