"""Select stage: per-class coresets by facility location (CRAIG weights) or set cover, on FAISS.

Entry points: :func:`stages.select.core.select` (the pipeline's core) and
:func:`stages.select.online.reselect` (called by the weight stage every E epochs).
"""

from stages.select.core import SelectResult, select, split_budget
from stages.select.online import reselect
from stages.select.params import SelectParams

__all__ = ["SelectParams", "SelectResult", "reselect", "select", "split_budget"]
