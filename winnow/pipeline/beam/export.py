"""export on Beam: the per-id export columns are joined to the manifest rows by id on the workers.

1. :func:`winnow.stages.export.core.export_columns` computes every per-row decision (scores,
   calibrated flags, suggested labels, train weights) and the summary from the small columns:
   the manifest without its ``image`` bytes, the features, coreset and weights. The trusted
   rows' kNN vote searches on the workers (65,536 query rows each, against the trusted rows;
   :func:`winnow.pipeline.beam.workers.map_on_workers`), bit for bit as locally. The rest runs on
   the launcher: the linear vote's fits on the trusted rows (a few seconds: less than a
   pipeline's start), the calibration (it needs every row's score), and the audit's kNN graph
   (duplicates, outliers: one global FAISS index).
2. On the workers, ``ReadFromParquetBatched`` reads ``manifest.parquet`` (image bytes included)
   by row group; each batch is joined by ``id`` with the per-id columns (a :class:`JoinPlan` that
   each DoFn instance loads once from a file the launcher wrote) and
   cut into pieces of the output files it belongs to (``curated``, ``train``, ``flags``, sharded
   by ``--shard-rows`` as the local stage shards them) with
   :func:`winnow.stages.export.core.curated_rows` / :func:`~winnow.stages.export.core.train_rows`.
3. ``GroupByKey`` on the output file gathers its pieces; they are put in the local stage's row
   order and each file is written by its own ``WriteToParquetBatched``.

The launcher never holds the image bytes; the files are byte-identical to the local stage's.
"""

from __future__ import annotations

import dataclasses
import functools
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.parquetio import ReadFromParquetBatched, WriteToParquetBatched

from winnow.pipeline.beam.io import shard_names, temp_folder
from winnow.pipeline.beam.options import pipeline_options
from winnow.pipeline.beam.workers import map_on_workers
from winnow.pipeline.runner import StageContext
from winnow.stages.common import schema
from winnow.stages.export.core import ExportColumns, curated_rows, export_columns, train_rows
from winnow.stages.export.params import ExportParams

KINDS = ((schema.CURATED, "curated"), (schema.TRAIN_MANIFEST, "train"), (schema.FLAGS, "flags"))


