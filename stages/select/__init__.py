"""Select stage: per-class coresets by facility location (CRAIG weights) or set cover, on FAISS.

Entry points: :func:`stages.select.core.select` (the pipeline's core) and
:func:`stages.select.online.reselect` (called by the weight stage every E epochs).
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use, so that reading a stage's parameters does not load torch.
_EXPORTS = {
    "SelectResult": "stages.select.core",
    "select": "stages.select.core",
    "split_budget": "stages.select.core",
    "reselect": "stages.select.online",
    "SelectParams": "stages.select.params",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
