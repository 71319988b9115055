"""ingest: any supported source -> one validated manifest with a trusted split."""

from stages.common.lazy import lazy_exports

# Imported on first use, so that reading a stage's parameters does not load torch.
__getattr__, __all__ = lazy_exports(__name__, {
    "IngestError": "stages.ingest.core",
    "IngestResult": "stages.ingest.core",
    "ingest": "stages.ingest.core",
    "IngestParams": "stages.ingest.params",
})
