"""Static INT8 quantization of the exported embedding network, verified on a data set.

``quantize_int8(checkpoint, out, calibration=ROOT)``:

1. exports the fp32 graph (:func:`abdnet.export.export_onnx`, parity-checked, dynamic batch);
2. calibrates activation ranges on crops of the calibration set (a random sample of its
   training split, or of its gallery when it has no training split) read by ``abdnet.data``
   through the checkpoint's own test transform;
3. quantizes with ``onnxruntime.quantization.quantize_static`` (settings below);
4. evaluates the fp32 and the INT8 graphs on the calibration set's query/gallery with the
   checkpoint's evaluation settings and **refuses** (raises
   :class:`QuantizationAccuracyError`, writes nothing) when the INT8 mAP is more than
   ``max_map_drop`` points below fp32;
5. writes ``out`` atomically, with the fp32 file's ``abdnet.*`` metadata (so
   :class:`abdnet.export.OnnxEmbedder` reads the transform as for fp32) plus
   ``abdnet.quantization``, ``abdnet.map_fp32``, ``abdnet.map_int8`` and the calibration.

Settings, chosen for accuracy and for x86 CPUs with AVX-512 VNNI (measured in
``docs/benchmarks.md``):

- QDQ format: ONNX Runtime fuses each QuantizeLinear/DequantizeLinear pair around a Conv into
  one integer ``QLinearConv`` (the same kernels as the QOperator format) and the graph stays
  readable by other runtimes (OpenVINO runs the same file in INT8).
- uint8 activations (asymmetric, MinMax ranges) x int8 weights (symmetric, **per output
  channel**): the U8S8 combination the VNNI ``vpdpbusd`` instruction multiplies directly;
  per-channel weight scales keep the narrow channels of folded BatchNorm convolutions exact
  enough.
- Only ``Conv`` is quantized (nearly all of the arithmetic). The attention modules'
  activation-by-activation ``MatMul``s and softmax, the embedding ``Gemm``s, pooling and the
  residual additions stay in float: on a barely trained model (the former 4-epoch tiny.yaml),
  quantizing ``MatMul``/``Gemm`` too cost 0.3 mAP points and every op ONNX Runtime can
  quantize 1.2 points (Conv only: 0.05), for at most ~15 % more speed.
- Before quantizing, ONNX Runtime's ``quant_pre_process`` (shape inference, graph clean-up):
  without it most QDQ pairs are not fused and the INT8 graph runs slower than fp32.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from abdnet.data import ReIDDataset, build_test_transform, open_dataset
from abdnet.export.evaluate import evaluate_backend
from abdnet.export.onnx import OnnxEmbedder, export_onnx, read_onnx_metadata
from abdnet.files import atomic_file
from abdnet.models.io import LoadedModel, load_model

__all__ = [
    "QUANTIZATION",
    "QuantizationAccuracyError",
    "QuantizeResult",
    "quantize_int8",
    "quantize_onnx_file",
]

log = logging.getLogger(__name__)

_PREFIX = "abdnet."
_INPUT = "input"
_QUANTIZED_OPS: tuple[str, ...] = ("Conv",)
QUANTIZATION = "int8 static QDQ of Conv: U8 activations (MinMax), S8 per-channel symmetric weights"


class QuantizationAccuracyError(ValueError):
    """INT8 loses more mAP than allowed on the calibration set; nothing was written."""


@dataclass
class QuantizeResult:
    path: Path
    map_fp32: float  # mAP (0..1) of the fp32 graph on the calibration set's query/gallery
    map_int8: float  # the same for the INT8 graph
    rank1_fp32: float
    rank1_int8: float
    calibration_images: int  # crops the activation ranges were measured on
    calibration_split: str  # "train" or "gallery"
    num_query: int
    num_gallery: int

    @property
    def map_drop(self) -> float:
        """fp32 minus INT8 mAP, in points (percent)."""
        return 100.0 * (self.map_fp32 - self.map_int8)


def _calibration_reader(batches: Iterable[np.ndarray]) -> Any:
    # onnxruntime is optional (the `export` extra): imported only when quantizing.
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            if batch is None:
                return None
            return {_INPUT: np.ascontiguousarray(batch, dtype=np.float32)}

    return Reader()


def quantize_onnx_file(
    fp32: str | Path, out: str | Path, batches: Iterable[np.ndarray | torch.Tensor]
) -> Path:
    """Statically quantize an fp32 graph written by ``export_onnx`` to INT8 (settings in the
    module docstring), activation ranges measured on ``batches`` of transformed crops
    ``(b, 3, H, W)``. Keeps the ``abdnet.*`` metadata and records the quantization; ``out``
    is written atomically. No accuracy check: :func:`quantize_int8` is the verified export."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32, out = Path(fp32), Path(out)
    metadata = {f"{_PREFIX}{k}": v for k, v in read_onnx_metadata(fp32).items()}
    arrays = (b.numpy() if torch.is_tensor(b) else b for b in batches)
    with tempfile.TemporaryDirectory(prefix="abdnet-quant-") as tmp:
        # Shape inference and graph clean-up first: without them most QDQ pairs cannot be
        # fused into integer kernels and the INT8 graph runs slower than fp32.
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantized = Path(tmp) / "int8.onnx"
        quantize_static(
            str(prepared),
            str(quantized),
            _calibration_reader(arrays),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(_QUANTIZED_OPS),
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )
        metadata[f"{_PREFIX}quantization"] = QUANTIZATION
        _set_metadata(quantized, metadata)
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(out) as target:
            shutil.copyfile(quantized, target)
    return out


