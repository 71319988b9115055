"""Short reprs for the stage cores' result objects.

A dataclass's default repr prints every field in full: a result holding a 100k-row table (PNG
bytes included) or a model's state_dict floods a notebook cell. :func:`short_repr` describes each
field by its shape instead (rows and columns, array shape and dtype, tensor count, dict keys).
Use it as ``__repr__ = short_repr`` in a dataclass body (``@dataclass`` keeps a ``__repr__`` the
class defines).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pyarrow as pa

MAX_NAMES = 8  # column names / dict keys shown before "..."


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES])
    return f"[{shown}, ... {len(names) - MAX_NAMES} more]" if len(names) > MAX_NAMES else f"[{shown}]"


def describe(value: Any) -> str:
    """A one-line description of ``value`` that never prints its contents in full."""
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    if isinstance(value, pa.Table):
        return f"Table(rows={value.num_rows}, columns={_names(value.column_names)})"
    if isinstance(value, (pa.Array, pa.ChunkedArray)):
        return f"{type(value).__name__}(length={len(value)}, type={value.type})"
    if isinstance(value, np.ndarray):
        return f"array(shape={value.shape}, dtype={value.dtype})"
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):  # torch.Tensor and other array types
        return f"{type(value).__name__}(shape={tuple(shape)}, dtype={value.dtype})"
    if isinstance(value, dict):
        if value and all(hasattr(v, "shape") for v in value.values()):  # columns, or a state_dict
            names = f": {_names([str(k) for k in value])}" if len(value) <= MAX_NAMES else ""
            return f"dict({len(value)} arrays{names})"
        return f"dict(keys={_names([str(k) for k in value])})"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}(length={len(value)})"
    return f"<{type(value).__name__}>"


def short_repr(self: Any) -> str:
    """``ClassName(field=<description>, ...)`` for a dataclass instance (see :func:`describe`)."""
    fields = ", ".join(f"{f.name}={describe(getattr(self, f.name))}" for f in dataclasses.fields(self) if f.repr)
    return f"{type(self).__name__}({fields})"
