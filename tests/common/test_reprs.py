"""Result objects print short: shapes and names, never whole tables, arrays or PNG bytes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from winnow.stages.common.reprs import describe
from winnow.stages.embed.core import EmbedResult
from winnow.stages.ingest.core import IngestResult
from winnow.stages.select.core import SelectResult
from winnow.stages.train.core import TrainResult
from winnow.stages.weight.core import WeightResult

N = 5000
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200


def test_describe_gives_shapes_not_contents():
    table = pa.table({"id": [str(i) for i in range(N)], "image": [PNG] * N})
    assert describe(table) == "Table(rows=5000, columns=[id, image])"
    assert describe(np.zeros((N, 3), np.float32)) == "array(shape=(5000, 3), dtype=float32)"
    assert describe(torch.zeros(2, 3)) == "Tensor(shape=(2, 3), dtype=torch.float32)"
    assert describe({f"c{i}": 1 for i in range(12)}) == "dict(keys=[c0, c1, c2, c3, c4, c5, c6, c7, ... 4 more])"
    assert describe("x" * 100).endswith("...'") and len(describe("x" * 100)) < 70
    assert describe([None] * N) == "list(length=5000)"


def test_every_stage_result_repr_is_short():
    big = np.zeros((N, 64), np.float32)
    state = {f"layer{i}.weight": torch.zeros(64, 64) for i in range(10)}
    results = [
        EmbedResult(embedding=big, probs=big[:, :10], grad_embedding=big, valid=np.ones(N, bool),
                    errors=[None] * N, model_state=state, metrics={"images_per_s": 1.0}),
        SelectResult(columns={"selected": np.ones(N, bool), "rank": np.arange(N)}, metrics={"method": "fl"}),
        WeightResult(columns={"weight": np.ones(N, np.float32)}, curve=None, model_state=state, metrics={}),
        TrainResult(model_state=state, metrics={"test_accuracy": 0.5}),
        IngestResult(manifest=pa.table({"id": [str(i) for i in range(N)], "image": [PNG] * N}), features=None,
                     summary={"rows": N}),
    ]
    for result in results:
        text = repr(result)
        assert text.startswith(type(result).__name__ + "(") and len(text) < 600, text
    assert "embedding=array(shape=(5000, 64), dtype=float32)" in repr(results[0])
    assert "model_state=dict(10 arrays)" in repr(results[3])
    assert "columns=dict(2 arrays: [selected, rank])" in repr(results[1])
