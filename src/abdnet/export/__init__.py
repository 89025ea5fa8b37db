"""abdnet.export: ONNX export (fp32, INT8), the ONNX Runtime and OpenVINO backends, the
automatic choice of the fastest backend, and the Hugging-Face model folder.

onnx, onnxruntime and openvino are imported only when exporting or running a model.
"""

from abdnet.export.backend import (
    BACKENDS,
    COSINE_MIN,
    PROBE_BATCH,
    Backend,
    BackendChoice,
    Measurement,
    choose_backend,
    select_backend,
)
from abdnet.export.evaluate import evaluate_backend
from abdnet.export.hf import CARD_FILENAME, CONFIG_FILENAME, HfExportResult, RunMetrics, export_hf
from abdnet.export.onnx import (
    ONNX_FORMAT_VERSION,
    EmbeddingGraph,
    ExportParityError,
    OnnxEmbedder,
    OnnxExportResult,
    export_onnx,
)
from abdnet.export.openvino import OPENVINO_PRECISIONS, OpenVinoEmbedder
from abdnet.export.quantize import (
    QuantizationAccuracyError,
    QuantizeResult,
    quantize_int8,
    quantize_onnx_file,
)

__all__ = [
    "BACKENDS",
    "COSINE_MIN",
    "PROBE_BATCH",
    "Backend",
    "BackendChoice",
    "Measurement",
    "choose_backend",
    "select_backend",
    "CARD_FILENAME",
    "OPENVINO_PRECISIONS",
    "OpenVinoEmbedder",
    "QuantizationAccuracyError",
    "QuantizeResult",
    "evaluate_backend",
    "quantize_int8",
    "quantize_onnx_file",
    "CONFIG_FILENAME",
    "HfExportResult",
    "RunMetrics",
    "export_hf",
    "ONNX_FORMAT_VERSION",
    "EmbeddingGraph",
    "ExportParityError",
    "OnnxEmbedder",
    "OnnxExportResult",
    "export_onnx",
]
