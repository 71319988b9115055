"""Select stage: per-class coresets by facility location (CRAIG weights) or set cover, on FAISS.

Entry points: :func:`winnow.stages.select.core.select` (the pipeline's core) and
:func:`winnow.stages.select.online.reselect` (called by the weight stage every E epochs).
"""

from winnow.stages.common.lazy import lazy_exports

# Imported on first use, so that reading a stage's parameters does not load torch.
__getattr__, __all__ = lazy_exports(__name__, {
    "SelectResult": "winnow.stages.select.core",
    "select": "winnow.stages.select.core",
    "split_budget": "winnow.stages.select.core",
    "reselect": "winnow.stages.select.online",
    "SelectParams": "winnow.stages.select.params",
})
