"""select on Beam: one group per class (``GroupByKey`` on the label), each solved on a worker by
:func:`winnow.stages.select.core.select` (FAISS kNN graph, greedy, CRAIG weights) with that class's
share of the budget; the per-class results are joined back onto the manifest rows.

Calling the core on one class with its budget share reproduces the local run exactly: the
local core solves the classes independently with the same per-class seed ``[seed, label]``
and the budget split of :func:`winnow.stages.select.core.split_budget` over every class's size,
which the workers get as a side input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np

from winnow.pipeline.beam.io import (
    CollectToFolder,
    create_via_files,
    read_collected,
    temp_folder,
    write_tables,
)
from winnow.pipeline.beam.options import pipeline_options
from winnow.pipeline.runner import StageContext
from winnow.stages.common import schema
from winnow.stages.select.core import (
    SelectResult,
    check_inputs,
    empty_columns,
    select,
    select_metrics,
    split_budget,
)
from winnow.stages.select.params import SelectParams

CHUNK_ROWS = 1024  # rows per element on the way in


class _SelectClass(beam.DoFn):
    """(label, [(rows, vectors), ...]) -> (label, rows, columns, metrics) for one class."""

    def __init__(self, params: SelectParams, seed: int, device: str) -> None:
        self.params, self.seed, self.device = params, seed, device

    def process(self, element: tuple[int, Iterable[tuple[np.ndarray, np.ndarray]]],
                sizes: dict[int, int]) -> Iterator[tuple[int, np.ndarray, dict[str, np.ndarray], dict[str, Any]]]:
        label, chunks = element
        chunks = list(chunks)
        rows = np.concatenate([r for r, _ in chunks])
        vectors = np.concatenate([v for _, v in chunks])
        order = np.argsort(rows, kind="stable")  # the local core takes a class's rows in manifest order
        rows, vectors = rows[order], vectors[order]
        classes = sorted(sizes)
        budgets = split_budget(np.array([sizes[c] for c in classes]), self.params.budget, self.params.per_class_budget)
        params = dataclasses.replace(self.params, budget=float(budgets[classes.index(label)]), workers=1)
        result = select(vectors, np.full(len(rows), label, np.int64), np.ones(len(rows), bool), params,
                        seed=self.seed, device=self.device)
        yield label, rows, result.columns, result.metrics["per_class"][str(label)]


def _chunks(vectors: np.ndarray, labels: np.ndarray, eligible: np.ndarray) -> list[tuple[int, tuple[np.ndarray, np.ndarray]]]:
    """(label, (rows, vectors)) elements of at most CHUNK_ROWS rows of one class."""
    out = []
    rows = np.flatnonzero(eligible)
    for c in np.unique(labels[rows]):
        members = rows[labels[rows] == c]
        for s in range(0, len(members), CHUNK_ROWS):
            r = members[s : s + CHUNK_ROWS]
            out.append((int(c), (r, np.ascontiguousarray(vectors[r], dtype=np.float32))))
    return out


def select_on_beam(vectors: np.ndarray, labels: np.ndarray, eligible: np.ndarray, params: SelectParams, *,
                   seed: int, device: str, options: Any, work: Any) -> SelectResult:
    """:func:`winnow.stages.select.core.select`, with the classes solved on Beam workers.

    Same arguments and result as the core (``options``: Beam PipelineOptions; ``work``: a
    folder for temporary files).
    """
    vectors, labels, eligible = np.asarray(vectors), np.asarray(labels), np.asarray(eligible, bool)
    n = len(labels)
    cols = empty_columns(n)
    if not eligible.any():  # nothing to distribute: the core's own empty result
        return select(vectors, labels, eligible, params, seed=seed, device=device)
    check_inputs(vectors, labels, eligible, device)  # here, not on a worker: one clear error, no pipeline
    folder = temp_folder(work, "select")
    with beam.Pipeline(options=options) as p:
        rows = create_via_files(p, _chunks(vectors, labels, eligible), folder / "in", "chunks")
        sizes = rows | "sizes" >> beam.Map(lambda kv: (kv[0], len(kv[1][0]))) | beam.CombinePerKey(sum)
        _ = (
            rows
            | "by class" >> beam.GroupByKey()
            | "select class" >> beam.ParDo(_SelectClass(params, seed, device), sizes=beam.pvalue.AsDict(sizes))
            | "collect" >> beam.ParDo(CollectToFolder(str(folder)))
        )
    per_class: dict[str, Any] = {}
    for label, rows_c, c, m in sorted(read_collected(folder), key=lambda t: t[0]):
        for name in ("selected", "coreset_weight", "gain", "rank"):
            cols[name][rows_c] = c[name]
        assigned = c["cluster_id"] >= 0  # class-local row index -> manifest row
        cols["cluster_id"][rows_c[assigned]] = rows_c[c["cluster_id"][assigned]]
        per_class[str(label)] = m
    return SelectResult(cols, select_metrics(params, per_class, n_rows=n, n_selected=int(cols["selected"].sum()),
                                             device=device))


def select_beam(ctx: StageContext, params: SelectParams) -> dict[str, Any]:
    """The select adapter on Beam: same ``coreset.parquet`` and metrics as the local one."""
    from winnow.pipeline.io.select import coreset_table, select_inputs

    manifest, vectors, labels, eligible = select_inputs(ctx.run, params)
    options = pipeline_options(ctx.beam_options)
    result = select_on_beam(vectors, labels, eligible, params, seed=ctx.seed, device=ctx.device, options=options,
                            work=ctx.checkpoints.folder)
    table = coreset_table(manifest, result.columns, params)
    with beam.Pipeline(options=options) as p:
        write_tables(p, ctx.out, {schema.CORESET: table}, temp_folder(ctx.checkpoints.folder, "select-write"))
    return dict(result.metrics)