@dataclass
class JoinPlan:
    """What every worker needs to join manifest rows to their export columns (one file, loaded
    once per DoFn instance).

    Attributes
    ----------
    ids : (n,) the manifest's ids in manifest order (the join key).
    columns : the per-row export columns (:class:`ExportColumns`, without the summary).
    position : per output kind ("curated", "train", "flags"), (n,) int64 position of each
        manifest row in that table, -1 where the row is not in it.
    files : per kind, its file names (relative to the stage folder), in order.
    shard_rows : rows per file when a kind has more than one file.
    manifest_schema : the manifest's Arrow schema (with its metadata).
    schemas : per kind, the output table's Arrow schema (with its metadata).
    """

    ids: pa.Array
    columns: ExportColumns
    position: dict[str, np.ndarray]
    files: dict[str, list[str]]
    shard_rows: int
    manifest_schema: pa.Schema
    schemas: dict[str, pa.Schema]

    def file_of(self, kind: str, position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(file index, position in that file) of rows at ``position`` of the ``kind`` table."""
        if len(self.files[kind]) == 1:
            return np.zeros(len(position), np.int64), position
        return position // self.shard_rows, position % self.shard_rows

    def expected_rows(self) -> dict[str, int]:
        """Rows of every output file, by file name."""
        out = {}
        for kind, names in self.files.items():
            total = int((self.position[kind] >= 0).sum())
            for i, rel in enumerate(names):
                out[rel] = total if len(names) == 1 else min(self.shard_rows, total - i * self.shard_rows)
        return out


def join_plan(ids: pa.Array, columns: ExportColumns, manifest_schema: pa.Schema, shard_rows: int) -> JoinPlan:
    """The :class:`JoinPlan` of a manifest with ``ids`` (manifest order) and its export columns."""
    n = len(ids)
    position = {kind: np.full(n, -1, np.int64) for _, kind in KINDS}
    position["curated"] = np.arange(n, dtype=np.int64)
    position["train"][columns.train_rows] = np.arange(len(columns.train_rows))
    position["flags"][columns.flag_order] = np.arange(len(columns.flag_order))
    files = {kind: shard_names(name, int((position[kind] >= 0).sum()), shard_rows) for name, kind in KINDS}
    empty = manifest_schema.empty_table()
    no_rows = np.zeros(0, np.int64)
    schemas = {"curated": curated_rows(empty, columns, no_rows).schema,
               "train": train_rows(empty, columns, no_rows).schema}
    schemas["flags"] = schemas["curated"]
    return JoinPlan(ids, dataclasses.replace(columns, summary={}), position, files, shard_rows, manifest_schema,
                    schemas)


def _take(table: pa.Table, mask: np.ndarray) -> pa.Table:
    return table.take(pa.array(np.flatnonzero(mask), pa.int64()))


def route(batch: pa.Table, plan: JoinPlan) -> Iterator[tuple[str, tuple[np.ndarray, pa.Table]]]:
    """Join a batch of manifest rows (all its columns) with their export columns by id, and cut
    the result into (file name, (positions in that file, rows)) pieces."""
    if batch.schema.names != plan.manifest_schema.names:
        raise ValueError(f"export: manifest rows have columns {batch.schema.names}, expected "
                         f"{plan.manifest_schema.names}; re-run ingest")
    batch = batch.cast(plan.manifest_schema)  # the metadata too: it goes into the outputs
    found = pc.index_in(batch["id"], value_set=plan.ids)
    if found.null_count:
        missing = batch["id"].filter(pc.is_null(found))[0].as_py()
        raise ValueError(f"export: manifest id {missing!r} has no export columns; the manifest changed "
                         f"during the stage, re-run export")
    rows = found.to_numpy(zero_copy_only=False).astype(np.int64)
    curated = curated_rows(batch, plan.columns, rows)
    for kind in ("curated", "flags", "train"):
        pos = plan.position[kind][rows]
        inside = pos >= 0
        if not inside.any():
            continue
        if kind == "train":
            piece = train_rows(_take(batch, inside), plan.columns, rows[inside])
        else:
            piece = curated if inside.all() else _take(curated, inside)
        file_index, in_file = plan.file_of(kind, pos[inside])
        for f in np.unique(file_index):
            mine = file_index == f
            yield plan.files[kind][int(f)], (in_file[mine], piece if mine.all() else _take(piece, mine))


def assemble(rel: str, pieces: list[tuple[np.ndarray, pa.Table]], schema_: pa.Schema, expected: int) -> pa.Table:
    """One output file from its pieces: rows in the local stage's order, one chunk, its schema."""
    positions = np.concatenate([p for p, _ in pieces]) if pieces else np.zeros(0, np.int64)
    if len(positions) != expected or not np.array_equal(np.sort(positions), np.arange(expected)):
        raise RuntimeError(f"beam export: {rel} received {len(positions)} rows for {expected} places "
                           f"(a manifest id is duplicated or missing)")
    table = pa.concat_tables([t.cast(schema_) for _, t in pieces] or [schema_.empty_table()])
    return table.take(pa.array(np.argsort(positions, kind="stable"), pa.int64())).combine_chunks()


class _WithPlan(beam.DoFn):
    """A DoFn that loads the :class:`JoinPlan` once per instance from the file the launcher wrote
    (a side input was decoded again and again: the join's workers held 5.7-7.4 GB at 1M rows)."""

    def __init__(self, plan_file: str) -> None:
        self.plan_file = plan_file

    def setup(self) -> None:
        with open(self.plan_file, "rb") as f:
            self.plan: JoinPlan = pickle.load(f)  # noqa: S301 -- written by this job's launcher


class _Route(_WithPlan):
    def process(self, batch: pa.Table) -> Iterator[tuple[str, tuple[np.ndarray, pa.Table]]]:
        yield from route(batch, self.plan)


class _Assemble(_WithPlan):
    def process(self, element: tuple[str, Any]) -> Iterator[tuple[str, pa.Table]]:
        rel, pieces = element
        plan = self.plan
        kind = next(k for k, names in plan.files.items() if rel in names)
        yield rel, assemble(rel, [p for p in pieces if len(p[0])], plan.schemas[kind], plan.expected_rows()[rel])


def manifest_files(path: Path) -> tuple[str, pa.Schema]:
    """A file pattern for ``ReadFromParquetBatched`` and the Arrow schema of a manifest written by
    :func:`winnow.pipeline.artifacts.write_table` (one file, or a folder of ``part-*.parquet``)."""
    if path.is_dir():
        parts = sorted(path.glob("part-*.parquet"))
        if not parts:
            raise ValueError(f"{path} holds no part-*.parquet files; re-run ingest")
        return str(path / "part-*.parquet"), pq.read_schema(parts[0])
    return str(path), pq.read_schema(path)


def export_on_beam(manifest_path: Path, features: pa.Table | None, coreset: pa.Table | None,
                   weights: pa.Table | None, params: ExportParams, out: Path, *, seed: int, options: Any,
                   work: Path) -> dict:
    """Write ``curated``, ``train`` and ``flags`` into ``out`` as :func:`winnow.stages.export.core.export`
    and the local adapter would, joining on Beam; return the summary.

    ``manifest_path``: ``manifest.parquet`` (file or sharded folder); the other tables as for
    :func:`winnow.stages.export.core.export`; ``options``: Beam PipelineOptions; ``work``: a folder for
    temporary files that the workers can read.
    """
    pattern, manifest_schema = manifest_files(manifest_path)
    from winnow.pipeline.artifacts import read_table

    small = read_table(manifest_path, columns=[c for c in manifest_schema.names if c != "image"])
    ids = small["id"].combine_chunks()
    if len(pc.unique(ids)) != len(ids):
        counts = pc.value_counts(ids)
        dup = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
        raise ValueError(f"export on Beam joins by id, but manifest id {dup!r} is not unique; re-run ingest")
    columns = export_columns(small, features, coreset, weights, params, seed=seed,
                             map_work=functools.partial(map_on_workers, options=options, work=work))
    del small
    plan = join_plan(ids, columns, manifest_schema, params.shard_rows)
    folder = temp_folder(work, "export")
    plan_file = str(folder / "plan.pkl")
    with open(plan_file, "wb") as f:
        pickle.dump(plan, f, protocol=pickle.HIGHEST_PROTOCOL)
    with beam.Pipeline(options=options) as p:
        pieces = (
            p
            | "read manifest" >> ReadFromParquetBatched(pattern)
            | "join by id" >> beam.ParDo(_Route(plan_file))
        )
        # One empty piece per file, so that a file with no rows (e.g. no flags) is written too.
        empty = p | "every file" >> beam.Create(
            [(rel, (np.zeros(0, np.int64), None)) for rel in plan.expected_rows()])
        names = list(plan.expected_rows())
        files = (
            (pieces, empty)
            | beam.Flatten()
            | "by file" >> beam.GroupByKey()
            | "assemble" >> beam.ParDo(_Assemble(plan_file))
            | "split" >> beam.Partition(lambda kv, _n: names.index(kv[0]), len(names))
        )
        for rel, part in zip(names, files):
            kind = next(k for k, v in plan.files.items() if rel in v)
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            label = rel.replace("/", "_").replace(".", "_")
            _ = (
                part
                | f"table {label}" >> beam.Map(lambda kv: kv[1])
                | f"write {label}" >> WriteToParquetBatched(
                    str(out / rel), schema=plan.schemas[kind], codec="snappy", use_compliant_nested_type=True,
                    num_shards=1, shard_name_template="",
                )
            )
    return columns.summary


def export_beam(ctx: StageContext, params: ExportParams) -> dict[str, Any]:
    """The export adapter on Beam: same files, summary and metrics as the local one."""
    from winnow.pipeline.io import export as export_io

    summary = export_on_beam(
        ctx.run.path("ingest", schema.MANIFEST), *export_io.upstream_tables(ctx.run), params, ctx.out, seed=ctx.seed,
        options=pipeline_options(ctx.beam_options), work=ctx.checkpoints.folder,
    )
    return export_io.write_summary(ctx.out, summary)
