"""The embed stage: embeddings, cross-fitted out-of-sample probabilities and gradient embeddings."""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use, so that reading a stage's parameters does not load torch.
_EXPORTS = {
    "EmbedResult": "stages.embed.core",
    "run_embed": "stages.embed.core",
    "EmbedParams": "stages.embed.params",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
