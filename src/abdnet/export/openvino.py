"""OpenVINO backend: the exported embedding graph run by Intel's OpenVINO runtime on the CPU.

:class:`OpenVinoEmbedder` takes a file written by ``abdnet export onnx`` (fp32, or INT8 QDQ:
OpenVINO then runs the quantized convolutions in int8) or a checkpoint (exported to ONNX on
the fly, parity-checked by :func:`abdnet.export.export_onnx`). Like
:class:`abdnet.export.OnnxEmbedder` it is a callable ``(B, 3, H, W)`` float32 batch ->
``(B, D)`` raw embedding with a ``config`` attribute (the transform, from the file's
metadata), so ``FeatureExtractor(OpenVinoEmbedder(path))`` extracts with it.

``precision`` is OpenVINO's ``INFERENCE_PRECISION_HINT`` for the float parts of the graph:
``"fp32"`` (exact to float rounding), ``"bf16"`` (only on CPUs with native bf16: AVX512-BF16
or AMX; OpenVINO's own default there) or ``"auto"`` (OpenVINO's default for the CPU). The
``openvino`` package (``pip install abdnet[openvino]``) is imported when an embedder is built.

Every embedder shares one ``openvino.Core``, made once per process and never released
(:func:`shared_core`). OpenVINO's CPU plugin (2026.4), built with each Core, maps an alternate
signal stack and installs it with ``sigaltstack`` on the thread that builds it; when it is
destroyed it unmaps that memory, restoring the previous stack only if the destroying thread's
current stack is its own. A Core released on another thread, or two Cores released in the
order they were made, left a thread's alternate stack pointing at unmapped memory, and the next
Python signal handler run on that thread (all run on the alternate stack, e.g. PyTorch's
``SIGCHLD`` handler when a child exits) killed the process with a kernel-sent SIGSEGV, with no
traceback (tests/export/test_one_process.py reproduces it).
"""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from abdnet.export.onnx import (
    config_from_metadata,
    export_onnx,
    input_array,
    read_onnx_metadata,
    run_in_batches,
)
from abdnet.models.io import LoadedModel

__all__ = ["OPENVINO_PRECISIONS", "OpenVinoEmbedder", "shared_core"]

log = logging.getLogger(__name__)

OPENVINO_PRECISIONS = ("fp32", "bf16", "auto")
_HINTS = {"fp32": "f32", "bf16": "bf16"}


def _openvino() -> Any:
    try:
        import openvino  # optional dependency: the `openvino` extra
    except ImportError:
        raise ImportError(
            "the OpenVINO backend needs the openvino package: pip install 'abdnet[openvino]'"
        ) from None
    return openvino


_core: Any = None
_core_lock = threading.Lock()


def shared_core() -> Any:
    """The process's one ``openvino.Core``, made on first use and kept until the process
    exits (why: the module docstring). Imports ``openvino`` on every call, so that a package
    that cannot be imported fails here even after the Core was made."""
    global _core
    ov = _openvino()
    with _core_lock:
        if _core is None:
            _core = ov.Core()
        return _core


class OpenVinoEmbedder:
    """OpenVINO CPU backend: ``(B, 3, H, W)`` transformed batch -> raw ``(B, D)`` embedding.

    ``source``: an exported ``.onnx`` file, or a checkpoint (anything
    :func:`abdnet.models.load_model` takes, or a :class:`LoadedModel`) exported to ONNX
    first. ``threads`` limits OpenVINO's inference threads (default: all cores).
    """

    def __init__(
        self,
        source: str | Path | LoadedModel,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        flip: bool = False,
    ) -> None:
        if precision not in OPENVINO_PRECISIONS:
            raise ValueError(
                f"OpenVINO precision: expected one of {OPENVINO_PRECISIONS}, got {precision!r}"
            )
        self.core = shared_core()
        if precision == "bf16" and "BF16" not in self.core.get_property(
            "CPU", "OPTIMIZATION_CAPABILITIES"
        ):
            raise ValueError(
                "OpenVINO precision bf16: this CPU has no native bf16 (AVX512-BF16 or AMX); "
                "use fp32"
            )
        is_onnx = isinstance(source, (str, Path)) and str(source).endswith(".onnx")
        if is_onnx:
            self.path = Path(source)
            self.model = self._read(self.path)
        else:
            with tempfile.TemporaryDirectory(prefix="abdnet-openvino-") as tmp:
                self.path = Path(tmp) / "model.onnx"
                export_onnx(source, self.path, dynamic_batch=True, flip=flip)
                self.model = self._read(self.path)
            label = source.source if isinstance(source, LoadedModel) else source
            self.path = Path(str(label or "checkpoint"))
        self.config = config_from_metadata(self.metadata, self.path)
        self.flip = self.metadata.get("flip") == "true"
        self.feature_dim = int(self.metadata.get("feature_dim", 0)) or None
        self.precision = precision
        properties: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if precision in _HINTS:
            properties["INFERENCE_PRECISION_HINT"] = _HINTS[precision]
        if threads:
            properties["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = self.core.compile_model(self.model, "CPU", properties)
        self.request = self.compiled.create_infer_request()
        batch = self.model.input(0).get_partial_shape()[0]
        self.fixed_batch = batch.get_length() if batch.is_static else None

    def _read(self, path: Path) -> Any:
        self.metadata = read_onnx_metadata(path)
        try:
            return self.core.read_model(str(path))
        except RuntimeError as exc:
            raise ValueError(f"{path}: OpenVINO cannot read it: {exc}") from None

    def __call__(self, x: Any) -> np.ndarray:
        arr = input_array(x, self.config, self.path)

        def run(chunk: np.ndarray) -> np.ndarray:
            self.request.infer({0: chunk})
            return self.request.get_output_tensor(0).data.copy()  # the buffer is reused

        return run_in_batches(run, arr, self.fixed_batch)
