"""ingest's artifacts: the manifest every later stage reads, and the feature table given to ingest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from winnow.pipeline.artifacts import read_table, read_vectors, write_table
from winnow.pipeline.rundir import RunDir
from winnow.stages.common import schema

# The summary entries a stage's metrics repeat (stage.json), for both executors.
METRIC_KEYS = ("rows", "splits", "errors", "noise", "imbalance_removed", "review")



def output_tables(result: Any) -> dict[str, pa.Table]:
    """The tables of an :class:`~winnow.stages.ingest.core.IngestResult`, by file name."""
    tables = {schema.MANIFEST: result.manifest}
    if result.features is not None:
        tables[schema.FEATURES] = result.features
    return tables


def write_summary(out: Path, result: Any) -> dict[str, Any]:
    """Write ``summary.json``; return the stage's metrics (:data:`METRIC_KEYS` of the summary)."""
    (out / schema.SUMMARY).write_text(json.dumps(result.summary, indent=2, default=str))
    return {k: v for k, v in result.summary.items() if k in METRIC_KEYS}


def write_outputs(out: Path, result: Any) -> dict[str, Any]:
    """Every file of the local ingest stage; returns its metrics."""
    for name, table in output_tables(result).items():
        write_table(table, out / name)
    return write_summary(out, result)


def load_manifest(run: RunDir) -> pa.Table:
    return read_table(run.path("ingest", schema.MANIFEST))


def ingest_features(run: RunDir) -> np.ndarray | None:
    """The embedding from a feature table given to ingest, if there was one."""
    p = run.path("ingest", schema.FEATURES, required=False)
    return None if p is None else read_vectors(p, schema.EMBEDDING)

