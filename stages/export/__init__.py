"""Export stage: noise scores, calibrated flags, suggested labels and the curated manifests."""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use, so that reading a stage's parameters does not load torch.
_EXPORTS = {
    "ExportResult": "stages.export.core",
    "export": "stages.export.core",
    "evaluate_flags": "stages.export.evaluate",
    "ExportParams": "stages.export.params",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
