"""abdnet.export: ONNX export of the embedding network and the ONNX Runtime backend.

onnx and onnxruntime are imported only when exporting or running a model.
"""

from abdnet.export.onnx import (
    ONNX_FORMAT_VERSION,
    EmbeddingGraph,
    ExportParityError,
    OnnxEmbedder,
    OnnxExportResult,
    export_onnx,
)

__all__ = [
    "ONNX_FORMAT_VERSION",
    "EmbeddingGraph",
    "ExportParityError",
    "OnnxEmbedder",
    "OnnxExportResult",
    "export_onnx",
]
