"""ingest: any supported source -> one validated manifest with a trusted split."""

from winnow.stages.common.lazy import lazy_exports

# Imported on first use, so that reading a stage's parameters does not load torch.
__getattr__, __all__ = lazy_exports(__name__, {
    "IngestError": "winnow.stages.ingest.core",
    "IngestResult": "winnow.stages.ingest.core",
    "ingest": "winnow.stages.ingest.core",
    "IngestParams": "winnow.stages.ingest.params",
})
