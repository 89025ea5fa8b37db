"""ONNX export of the embedding network, and an ONNX Runtime backend that needs no checkpoint.

The exported graph
------------------
- input ``"input"``: a ``(B, 3, H, W)`` float32 batch **already transformed** exactly as the
  PyTorch path does (``abdnet.data.build_test_transform``: resize to H x W, scale to [0, 1],
  subtract ``mean`` and divide by ``std`` per RGB channel). Normalization stays outside the
  graph so the ONNX model and the PyTorch model take the same tensors, and one transform
  code path serves both.
- output ``"embedding"``: the eval-mode **raw** embedding ``(B, D)`` (not L2-normalized).
  With ``flip=True`` the graph averages the raw embeddings of the batch and of its
  horizontal mirror (the official code's flip evaluation).
- metadata (``metadata_props``, keys prefixed ``abdnet.``): ``config`` (full Config YAML),
  ``input_height``, ``input_width``, ``mean``, ``std`` (JSON lists), ``flip``,
  ``normalize`` ("false": the output is raw; consumers L2-normalize), ``feature_dim``,
  ``parity_max_abs_diff``. :class:`OnnxEmbedder` rebuilds the same transform from them.

Before anything is written, the graph is checked with ``onnx.checker`` and run with ONNX
Runtime on sample batches; if the max absolute difference from PyTorch on the raw,
un-normalized embedding exceeds ``atol * max(1, s)`` (``atol`` default 1e-4, ``s`` the largest
|value| of PyTorch's embedding) the export is refused and no file is left behind. For
embeddings of magnitude <= 1 this is the plain absolute 1e-4 bound; larger embeddings get the
same bound relative to their scale, because float32 itself cannot do better there: an
untrained ``official`` network has raw values up to ~400, where PyTorch's own float32 result
is ~4e-4 away from the float64 one. The TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) is
used: it handles the attention modules' ``bmm``/``softmax`` and ``torch.flip`` directly and
needs no extra dependency; torch >= 2.9 marks it deprecated but still ships it.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from abdnet.config import Config, ConfigError, DataConfig, config_from_dict, dump_config, load_yaml
from abdnet.files import atomic_file, remove_stale_temporaries
from abdnet.models.io import LoadedModel, load_model

__all__ = [
    "ONNX_FORMAT_VERSION",
    "read_onnx_metadata",
    "config_from_metadata",
    "input_array",
    "run_in_batches",
    "ExportParityError",
    "OnnxExportResult",
    "EmbeddingGraph",
    "export_onnx",
    "OnnxEmbedder",
]

log = logging.getLogger(__name__)

ONNX_FORMAT_VERSION = 1
_INPUT = "input"
_OUTPUT = "embedding"
_PREFIX = "abdnet."


class ExportParityError(ValueError):
    """ONNX Runtime's output differs from PyTorch's by more than the tolerance."""


@dataclass
class OnnxExportResult:
    path: Path
    max_abs_diff: float  # worst |onnxruntime - pytorch| over the checked batches (raw embedding)
    tolerance: float  # the bound it had to meet: atol * max(1, largest |embedding|)
    batch_sizes: tuple[int, ...]  # batch sizes the parity check ran
    input_shape: tuple[int, int, int]  # (3, H, W)
    feature_dim: int
    opset: int
    flip: bool
    dynamic_batch: bool


class EmbeddingGraph(nn.Module):
    """What is exported: the model's eval-mode raw embedding, optionally flip-averaged."""

    def __init__(self, model: nn.Module, flip: bool) -> None:
        super().__init__()
        self.model = model
        self.flip = flip

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 3, H, W)
        f = self.model(x).embedding  # (B, D)
        if self.flip:
            f = (f + self.model(torch.flip(x, dims=[3])).embedding) / 2
        return f


