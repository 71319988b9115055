"""Export stage: noise scores, calibrated flags, suggested labels and the curated manifests."""

from stages.common.lazy import lazy_exports

# Imported on first use, so that reading a stage's parameters does not load torch.
__getattr__, __all__ = lazy_exports(__name__, {
    "ExportResult": "stages.export.core",
    "export": "stages.export.core",
    "evaluate_flags": "stages.export.evaluate",
    "ExportParams": "stages.export.params",
})