def _set_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = "abdnet ABD-Net embedding network, static INT8 (raw embedding output)"
    onnx.save(proto, str(path))


def _calibration_records(dataset: ReIDDataset, count: int, seed: int) -> tuple[list[Any], str]:
    split, pool = ("train", dataset.train) if dataset.train else ("gallery", dataset.gallery)
    pool = list(pool)
    if not pool:
        raise ValueError(f"--calibration {dataset.root}: no training or gallery images")
    if len(pool) > count:
        pool = random.Random(seed).sample(pool, count)
    return pool, split


def quantize_int8(
    checkpoint_or_model: str | Path | LoadedModel,
    out: str | Path,
    calibration: str | Path | ReIDDataset,
    *,
    calibration_images: int = 256,
    max_map_drop: float = 1.0,
    flip: bool = False,
    opset: int = 17,
    atol: float = 1e-4,
    batch_size: int = 16,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> QuantizeResult:
    """Export an INT8 ONNX model of a checkpoint, verified on ``calibration`` (module docs).

    ``calibration`` is a data-set folder (any layout ``abdnet.data.open_dataset`` detects)
    or a :class:`ReIDDataset`; ``calibration_images`` crops of it calibrate the activation
    ranges. Raises :class:`QuantizationAccuracyError` (and writes nothing) when the INT8 mAP
    on its query/gallery is more than ``max_map_drop`` points below the fp32 graph's.
    ``atol`` is the fp32 export's parity tolerance (:func:`export_onnx`); ``progress`` is
    called with the number of images embedded during the two evaluations.
    """
    if calibration_images < 1:
        raise ValueError(f"--calibration-images must be >= 1, got {calibration_images}")
    if max_map_drop < 0:
        raise ValueError(f"--max-map-drop must be >= 0, got {max_map_drop}")
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give the .onnx file to write")
    loaded = checkpoint_or_model
    if not isinstance(loaded, LoadedModel):
        loaded = load_model(loaded, map_location="cpu")
    dataset = calibration
    if not isinstance(dataset, ReIDDataset):
        dataset = open_dataset(str(calibration))
    if not dataset.query or not dataset.gallery:
        raise ValueError(
            f"--calibration {dataset.root}: a query and a gallery split are needed to check the "
            f"INT8 model ({len(dataset.query)} query, {len(dataset.gallery)} gallery images)"
        )
    config = loaded.config
    records, split = _calibration_records(dataset, calibration_images, seed)
    with tempfile.TemporaryDirectory(prefix="abdnet-int8-") as tmp_dir:
        tmp = Path(tmp_dir)
        fp32_path, int8_path = tmp / "fp32.onnx", tmp / "int8.onnx"
        export_onnx(loaded, fp32_path, opset=opset, dynamic_batch=True, flip=flip, atol=atol)
        log.info("calibrating on %d %s images of %s", len(records), split, dataset.root)
        transform = build_test_transform(config.data)
        batches = (
            torch.stack([transform(dataset.read_image(r)) for r in records[i : i + batch_size]])
            for i in range(0, len(records), batch_size)
        )  # (b, 3, H, W) each, read lazily
        quantize_onnx_file(fp32_path, int8_path, batches)
        fp32, int8 = OnnxEmbedder(fp32_path), OnnxEmbedder(int8_path)
        report_fp32 = evaluate_backend(fp32, dataset, config.eval, progress=progress)
        report_int8 = evaluate_backend(int8, dataset, config.eval, progress=progress)
        result = QuantizeResult(
            path=out,
            map_fp32=report_fp32.mAP,
            map_int8=report_int8.mAP,
            rank1_fp32=report_fp32.rank(1),
            rank1_int8=report_int8.rank(1),
            calibration_images=len(records),
            calibration_split=split,
            num_query=report_fp32.num_query_used + report_fp32.num_query_skipped,
            num_gallery=report_fp32.num_gallery,
        )
        if not result.map_drop <= max_map_drop:  # also catches NaN
            raise QuantizationAccuracyError(
                f"INT8 export to {out} refused: on the query/gallery of {dataset.root} the INT8 "
                f"mAP is {100 * result.map_int8:.2f}% against {100 * result.map_fp32:.2f}% in "
                f"fp32, a drop of {result.map_drop:.2f} points > --max-map-drop {max_map_drop:g}"
            )
        metadata = {
            **{f"{_PREFIX}{k}": v for k, v in int8.metadata.items()},
            f"{_PREFIX}calibration": json.dumps(
                {"root": str(dataset.root), "split": split, "images": len(records), "seed": seed}
            ),
            f"{_PREFIX}map_fp32": f"{result.map_fp32:.6f}",
            f"{_PREFIX}map_int8": f"{result.map_int8:.6f}",
        }
        _set_metadata(int8_path, metadata)
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(out) as target:
            shutil.copyfile(int8_path, target)
    log.info(
        "wrote %s: INT8 mAP %.2f%% vs fp32 %.2f%% (drop %.2f points)",
        out,
        100 * result.map_int8,
        100 * result.map_fp32,
        result.map_drop,
    )
    return result
