"""select's artifacts: its inputs (vectors, labels, eligible rows) and ``coreset.parquet``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from winnow.pipeline.io.embed import feature_vectors
from winnow.pipeline.io.ingest import load_manifest
from winnow.pipeline.rundir import RunDir
from winnow.stages.common import schema
from winnow.stages.common.arrow import class_names, with_metadata
from winnow.stages.common.params import to_dict
from winnow.stages.common.rows import labels_array, split_array, usable_mask


def select_inputs(run: RunDir, params: Any) -> tuple[pa.Table, np.ndarray, np.ndarray, np.ndarray]:
    """Manifest, vectors (of ``params.space``), labels (-1 if missing) and the eligible rows:
    usable train rows with finite vectors (both executors)."""
    manifest = load_manifest(run)
    vectors = feature_vectors(run, params.space)
    eligible = usable_mask(manifest) & (split_array(manifest) == schema.TRAIN) & np.isfinite(vectors).all(axis=1)
    return manifest, vectors, labels_array(manifest), eligible



def coreset_table(manifest: pa.Table, cols: dict[str, np.ndarray], params: Any) -> pa.Table:
    """``coreset.parquet`` from the select core's columns (both executors)."""
    table = pa.table(
        {
            "id": manifest["id"],
            "selected": pa.array(cols["selected"], pa.bool_()),
            "cluster_id": pa.array(cols["cluster_id"], pa.int64(), mask=cols["cluster_id"] < 0),
            "coreset_weight": pa.array(cols["coreset_weight"], pa.float32()),
            "gain": pa.array(cols["gain"], pa.float32(), mask=np.isnan(cols["gain"])),
            "rank": pa.array(cols["rank"], pa.int32(), mask=cols["rank"] < 0),
            "method": pa.array([params.method] * manifest.num_rows, pa.string()),
        },
        schema=schema.CORESET_SCHEMA,
    )
    return with_metadata(table, classes=class_names(manifest), params=to_dict(params))

