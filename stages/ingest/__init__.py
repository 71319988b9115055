"""ingest: any supported source -> one validated manifest with a trusted split."""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use, so that reading a stage's parameters does not load torch.
_EXPORTS = {
    "IngestError": "stages.ingest.core",
    "IngestResult": "stages.ingest.core",
    "ingest": "stages.ingest.core",
    "IngestParams": "stages.ingest.params",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
