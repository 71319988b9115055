"""Export stage: noise scores, calibrated flags, suggested labels and the curated manifests."""

from stages.export.core import ExportResult, export
from stages.export.evaluate import evaluate_flags
from stages.export.params import ExportParams

__all__ = ["ExportParams", "ExportResult", "evaluate_flags", "export"]
