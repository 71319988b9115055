"""weight's artifacts: ``weights.parquet`` (one row per manifest row), one table per round, the
Meta-Weight-Net curve and the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from winnow.pipeline import contract
from winnow.pipeline.artifacts import write_table
from winnow.stages.common import schema
from winnow.stages.common.arrow import class_names, with_metadata
from winnow.stages.common.params import to_dict


def weights_table(manifest: pa.Table, train_rows: np.ndarray, result: Any, params: Any) -> pa.Table:
    """The weight core's per-train-row columns spread over every manifest row (null off the train rows)."""
    n = manifest.num_rows
    columns: dict[str, pa.Array] = {"id": manifest["id"]}
    in_train = np.zeros(n, dtype=bool)
    in_train[train_rows] = True
    for name, values in result.columns.items():
        full = np.zeros(n, dtype=values.dtype)
        full[train_rows] = values
        typ = pa.int32() if np.issubdtype(values.dtype, np.integer) else pa.float32()
        columns[name] = pa.array(full, typ, mask=~in_train)
    return with_metadata(pa.table(columns), classes=class_names(manifest), params=to_dict(params))


def write_outputs(out: Path, manifest: pa.Table, train_rows: np.ndarray, result: Any, params: Any) -> None:
    """Every file of the weight stage."""
    import torch

    table = weights_table(manifest, train_rows, result, params)
    write_table(table, out / schema.WEIGHTS)
    rounds = out / contract.ROUNDS
    rounds.mkdir()
    for name in sorted(c for c in result.columns if c.startswith("round_")):
        write_table(table.select(["id", name]), rounds / f"{name}.parquet")
    if result.curve is not None:
        write_table(pa.table({k: pa.array(np.asarray(v, dtype=np.float32)) for k, v in result.curve.items()}),
                    out / contract.MWN_CURVE)
    torch.save(result.model_state, out / contract.MODEL)
