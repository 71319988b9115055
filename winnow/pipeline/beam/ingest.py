"""ingest on Beam: the images are read and decoded on the workers; the global steps (label
mapping, splits, trusted sampling, noise injection), which need every row's label, run in
:func:`winnow.stages.ingest.core.ingest` on the launcher over the small columns; the manifest is
written with ``WriteToParquetBatched``.

Rows of a Parquet source are read by the workers themselves (``ReadFromParquetBatched``);
rows of other sources (digits, an image folder, CSV, a ``--trusted`` file) are sent to the
workers in record batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.parquetio import ReadFromParquetBatched

from winnow.pipeline.beam.io import (
    CollectToFolder,
    create_via_files,
    read_collected,
    temp_folder,
)
from winnow.pipeline.beam.options import pipeline_options
from winnow.pipeline.runner import StageContext
from winnow.stages.ingest.core import ImageCheck, check_image
from winnow.stages.ingest.params import IngestParams
from winnow.stages.ingest.sources import contained_path, image_column, resolve_data_root

BATCH_ROWS = 512  # rows per element sent to the workers


def _errors_of_batch(
    batch: pa.RecordBatch | pa.Table, base: str | None = None, root: str | None = None
) -> Iterator[tuple[str, ImageCheck]]:
    """(id, (error or None, image size)) for every row of a batch with ``id`` and ``image`` and/or ``uri``.

    With ``base`` (a Parquet manifest's folder) the uris are resolved here, under the data root
    ``root`` (None: anywhere) exactly as :mod:`winnow.stages.ingest.sources` does: a path outside is not
    opened; its row's error comes from the launcher, which read the same path."""
    names = batch.schema.names
    n = batch.num_rows
    ids = pc.cast(batch.column(names.index("id")), pa.string()).to_pylist()
    uris = pc.cast(batch.column(names.index("uri")), pa.string()).to_pylist() if "uri" in names else [None] * n
    images: list[bytes | None] = [None] * n
    if "image" in names:
        column = batch.column(names.index("image"))
        images, paths = image_column(pa.chunked_array([column]) if isinstance(column, pa.Array) else column,
                                     Path(base or "."))
        if paths is not None:  # Hugging Face's struct<bytes, path>: a row without bytes is read from its path
            uris = [u if u is not None or b is not None else p for u, b, p in zip(uris, images, paths)]
    if base is not None:  # uris of a Parquet manifest are relative to the manifest, as in winnow.stages.ingest.sources
        allowed = None if root is None else Path(root)
        uris = [None if u is None else contained_path(Path(base), u, allowed) for u in uris]
    for i, image, uri in zip(ids, images, uris):
        yield i, check_image(image, uri)


def beam_validator(params: IngestParams, options: Any, work: Path) -> Callable[[pa.Table], list[ImageCheck]]:
    """A ``validate`` function for :func:`winnow.stages.ingest.core.ingest` that decodes on Beam workers."""

    def validate(table: pa.Table) -> list[ImageCheck]:
        folder = temp_folder(work, "ingest-errors")
        ids = table["id"].to_pylist()
        rest = table
        source = Path(params.source)
        with beam.Pipeline(options=options) as p:
            parts = []
            # A Parquet source is read by the workers; with --max-rows only the kept rows travel.
            if source.suffix.lower() in {".parquet", ".pq"} and source.is_file() and not params.max_rows:
                file_cols = pq.read_schema(source).names
                if "id" in file_cols:
                    source_ids = pc.cast(pq.read_table(source, columns=["id"])["id"], pa.string())
                    cols = [c for c in ("id", "uri", "image") if c in file_cols]
                    base = source.resolve().parent
                    root = resolve_data_root(base, params.data_root, params.allow_any_path)
                    parts.append(
                        p
                        | "read source" >> ReadFromParquetBatched(str(source), columns=cols)
                        | "decode source" >> beam.FlatMap(_errors_of_batch, base=str(base),
                                                           root=None if root is None else str(root))
                    )
                    rest = table.filter(pc.invert(pc.is_in(table["id"], value_set=source_ids.combine_chunks())))
            if rest.num_rows:
                batches = rest.select(["id", "uri", "image"]).combine_chunks().to_batches(max_chunksize=BATCH_ROWS)
                rows = create_via_files(p, batches, folder / "in", "rows")
                parts.append(rows | "decode rows" >> beam.FlatMap(_errors_of_batch))
            _ = tuple(parts) | beam.Flatten() | "collect" >> beam.ParDo(CollectToFolder(str(folder)))
        found = dict(read_collected(folder))
        missing = [i for i in ids if i not in found]
        if missing:
            raise RuntimeError(f"beam ingest: no validation result for {len(missing)} row(s), e.g. {missing[:3]}")
        return [found[i] for i in ids]

    return validate


def ingest_beam(ctx: StageContext, params: IngestParams) -> dict[str, Any]:
    """The ingest adapter on Beam: same files and metrics as the local one."""
    from winnow.pipeline.io import ingest as ingest_io
    from winnow.stages.ingest import ingest

    options = pipeline_options(ctx.beam_options)
    work = ctx.checkpoints.folder
    result = ingest(params, seed=ctx.seed, validate=beam_validator(params, options, work))
    # The manifest is assembled here: written by the local stage's writer, in place (a Beam write
    # of it pickled the whole table into a file for one worker: 3.8 GB more at 1M feature rows).
    return ingest_io.write_outputs(ctx.out, result)
