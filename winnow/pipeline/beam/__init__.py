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
INSTALL_HINT = "pip install 'winnow-curate[beam]'"


class BeamMissing(ValueError):
    """``--executor beam`` without apache-beam installed (it is the ``beam`` extra). A ValueError,
    so that the CLI reports it as a message and exit code 1, never a traceback."""


def require_beam() -> None:
    """Raise :class:`BeamMissing`, saying what to install, unless apache-beam can be imported.

    Checked where the Beam executor is chosen, not at import: ``winnow`` without the extra
    must import and run every stage locally."""
    try:
        import apache_beam  # noqa: F401
    except ImportError as exc:
        raise BeamMissing(
            f"--executor beam needs Apache Beam, which is not installed ({exc}); install the extra with "
            f"`{INSTALL_HINT}`, or run with --executor local") from exc


def beam_adapter(stage: str) -> Callable[[StageContext, Any], dict[str, Any]] | None:
    """The Beam adapter of ``stage``, or None for a stage that runs locally in any case
    (weight, train, evaluate, report: they train a model or write one small file).

    Raises :class:`BeamMissing` for a Beam stage when apache-beam is not installed."""
    if stage in BEAM_STAGES:
        require_beam()
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
