"""export's artifacts: the upstream tables it uses when present, its four outputs, and what a
missing upstream stage leaves out of them (said on the terminal, not only in summary.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from winnow.pipeline.artifacts import column_names, read_table, read_vectors, write_table
from winnow.pipeline.io.ingest import load_manifest
from winnow.pipeline.rundir import RunDir
from winnow.stages.common import schema
from winnow.stages.common.arrow import vectors_to_arrow

# The columns of features.parquet that export reads: grad_embedding (C times the embedding's
# width) is never decoded here (issue 17: it was most of export's memory).
FEATURE_COLUMNS = ("id", schema.EMBEDDING, schema.PROBS)


def optional_table(run: RunDir, stage: str, name: str) -> pa.Table | None:
    p = run.path(stage, name, required=False)
    return None if p is None else read_table(p)


def feature_table(run: RunDir, stage: str) -> pa.Table | None:
    """The stage's features.parquet as :data:`FEATURE_COLUMNS`, or None when it has not run.

    The vectors are read by :func:`read_vectors` (a batch of rows decoded at a time into one
    array) and wrapped without a copy: decoding a whole vector column at once held about twice
    the column again (1M x 128: 2.3 GB peak for 0.55 GB of vectors). NaN rows stay NaN.
    """
    p = run.path(stage, schema.FEATURES, required=False)
    if p is None:
        return None
    names = column_names(p)
    ids = read_table(p, columns=["id"])
    columns = {"id": ids["id"]}
    for name in FEATURE_COLUMNS[1:]:
        if name in names:
            columns[name] = vectors_to_arrow(read_vectors(p, name))
    return pa.table(columns).replace_schema_metadata(ids.schema.metadata)


def upstream_tables(run: RunDir) -> tuple[pa.Table | None, pa.Table | None, pa.Table | None]:
    """features (embed's, else a feature table given to ingest; :data:`FEATURE_COLUMNS`), coreset
    and weights: each None when its stage has not run (both executors)."""
    features = feature_table(run, "embed")
    if features is None:
        features = feature_table(run, "ingest")
    return features, optional_table(run, "select", schema.CORESET), optional_table(run, "weight", schema.WEIGHTS)


def export_result(run: RunDir, params: Any, *, seed: int) -> Any:
    """Run the export core on whatever upstream artifacts exist (the local executor; evaluate)."""
    from winnow.stages.export.core import export

    return export(load_manifest(run), *upstream_tables(run), params, seed=seed)


def export_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: summary[k] for k in ("flagged", "noise_estimate", "threshold", "train_rows", "fdr")
                           if k in summary}
    if "audit" in summary:
        out["audit"] = audit_counts(summary["audit"])
    return out


def audit_counts(audit: dict[str, Any]) -> dict[str, Any]:
    """The audit's headline numbers (summary.json has the examples, the overlap matrix, the balance)."""
    dups, outliers = audit.get("duplicates") or {}, audit.get("outliers") or {}
    return {"exact_duplicates": dups.get("exact"), "near_duplicates": dups.get("near"),
            "test_rows_leaked": (dups.get("leakage") or {}).get("rows"), "outliers": outliers.get("flagged"),
            "near_empty_classes": (audit.get("class_balance") or {}).get("near_empty_classes")}


def write_summary(out: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Write ``summary.json``; return the stage's metrics (both executors)."""
    (out / schema.SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
    return export_metrics(summary)


def write_outputs(out: Path, result: Any, params: Any) -> dict[str, Any]:
    """Every file of the local export stage; returns its metrics."""
    for name, table in ((schema.CURATED, result.curated), (schema.TRAIN_MANIFEST, result.train),
                        (schema.FLAGS, result.flags)):
        write_table(table, out / name, shard_rows=params.shard_rows)
    return write_summary(out, result.summary)


def load_curated(run: RunDir) -> pa.Table:
    return read_table(run.path("export", schema.CURATED))


def missing_upstream(run: RunDir) -> list[str]:
    """What an export of this run lacks because an upstream stage has not run, each line naming the
    command that provides it (empty when nothing is missing).

    The result is still what export can compute from what exists (it exits 0): without embed no
    row is scored, so nothing is flagged and train.parquet holds every usable row with weight 1;
    without weight the train weights come from the flags alone. Only a policy that cannot be
    honoured (``--policy coreset`` without select) is an error, raised by the stage itself.
    """
    summary = json.loads(run.path("export", schema.SUMMARY).read_text())
    inputs, policy, root = summary.get("inputs", {}), summary.get("policy"), run.root
    lines = []
    if not inputs.get("features", True):
        lines.append(f"export: no embeddings or class probabilities (run `winnow embed --run-dir {root}`, then "
                     "export again): no row was scored, so nothing is flagged and train.parquet holds every "
                     "usable row with weight 1")
    elif not inputs.get("weights", True) and policy in ("weight", "coreset+weight"):
        lines.append(f"export: no weights (run `winnow weight --run-dir {root}`, then export again); the curated "
                     f"manifest has no weight columns, and --policy {policy} weighs train rows by the flags alone "
                     "(0 if flagged, else 1)")
    return lines
