"""Arrow <-> numpy for the vector columns (``fixed_size_list<float32>``) and table metadata."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from winnow.stages.common import schema


def vectors_to_arrow(vectors: np.ndarray, valid: np.ndarray | None = None) -> pa.FixedSizeListArray:
    """Wrap an ``(n, d)`` float array as a ``fixed_size_list<float32, d>`` column.

    Rows where ``valid`` is False are written as all-NaN vectors, not as nulls: pyarrow (25.0)
    cannot read back a Parquet fixed_size_list column with null entries ("Expected all lists
    to be of size=d"). A NaN vector can never pass for data, and the row's ``error`` says why.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"expected a 2-D array of vectors, got shape {vectors.shape}")
    n, d = vectors.shape
    if valid is not None and not np.all(valid):
        vectors = vectors.copy()
        vectors[~np.asarray(valid, dtype=bool)] = np.nan
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), d)


def vectors_from_arrow(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Read a ``fixed_size_list<float32>`` column as an ``(n, d)`` float32 array.

    Zero-copy when the column is a single chunk (the usual case for a table read from one
    Parquet file); null rows read as NaN so that they can never pass for real data.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if not pa.types.is_fixed_size_list(column.type):
        raise TypeError(f"expected a fixed_size_list column, got {column.type}")
    d = column.type.list_size
    n = len(column)
    flat = column.values.slice(column.offset * d, n * d)
    out = flat.to_numpy(zero_copy_only=flat.null_count == 0, writable=False).reshape(n, d)
    if column.null_count:
        out = out.astype(np.float32, copy=True)
        out[~column.is_valid().to_numpy(zero_copy_only=False)] = np.nan
    return out


def with_metadata(
    table: pa.Table, *, classes: Sequence[str] | None = None, params: Mapping[str, Any] | None = None
) -> pa.Table:
    """Attach class names and the producing stage's parameters as schema metadata."""
    meta = dict(table.schema.metadata or {})
    if classes is not None:
        meta[schema.META_CLASSES] = json.dumps(list(classes)).encode()
    if params is not None:
        meta[schema.META_PARAMS] = json.dumps(params, sort_keys=True, default=str).encode()
    return table.replace_schema_metadata(meta)


def class_names(table_or_schema: pa.Table | pa.Schema) -> list[str]:
    """Class names stored on a winnow table (index = label)."""
    sch = table_or_schema.schema if isinstance(table_or_schema, pa.Table) else table_or_schema
    raw = (sch.metadata or {}).get(schema.META_CLASSES)
    if raw is None:
        raise KeyError("table has no winnow.classes metadata; was it written by winnow?")
    return list(json.loads(raw))


def as_arrow_table(obj: Any, *, name: str = "table") -> pa.Table:
    """``obj`` as a :class:`pyarrow.Table`: a pyarrow table as it is, or any table that speaks
    Arrow (pandas and polars DataFrames, a DuckDB relation, a record batch).

    Tables that implement the Arrow PyCapsule interface (``__arrow_c_stream__``: polars, DuckDB,
    pyarrow) are read through it without a copy; a pandas DataFrame goes through
    ``pa.Table.from_pandas`` with its index and pandas' schema metadata left out (a default
    ``RangeIndex`` is no data).

    Raises
    ------
    TypeError
        For anything else, naming ``name`` (the argument) and the type received.
    """
    if isinstance(obj, pa.Table):
        return obj
    if isinstance(obj, pa.RecordBatch):
        return pa.Table.from_batches([obj])
    module = type(obj).__module__.split(".")[0]
    if module == "pandas" and hasattr(obj, "columns"):
        return pa.Table.from_pandas(obj, preserve_index=False).replace_schema_metadata(None)
    if hasattr(obj, "__arrow_c_stream__"):
        return pa.table(obj)
    raise TypeError(f"{name}: expected a table (pyarrow Table, pandas or polars DataFrame, or any object with "
                    f"__arrow_c_stream__), got {type(obj).__module__}.{type(obj).__qualname__}")