def _run_onnxruntime(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([_OUTPUT], {_INPUT: x})[0]


def _metadata(config: Config, flip: bool, feature_dim: int, max_diff: float) -> dict[str, str]:
    data = config.data
    return {
        f"{_PREFIX}format_version": str(ONNX_FORMAT_VERSION),
        f"{_PREFIX}config": dump_config(config),
        f"{_PREFIX}input_height": str(data.height),
        f"{_PREFIX}input_width": str(data.width),
        f"{_PREFIX}mean": json.dumps(list(data.mean)),
        f"{_PREFIX}std": json.dumps(list(data.std)),
        f"{_PREFIX}flip": "true" if flip else "false",
        f"{_PREFIX}normalize": "false",
        f"{_PREFIX}feature_dim": str(feature_dim),
        f"{_PREFIX}parity_max_abs_diff": f"{max_diff:.3e}",
        f"{_PREFIX}input_layout": (
            "NCHW float32 RGB: resize to input_height x input_width (bilinear), "
            "scale to [0,1], (x - mean) / std"
        ),
    }


def export_onnx(
    checkpoint_or_model: str | Path | LoadedModel,
    out: str | Path,
    *,
    opset: int = 17,
    dynamic_batch: bool = False,
    flip: bool = False,
    batch_size: int = 1,
    atol: float = 1e-4,
    seed: int = 0,
) -> OnnxExportResult:
    """Export the eval-mode embedding network of a checkpoint to ``out`` (see module docs).

    ``batch_size`` fixes the batch dimension unless ``dynamic_batch``; with a dynamic batch
    the parity check runs batches of 1 and 5. Raises :class:`ExportParityError` (and writes
    nothing) when ONNX Runtime and PyTorch differ by more than ``atol * max(1, s)`` (max abs
    on the raw embedding, ``s`` its largest magnitude; see the module docstring).
    """
    import onnx

    loaded = checkpoint_or_model
    if not isinstance(loaded, LoadedModel):
        loaded = load_model(loaded, map_location="cpu")
    config = loaded.config
    graph = EmbeddingGraph(loaded.model.cpu(), flip).eval()
    height, width = config.data.height, config.data.width
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give the .onnx file to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out.parent, out.name)  # what killed exports left behind
    gen = torch.Generator().manual_seed(seed)
    export_batch = 2 if dynamic_batch else batch_size
    sample = torch.randn(export_batch, 3, height, width, generator=gen)
    with atomic_file(out) as tmp:
        with warnings.catch_warnings():
            # The TorchScript exporter's deprecation notice and tracer warnings are noise here.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph,
                (sample,),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=[_INPUT],
                output_names=[_OUTPUT],
                dynamic_axes={_INPUT: {0: "batch"}, _OUTPUT: {0: "batch"}}
                if dynamic_batch
                else None,
                do_constant_folding=True,
            )
        graph.eval()  # export() restores the mode it found; keep eval for the reference run
        onnx.checker.check_model(str(tmp))
        batch_sizes = (1, 5) if dynamic_batch else (batch_size,)
        max_diff = 0.0
        scale = 0.0
        feature_dim = 0
        for b in batch_sizes:
            x = torch.randn(b, 3, height, width, generator=gen)
            with torch.inference_mode():
                expected = graph(x).float().numpy()
            got = _run_onnxruntime(tmp, x.numpy())
            if got.shape != expected.shape:
                raise ExportParityError(
                    f"ONNX export to {out}: output shape {got.shape} != PyTorch {expected.shape}"
                )
            feature_dim = int(expected.shape[1])
            max_diff = max(max_diff, float(np.abs(got.astype(np.float64) - expected).max()))
            scale = max(scale, float(np.abs(expected).max()))
        tolerance = atol * max(1.0, scale)
        if not max_diff <= tolerance:  # also catches NaN
            raise ExportParityError(
                f"ONNX export to {out} refused: ONNX Runtime differs from PyTorch by "
                f"{max_diff:.3e} (max abs on the raw embedding) > tolerance {tolerance:.1e} "
                f"(atol {atol:.1e} x max(1, largest |embedding| {scale:.3g}))"
            )
        model_proto = onnx.load(str(tmp))
        for key, value in _metadata(config, flip, feature_dim, max_diff).items():
            entry = model_proto.metadata_props.add()
            entry.key, entry.value = key, value
        model_proto.doc_string = "abdnet ABD-Net embedding network (raw embedding output)"
        onnx.save(model_proto, str(tmp))
        onnx.checker.check_model(str(tmp))
    log.info("exported %s (max abs diff %.2e over batch sizes %s)", out, max_diff, batch_sizes)
    return OnnxExportResult(
        path=out,
        max_abs_diff=max_diff,
        tolerance=tolerance,
        batch_sizes=batch_sizes,
        input_shape=(3, height, width),
        feature_dim=feature_dim,
        opset=opset,
        flip=flip,
        dynamic_batch=dynamic_batch,
    )


