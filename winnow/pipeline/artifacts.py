"""Parquet I/O for the artifacts: memory-mapped reads, vector columns into numpy without copying,
and sharded writes for large tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from winnow.stages.common.arrow import vectors_from_arrow

# One row group per file up to this many rows, so vector columns read back as a single chunk.
ROW_GROUP_ROWS = 1 << 20


def write_table(table: pa.Table, path: Path, *, shard_rows: int = 0) -> list[Path]:
    """Write ``table`` to ``path``; with ``shard_rows`` and more rows than that, write a folder
    ``path/part-00000.parquet, ...`` instead (any Parquet reader takes the folder as one table)."""
    if shard_rows and table.num_rows > shard_rows:
        path.mkdir(parents=True, exist_ok=True)
        out = []
        for i, start in enumerate(range(0, table.num_rows, shard_rows)):
            part = path / f"part-{i:05d}.parquet"
            pq.write_table(table.slice(start, shard_rows), part, row_group_size=ROW_GROUP_ROWS)
            out.append(part)
        return out
    pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS)
    return [path]


def read_table(path: Path, *, columns: list[str] | None = None) -> pa.Table:
    """Read a Parquet file (memory-mapped) or a sharded folder written by :func:`write_table`."""
    if path.is_dir():
        table = ds.dataset(sorted(path.glob("part-*.parquet")), format="parquet").to_table(columns=columns)
        first = pq.read_schema(next(iter(sorted(path.glob("part-*.parquet")))))
        return table.replace_schema_metadata(first.metadata)
    return pq.read_table(path, columns=columns, memory_map=True)


def column_names(path: Path) -> list[str]:
    """The columns of a Parquet file or sharded folder, without reading any data."""
    if path.is_dir():
        path = next(iter(sorted(path.glob("part-*.parquet"))))
    return pq.read_schema(path).names


# Rows decoded at a time by read_vectors: a (d,)-vector column decodes with per-value levels and
# buffers several times its size, so a whole 300k-row group cost 4x the array (issue 17).
VECTOR_BATCH_ROWS = 65536


def read_vectors(path: Path, column: str) -> np.ndarray:
    """One ``fixed_size_list<float32>`` column as an (n, d) float32 array (null rows NaN).

    Decoded :data:`VECTOR_BATCH_ROWS` rows at a time into one preallocated array (files, row
    groups and batches alike), so the peak is the array plus one batch, not the decoded column
    plus its levels and a concatenation of its chunks.
    """
    files = sorted(path.glob("part-*.parquet")) if path.is_dir() else [path]
    parts = [pq.ParquetFile(f, memory_map=True) for f in files]
    typ = parts[0].schema_arrow.field(column).type
    if not pa.types.is_fixed_size_list(typ):
        raise TypeError(f"expected a fixed_size_list column, got {typ}")
    out = np.empty((sum(p.metadata.num_rows for p in parts), typ.list_size), np.float32)
    start = 0
    for part in parts:
        for batch in part.iter_batches(batch_size=VECTOR_BATCH_ROWS, columns=[column]):
            block = vectors_from_arrow(batch.column(0))
            out[start:start + len(block)] = block
            start += len(block)
    return out
