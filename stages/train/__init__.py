"""Consume curated manifests: a torch Dataset, a weighted sampler and loss, and the reference trainer."""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use, so that reading a stage's parameters does not load torch.
_EXPORTS = {
    "TrainResult": "stages.train.core",
    "train_model": "stages.train.core",
    "ManifestDataset": "stages.train.dataset",
    "weighted_loss": "stages.train.dataset",
    "weighted_sampler": "stages.train.dataset",
    "TrainParams": "stages.train.params",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
