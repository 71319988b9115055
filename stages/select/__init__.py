"""Select stage: per-class coresets by facility location (CRAIG weights) or set cover, on FAISS.

Entry points: :func:`stages.select.core.select` (the pipeline's core) and
:func:`stages.select.online.reselect` (called by the weight stage every E epochs).
"""

from stages.common.lazy import lazy_exports

# Imported on first use, so that reading a stage's parameters does not load torch.
__getattr__, __all__ = lazy_exports(__name__, {
    "SelectResult": "stages.select.core",
    "select": "stages.select.core",
    "split_budget": "stages.select.core",
    "reselect": "stages.select.online",
    "SelectParams": "stages.select.params",
})
