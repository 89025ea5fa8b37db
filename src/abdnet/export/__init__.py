"""abdnet.export: ONNX export (fp32, INT8) with the ONNX Runtime backend, and the
Hugging-Face model folder.

onnx and onnxruntime are imported only when exporting or running a model.
"""

from abdnet.export.hf import CARD_FILENAME, CONFIG_FILENAME, HfExportResult, RunMetrics, export_hf
from abdnet.export.onnx import (
    ONNX_FORMAT_VERSION,
    EmbeddingGraph,
    ExportParityError,
    OnnxEmbedder,
    OnnxExportResult,
    export_onnx,
)

__all__ = [
    "CARD_FILENAME",
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
