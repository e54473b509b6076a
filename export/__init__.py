"""Exporters of the EfficientTAM stages to ExecuTorch (.pte), Core ML (.mlpackage) and ONNX,
described by one manifest.json (installed as the import package `etam_export`)."""
from .common import FP16_MIN_PSNR, ExportError, artifact_sha256, example_inputs, parity
from .exporter import PRECISIONS, export_model, parse_targets

__all__ = ["ExportError", "export_model", "parse_targets", "PRECISIONS", "example_inputs", "parity",
           "artifact_sha256", "FP16_MIN_PSNR"]
