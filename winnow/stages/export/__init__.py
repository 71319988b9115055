"""Export stage: noise scores, calibrated flags, suggested labels and the curated manifests."""

from winnow.stages.common.lazy import lazy_exports

# Imported on first use, so that reading a stage's parameters does not load torch.
__getattr__, __all__ = lazy_exports(__name__, {
    "ExportResult": "winnow.stages.export.core",
    "export": "winnow.stages.export.core",
    "evaluate_flags": "winnow.stages.export.evaluate",
    "ExportParams": "winnow.stages.export.params",
})
