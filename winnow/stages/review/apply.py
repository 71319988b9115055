"""Turn a reviewer's decisions into the manifest: corrected labels, dropped rows marked (never
deleted), and optionally the reviewed rows moved into the trusted split."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from winnow.stages.common import schema
from winnow.stages.common.arrow import class_names
from winnow.stages.review.corrections import CorrectionsError, Decision

REVIEW_ACTION = schema.REVIEW_ACTION  # the manifest column: the decision in force, null where none
DROPPED = "dropped in review"  # the error a dropped row gets, so that no stage uses it


@dataclass
class Applied:
    manifest: pa.Table
    counts: dict[str, int] = field(default_factory=dict)  # decisions applied, per action
    relabelled: int = 0  # rows whose label changed
    to_trusted: int = 0


def apply_decisions(manifest: pa.Table, decisions: dict[str, Decision], *, as_trusted: bool = False,
                    where: str = "corrections") -> Applied:
    """``manifest`` with ``decisions`` (id -> decision in force) applied.

    accept/relabel set ``label`` (and ``label_name``); keep leaves it; drop sets ``error`` so
    every stage leaves the row out (it stays in every table). ``review_action`` records the
    decision per row. With ``as_trusted`` the rows a person labelled (accept, keep, relabel) join
    the trusted split: a reviewed label is a clean label. A decision on an id the manifest lacks,
    or a label outside the classes, raises :class:`CorrectionsError` naming it.
    """
    ids = manifest["id"].to_pylist()
    index = {rid: i for i, rid in enumerate(ids)}
    classes = class_names(manifest)
    unknown = [rid for rid in decisions if rid not in index]
    if unknown:
        raise CorrectionsError(f"{where}: {len(unknown)} id(s) not in the manifest, e.g. {unknown[:3]}; the "
                               "decisions belong to another run, or its ingest changed the ids")
    labels = manifest["label"].to_numpy(zero_copy_only=False).astype(np.float64)  # NaN where null
    errors = manifest["error"].to_pylist()
    split = manifest["split"].to_pylist()
    action: list[str | None] = [None] * len(ids)
    counts: dict[str, int] = {}
    relabelled = to_trusted = 0
    for rid, d in decisions.items():
        i = index[rid]
        if d.label is not None and not 0 <= d.label < len(classes):
            raise CorrectionsError(f"{where}: id {rid!r}: label {d.label} is not a class index of this run "
                                   f"(0..{len(classes) - 1})")
        if errors[i] is not None and d.action != "drop":
            raise CorrectionsError(f"{where}: id {rid!r} cannot be used ({errors[i]}); only 'drop' applies to it")
        action[i] = d.action
        counts[d.action] = counts.get(d.action, 0) + 1
        if d.action == "drop":
            errors[i] = errors[i] or f"{DROPPED} by {d.reviewer or 'a reviewer'}"
            continue
        if d.label is not None and labels[i] != d.label:
            labels[i] = d.label
            relabelled += 1
        if as_trusted and split[i] == schema.TRAIN:
            split[i] = schema.TRUSTED
            to_trusted += 1
    valid = np.isfinite(labels)
    lab = np.where(valid, labels, 0).astype(np.int32)
    out = manifest
    for name, values in (
        ("label", pa.array(lab, pa.int32(), mask=~valid)),
        ("label_name", pa.array([classes[v] if ok else None for v, ok in zip(lab, valid)], pa.string())),
        ("split", pa.array(split, pa.string())),
        ("error", pa.array(errors, pa.string())),
    ):
        i = out.schema.get_field_index(name)
        out = out.set_column(i, out.schema.field(name), values)
    column = pa.array(action, pa.string())
    if REVIEW_ACTION in out.column_names:
        out = out.set_column(out.schema.get_field_index(REVIEW_ACTION), REVIEW_ACTION, column)
    else:
        out = out.append_column(REVIEW_ACTION, column)
    return Applied(out.replace_schema_metadata(manifest.schema.metadata), counts, relabelled, to_trusted)
