"""ingest: any supported source -> one validated manifest with a trusted split."""

from stages.ingest.core import IngestError, IngestResult, ingest
from stages.ingest.params import IngestParams

__all__ = ["IngestError", "IngestParams", "IngestResult", "ingest"]
