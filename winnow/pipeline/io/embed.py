"""embed's artifacts: ``features.parquet`` from a result, and vector columns read back by later stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from winnow.pipeline.artifacts import column_names, read_vectors
from winnow.pipeline.io.ingest import load_manifest
from winnow.pipeline.rundir import RunDir
from winnow.stages.common import schema
from winnow.stages.common.arrow import class_names, vectors_to_arrow, with_metadata
from winnow.stages.common.params import to_dict


def feature_vectors(run: RunDir, column: str) -> np.ndarray:
    """A vector column from embed's features.parquet, or (embedding only) from ingest's table."""
    p = run.path("embed", schema.FEATURES, required=False)
    if p is None and column == schema.EMBEDDING:
        p = run.path("ingest", schema.FEATURES, required=False)
    if p is None:
        p = run.path("embed", schema.FEATURES)  # raises with the command to run
    names = column_names(p)
    if column not in names:
        raise ValueError(f"{p} has no column {column!r}; vector columns there: "
                         f"{', '.join(n for n in names if n not in ('id', 'error'))}")
    return read_vectors(p, column)


def with_feature_column(run: RunDir, table: pa.Table | None, column: str, *, what: str) -> pa.Table | None:
    """``table`` with the vector ``column`` of the run's features table joined by id, if it lacks it.

    Manifests (``train.parquet``, the test split) carry no feature vectors: they live in
    ``features.parquet`` (joinable on ``id``), so ``train --features embedding`` joins them here.
    """
    if table is None or not column or column in table.column_names:
        return table
    vectors = feature_vectors(run, column)
    ids = load_manifest(run)["id"].cast(pa.string())
    pos = pc.index_in(table["id"].cast(pa.string()), value_set=ids)
    if pos.null_count:
        first = table["id"][int(np.flatnonzero(pc.is_null(pos).to_numpy(zero_copy_only=False))[0])].as_py()
        raise ValueError(f"--features {column}: {pos.null_count} row(s) of the {what} are not in this run's "
                         f"manifest (e.g. id {first!r}), so they have no {column!r}; add a {column!r} column to it")
    return table.append_column(column, vectors_to_arrow(vectors[pos.to_numpy()]))



def features_table(manifest: pa.Table, result: Any, params: Any) -> pa.Table:
    """``features.parquet`` from an :class:`winnow.stages.embed.core.EmbedResult` (both executors).

    ``error`` is the manifest's (ingest) error where there is one, else the error embed found:
    a row that cannot be used keeps its reason in every table. Vectors are written as computed,
    NaN included (never ``nan_to_num``: a zero vector would pass for data on a valid row).
    """
    return _features_rows(manifest, result, 0, manifest.num_rows, classes=class_names(manifest),
                          params=to_dict(params))


def _features_rows(manifest: pa.Table, result: Any, start: int, stop: int, *, classes: list[str],
                   params: dict[str, Any]) -> pa.Table:
    """Rows ``start:stop`` of :func:`features_table` (a lazy gradient embedding computes only them)."""
    valid = np.asarray(result.valid[start:stop], dtype=bool)
    ingest_errors = manifest["error"].slice(start, stop - start).to_pylist()
    errors = [ingest or found for ingest, found in zip(ingest_errors, result.errors[start:stop])]
    grad = result.grad_embedding
    grad = grad.block(start, stop) if hasattr(grad, "block") else grad[start:stop]  # LazyGradientEmbedding
    table = pa.table(
        {
            "id": manifest["id"].slice(start, stop - start),
            schema.EMBEDDING: vectors_to_arrow(result.embedding[start:stop], valid=valid),
            schema.PROBS: vectors_to_arrow(result.probs[start:stop], valid=valid),
            schema.GRAD_EMBEDDING: vectors_to_arrow(grad, valid=valid),
            "error": pa.array(errors, pa.string()),
        }
    )
    return with_metadata(table, classes=classes, params=params)


# Bytes of vectors per row group of features.parquet: the writer holds one batch of rows, not the
# (n, C * h) gradient embedding (5 kB a row at 10 classes x 128 dims).
FEATURES_BATCH_BYTES = 128 << 20


def features_batch_rows(result: Any) -> int:
    """Rows per batch written by :func:`write_features`: a multiple of 4096 near
    :data:`FEATURES_BATCH_BYTES` of vectors."""
    width = sum(int(np.shape(v)[1]) for v in (result.embedding, result.probs)) + result.grad_embedding.shape[1]
    return max(4096, FEATURES_BATCH_BYTES // (4 * width) // 4096 * 4096)


def write_features(path: Path, manifest: pa.Table, result: Any, params: Any, *, batch_rows: int = 0) -> None:
    """Write :func:`features_table` to ``path`` one row group of ``batch_rows`` rows at a time
    (default :func:`features_batch_rows`): the same columns and values, never held whole."""
    n = manifest.num_rows
    batch_rows = batch_rows or features_batch_rows(result)
    classes, meta = class_names(manifest), to_dict(params)
    writer = None
    try:
        for start in range(0, max(n, 1), batch_rows):
            part = _features_rows(manifest, result, start, min(n, start + batch_rows), classes=classes, params=meta)
            if writer is None:
                writer = pq.ParquetWriter(path, part.schema)
            writer.write_table(part, row_group_size=batch_rows)
    finally:
        if writer is not None:
            writer.close()
