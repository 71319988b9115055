"""One view of a manifest's rows: which are usable, their labels and splits as numpy arrays.

"Usable" means the same thing in every stage and both executors: the row has no ``error``
and, when the table has a ``label`` column, a label. A table without an ``error`` column
(a user's own manifest read back by the trainer, say) has every row usable.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def usable_mask(table: pa.Table, *, need_label: bool = True) -> np.ndarray:
    """Boolean ``(n,)`` mask of the rows that can be used.

    Parameters
    ----------
    table : pa.Table
        A manifest-shaped table (``error`` and ``label`` columns are optional).
    need_label : bool, default True
        Also require a non-null ``label`` where the table has that column.
    """
    ok = np.ones(len(table), dtype=bool)
    if "error" in table.column_names:
        ok &= np.asarray(pc.is_null(table.column("error")).to_numpy(zero_copy_only=False), dtype=bool)
    if need_label and "label" in table.column_names:
        ok &= np.asarray(pc.is_valid(table.column("label")).to_numpy(zero_copy_only=False), dtype=bool)
    return ok


def labels_array(table: pa.Table) -> np.ndarray:
    """Given labels as a writable int64 copy, -1 where missing."""
    return table.column("label").fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def split_array(table: pa.Table) -> np.ndarray:
    """The ``split`` column as an object array of strings (None where missing)."""
    return np.asarray(table.column("split").to_pylist(), dtype=object)
