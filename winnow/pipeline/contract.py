"""The step contract: what each stage reads from the run directory and what it writes, in one place.

The adapters of both executors, the stage cache (:func:`winnow.pipeline.runner.input_digests`)
and the CLI take the names of stages, upstream dependencies and files from here instead of
spelling them again. Column names and Arrow schemas of the artifacts are the stages' contract
(:mod:`winnow.stages.common.schema`); this module adds the pipeline's side: which stage folder
holds which file, and how a stage's recorded options are read back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

from winnow.stages.common import schema

# Files the pipeline writes beside the tables of schema (one name each).
BACKBONE = "backbone.pt"  # embed: the warmed-up backbone's state_dict
MODEL = "model.pt"  # weight, train: the trained model's state_dict
ROUNDS = "rounds"  # weight: one round_<r>.parquet per round
MWN_CURVE = "mwn_curve.parquet"  # weight: Meta-Weight-Net's learned loss -> weight curve
TRAIN_METRICS = "metrics.json"  # train
EVALUATION = "evaluation.json"  # evaluate
# (and in every stage folder rundir.STAGE_JSON, written last: parameters, inputs, digests)


@dataclass(frozen=True)
class StageContract:
    """A stage's inputs (the upstream stages it needs, or uses when present) and outputs."""

    name: str
    required: tuple[str, ...]  # upstream stages that must have completed
    optional: tuple[str, ...]  # upstream stages used when present
    outputs: tuple[str, ...]  # files (or folders) it writes into its folder, besides stage.json

    @property
    def upstream(self) -> tuple[str, ...]:
        return self.required + self.optional


CONTRACTS: dict[str, StageContract] = {c.name: c for c in (
    StageContract("ingest", (), (), (schema.MANIFEST, schema.SUMMARY)),  # + FEATURES from a feature table
    StageContract("embed", ("ingest",), (), (schema.FEATURES,)),  # + BACKBONE after a warm-up
    StageContract("select", ("ingest",), ("embed",), (schema.CORESET,)),
    StageContract("weight", ("ingest",), ("embed", "select"), (schema.WEIGHTS, ROUNDS, MODEL)),  # + MWN_CURVE
    StageContract("export", ("ingest",), ("embed", "select", "weight"),
                  (schema.CURATED, schema.TRAIN_MANIFEST, schema.FLAGS, schema.SUMMARY)),
    StageContract("train", ("export",), (), (MODEL, TRAIN_METRICS)),
    StageContract("evaluate", ("export",), ("train",), (EVALUATION,)),
    StageContract("report", ("export",), ("select", "weight", "evaluate"), (schema.REPORT,)),
)}
STAGES = tuple(CONTRACTS)  # in pipeline order


class OptionsChanged(ValueError):
    """A completed stage's recorded options are not those this winnow's stage takes."""


P = TypeVar("P")


def recorded_params(record: dict[str, Any] | None, params_cls: type[P], *, stage: str, run_dir: Any) -> P:
    """The parameters ``stage`` recorded in its ``stage.json`` (``record``), as ``params_cls``.

    An option renamed or removed since that run used to raise an uncaught TypeError here; it is
    now :class:`OptionsChanged` naming the options and the fix (nothing is deleted).
    """
    values = dict((record or {}).get("params", {}))
    known = {f.name for f in dataclasses.fields(params_cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise OptionsChanged(
            f"{stage} in {run_dir} was made with options this winnow no longer has ({', '.join(unknown)}); "
            f"re-run it with `winnow {stage} --run-dir {run_dir} --force`")
    try:
        return params_cls(**values)
    except (TypeError, ValueError) as exc:
        raise OptionsChanged(
            f"{stage} in {run_dir} was made with options this winnow no longer accepts ({exc}); "
            f"re-run it with `winnow {stage} --run-dir {run_dir} --force`") from exc
