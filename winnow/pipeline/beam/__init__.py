"""The Apache Beam executor for the data-parallel stages (ingest, embed, select, export).

Each module is the Beam version of one stage's adapter in :mod:`winnow.pipeline.steps`: it reads the
same artifacts, calls the same pure core of :mod:`stages` (the per-row, per-batch or per-class
parts on the Beam workers, the global steps once) and writes the same files into the stage's
commit folder. ``--executor beam`` picks it; ``--beam-option KEY=VALUE`` sets the runner.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from winnow.pipeline.runner import StageContext

BEAM_STAGES = ("ingest", "embed", "select", "export")


def beam_adapter(stage: str) -> Callable[[StageContext, Any], dict[str, Any]] | None:
    """The Beam adapter of ``stage``, or None for a stage that runs locally in any case
    (weight, train, evaluate, report: they train a model or write one small file)."""
    if stage == "ingest":
        from winnow.pipeline.beam.ingest import ingest_beam

        return ingest_beam
    if stage == "embed":
        from winnow.pipeline.beam.embed import embed_beam

        return embed_beam
    if stage == "select":
        from winnow.pipeline.beam.select import select_beam

        return select_beam
    if stage == "export":
        from winnow.pipeline.beam.export import export_beam

        return export_beam
    return None
