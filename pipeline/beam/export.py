"""export on Beam: the scores and the flag threshold need every row (the trusted neighbours
vote and the calibration is global), so :func:`stages.export.core.export` runs once on the
aligned tables; Beam writes the curated, train and flags manifests, sharded as the local
stage shards them (``--shard-rows``), each file through ``WriteToParquetBatched``.
"""

from __future__ import annotations

import json
from typing import Any

import apache_beam as beam

from pipeline.beam.io import shard_layout, temp_folder, write_tables
from pipeline.beam.options import pipeline_options
from pipeline.runner import StageContext
from stages.common import schema
from stages.export.params import ExportParams


def export_beam(ctx: StageContext, params: ExportParams) -> dict[str, Any]:
    """The export adapter on Beam: same files, summary and metrics as the local one."""
    from pipeline.steps import export_result

    result = export_result(ctx.run, params, seed=ctx.seed)
    tables = {}
    for name, table in ((schema.CURATED, result.curated), (schema.TRAIN_MANIFEST, result.train),
                        (schema.FLAGS, result.flags)):
        tables.update(shard_layout(name, table, params.shard_rows))
    with beam.Pipeline(options=pipeline_options(ctx.beam_options)) as p:
        write_tables(p, ctx.out, tables, temp_folder(ctx.checkpoints.folder, "export-write"))
    (ctx.out / schema.SUMMARY).write_text(json.dumps(result.summary, indent=2, sort_keys=True, default=str))
    from pipeline.steps import export_metrics

    return export_metrics(result.summary)
