"""Compare two run directories artifact by artifact (used by the Beam equality test)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from winnow.pipeline.artifacts import read_table

ATOL = 1e-5


def _is_float(t: pa.DataType) -> bool:
    return pa.types.is_floating(t) or (
        (pa.types.is_fixed_size_list(t) or pa.types.is_list(t)) and pa.types.is_floating(t.value_type)
    )


def compare_tables(a: pa.Table, b: pa.Table, where: str) -> list[str]:
    """Differences between two tables: schema (with metadata), ids, exact non-float columns,
    float columns within ATOL (nulls in the same places)."""
    problems = []
    if a.schema != b.schema or a.schema.metadata != b.schema.metadata:
        return [f"{where}: schemas differ:\n{a.schema}\nvs\n{b.schema}"]
    if a.num_rows != b.num_rows:
        return [f"{where}: {a.num_rows} vs {b.num_rows} rows"]
    for name in a.column_names:
        x, y = a[name].combine_chunks(), b[name].combine_chunks()
        if not _is_float(x.type):
            if not x.equals(y):
                problems.append(f"{where}.{name}: values differ")
            continue
        if not x.is_null().equals(y.is_null()):
            problems.append(f"{where}.{name}: nulls differ")
            continue
        if pa.types.is_floating(x.type):
            u, v = x.to_numpy(zero_copy_only=False), y.to_numpy(zero_copy_only=False)
        else:
            u, v = x.flatten().to_numpy(zero_copy_only=False), y.flatten().to_numpy(zero_copy_only=False)
        if not np.allclose(u.astype(np.float64), v.astype(np.float64), atol=ATOL, rtol=0, equal_nan=True):
            problems.append(f"{where}.{name}: max difference {np.nanmax(np.abs(u - v))}")
    return problems


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and (
            math.isclose(a, b, abs_tol=ATOL) or (math.isnan(a) and math.isnan(b)))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


def compare_stage(left: Path, right: Path, stage: str) -> list[str]:
    """Differences between one stage's folders: the same files; equal Parquet tables (sharded
    folders compared as one table), equal JSON (floats within ATOL), equal other files."""
    la, lb = left / stage, right / stage
    files_a = sorted(p.relative_to(la).as_posix() for p in la.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(lb).as_posix() for p in lb.rglob("*") if p.is_file())
    if files_a != files_b:
        return [f"{stage}: files differ: {files_a} vs {files_b}"]
    problems = []
    for rel in files_a:
        if rel == "stage.json":
            continue
        pa_, pb = la / rel, lb / rel
        if rel.endswith(".parquet"):
            problems += compare_tables(read_table(pa_), read_table(pb), f"{stage}/{rel}")
        elif rel.endswith(".json"):
            if not _close(json.loads(pa_.read_text()), json.loads(pb.read_text())):
                problems.append(f"{stage}/{rel}: JSON differs")
        elif rel.endswith(".pt"):
            import torch

            sa, sb = torch.load(pa_, weights_only=True), torch.load(pb, weights_only=True)
            if sa.keys() != sb.keys() or not all(torch.allclose(sa[k].double(), sb[k].double(), atol=ATOL) for k in sa):
                problems.append(f"{stage}/{rel}: tensors differ")
        elif pa_.read_bytes() != pb.read_bytes():
            problems.append(f"{stage}/{rel}: bytes differ")
    return problems