def _abdnet_metadata(meta: dict[str, str], path: Path) -> dict[str, str]:
    metadata = {k[len(_PREFIX) :]: v for k, v in meta.items() if k.startswith(_PREFIX)}
    if "input_height" not in metadata:
        raise ValueError(
            f"{path}: no abdnet metadata (input size, mean/std); was it written by "
            f"'abdnet export onnx'?"
        )
    return metadata


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``abdnet.*`` metadata of an exported ONNX file, prefix removed (no runtime needed)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and onnx's own errors
        raise ValueError(f"{path}: not a loadable ONNX model: {exc}") from None
    return _abdnet_metadata({p.key: p.value for p in proto.metadata_props}, path)


def config_from_metadata(metadata: dict[str, str], path: str | Path) -> Config:
    """The Config an export recorded (the transform at least), from its metadata."""
    md = metadata
    try:
        if "config" in md:
            return config_from_dict(load_yaml(md["config"]))
        data = DataConfig(
            height=int(md["input_height"]),
            width=int(md["input_width"]),
            mean=tuple(json.loads(md["mean"])),
            std=tuple(json.loads(md["std"])),
        )
        return Config(data=data)
    except (ConfigError, yaml.YAMLError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: invalid abdnet metadata: {exc}") from None


def input_array(x: Any, config: Config, path: Path) -> np.ndarray:
    """``x`` as a contiguous float32 ``(B, 3, H, W)`` array, its shape checked against the
    input size ``config`` records."""
    arr = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    expected = (3, config.data.height, config.data.width)
    if arr.ndim != 4 or tuple(arr.shape[1:]) != expected:
        raise ValueError(
            f"{path}: input of shape {arr.shape}, expected (B, {', '.join(map(str, expected))})"
        )
    return arr


def run_in_batches(run: Any, arr: np.ndarray, fixed_batch: int | None) -> np.ndarray:
    """``run(arr)``, or for a graph with a fixed batch size, ``run`` on chunks of that size
    (the last one zero-padded) joined back."""
    if fixed_batch is None:
        return run(arr)
    outs = []
    for start in range(0, arr.shape[0], fixed_batch):
        chunk = arr[start : start + fixed_batch]
        pad = fixed_batch - chunk.shape[0]
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, *arr.shape[1:]), np.float32)])
        outs.append(run(chunk)[: fixed_batch - pad])
    return np.concatenate(outs)


class OnnxEmbedder:
    """ONNX Runtime backend: ``(B, 3, H, W)`` transformed batch -> raw ``(B, D)`` embedding.

    Reads the transform (``config``, a :class:`Config` whose ``data`` section holds input
    size and mean/std) and ``flip`` from the file's metadata, so
    ``FeatureExtractor(OnnxEmbedder(path))`` applies the same transform as the PyTorch
    checkpoint did. A model exported with a fixed batch size is fed in chunks of that size
    (the last one zero-padded).
    """

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {self.path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ValueError(f"{self.path}: not a loadable ONNX model: {exc}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata = _abdnet_metadata(meta, self.path)
        self.config = config_from_metadata(self.metadata, self.path)
        self.flip = self.metadata.get("flip") == "true"
        self.feature_dim = int(self.metadata.get("feature_dim", 0)) or None
        shape = self.session.get_inputs()[0].shape
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None

    def __call__(self, x: Any) -> np.ndarray:
        arr = input_array(x, self.config, self.path)
        return run_in_batches(
            lambda chunk: self.session.run([_OUTPUT], {_INPUT: chunk})[0], arr, self.fixed_batch
        )
