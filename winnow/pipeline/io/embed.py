"""embed's artifacts: ``features.parquet`` from a result, and vector columns read back by later stages."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
    valid = np.asarray(result.valid, dtype=bool)
    ingest_errors = manifest["error"].to_pylist()
    errors = [ingest or found for ingest, found in zip(ingest_errors, result.errors)]
    table = pa.table(
        {
            "id": manifest["id"],
            schema.EMBEDDING: vectors_to_arrow(result.embedding, valid=valid),
            schema.PROBS: vectors_to_arrow(result.probs, valid=valid),
            schema.GRAD_EMBEDDING: vectors_to_arrow(result.grad_embedding, valid=valid),
            "error": pa.array(errors, pa.string()),
        }
    )
    return with_metadata(table, classes=class_names(manifest), params=to_dict(params))

