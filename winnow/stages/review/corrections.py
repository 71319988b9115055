"""A reviewer's decisions: an append-only log, read back as the decisions in force.

The log is ``review/corrections.parquet``, a Parquet *dataset folder*: one small file per
decision (``part-<time>-<seq>.parquet``), written under a temporary name and renamed into place,
so a decision is on disk the moment it is taken, a kill -9 loses nothing, and nothing is ever
rewritten. Any Parquet reader (pyarrow, pandas, polars, duckdb) reads the folder as one table.
The same rows as CSV (``id,action,label,reviewer,time``) are what the HTML report downloads and
what ``winnow ingest --corrections`` accepts.

Actions: ``accept`` (take the suggested label), ``keep`` (the given label is right), ``relabel``
(a label the reviewer names), ``drop`` (the row should not be used), ``skip`` (seen, no
decision) and ``undo`` (takes back the reviewer's latest decision still in force). ``label`` is
the class index the row ends with, for accept/keep/relabel.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ACTIONS = ("accept", "keep", "relabel", "drop", "skip", "undo")
LABELLED = ("accept", "keep", "relabel")  # the actions that carry a label
CORRECTIONS = "corrections.parquet"
_EPOCH = datetime.fromtimestamp(0, UTC)

SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("action", pa.string(), nullable=False),
    pa.field("label", pa.int32()),
    pa.field("reviewer", pa.string()),
    pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),
])


class CorrectionsError(ValueError):
    """A corrections file that cannot be used; the message names the file, row and fix."""


@dataclass(frozen=True)
class Decision:
    id: str
    action: str
    label: int | None = None
    reviewer: str = ""
    time: datetime | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise CorrectionsError(f"action {self.action!r} for id {self.id!r} is not one of {', '.join(ACTIONS)}")
        if (self.label is not None) != (self.action in LABELLED):
            need = "needs a label" if self.action in LABELLED else "takes no label"
            raise CorrectionsError(f"action {self.action!r} for id {self.id!r} {need}")


def append_decision(folder: Path, decision: Decision) -> Path:
    """Write one decision as its own file in ``folder`` (the corrections dataset), atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    when = decision.time or datetime.now(UTC)
    table = pa.table({"id": [decision.id], "action": [decision.action], "label": [decision.label],
                      "reviewer": [decision.reviewer or None], "time": [when]}, schema=SCHEMA)
    # Names sort in decision order: time first, then a counter for decisions within one microsecond.
    stamp = when.strftime("%Y%m%dT%H%M%S%f")
    seq = len(list(folder.glob(f"part-{stamp}-*.parquet")))
    path = folder / f"part-{stamp}-{seq:04d}-{os.getpid()}.parquet"
    tmp = folder / f".tmp-{path.name}"
    pq.write_table(table, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def read_corrections(path: Path) -> pa.Table:
    """The decision log at ``path`` (a corrections folder, a Parquet file or a CSV file), in
    decision order, with :data:`SCHEMA`'s columns. Bad rows raise :class:`CorrectionsError`
    naming the row."""
    if not path.exists():
        raise CorrectionsError(f"corrections {path} does not exist; give the review folder's {CORRECTIONS} "
                               "or a CSV downloaded from the report")
    try:
        if path.is_dir():
            parts = sorted(p for p in path.glob("part-*.parquet"))
            table = pa.concat_tables([pq.read_table(p) for p in parts]) if parts else SCHEMA.empty_table()
        elif path.suffix.lower() == ".csv":
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                column_types={"id": pa.string(), "action": pa.string(), "reviewer": pa.string(), "label": pa.int64()},
                strings_can_be_null=True))
        else:
            table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorrectionsError(f"cannot read corrections {path}: {exc}; expected columns "
                               f"{', '.join(SCHEMA.names)} (labels are class indices)") from exc
    missing = [c for c in ("id", "action") if c not in table.column_names]
    if missing:
        raise CorrectionsError(f"corrections {path}: no column(s) {missing}; columns are {table.column_names}, "
                               f"expected {', '.join(SCHEMA.names)}")
    n = table.num_rows
    cols = {name: (table[name] if name in table.column_names else pa.nulls(n, SCHEMA.field(name).type))
            for name in SCHEMA.names}
    if "time" not in table.column_names:
        cols["time"] = pa.array([datetime.fromtimestamp(0, UTC)] * n, SCHEMA.field("time").type)
    try:
        out = pa.table(cols).cast(SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise CorrectionsError(f"corrections {path}: {exc}; labels are class indices, time is ISO 8601") from exc
    for i, (rid, action, label) in enumerate(zip(out["id"].to_pylist(), out["action"].to_pylist(),
                                                 out["label"].to_pylist())):
        try:
            Decision(rid, action, label)
        except CorrectionsError as exc:
            raise CorrectionsError(f"corrections {path} row {i}: {exc}") from exc
    return out


def standing(log: pa.Table) -> list[Decision]:
    """Replay the log: the entries still standing, in the order they were taken. ``undo`` takes
    back the same reviewer's latest standing entry (a skip included, as the review screen's
    "back one row" does)."""
    stacks: dict[str, list[Decision]] = {}  # reviewer -> standing entries, in order
    for rid, action, label, reviewer, when in zip(*(log[c].to_pylist() for c in SCHEMA.names)):
        mine = stacks.setdefault(reviewer or "", [])
        if action == "undo":
            if mine:
                mine.pop()
        else:
            mine.append(Decision(rid, action, label, reviewer or "", when))
    return sorted((d for ds in stacks.values() for d in ds), key=lambda d: d.time or _EPOCH)


def in_force(log: pa.Table) -> dict[str, Decision]:
    """The decision in force per id (skips are no decision; a later decision on an id wins)."""
    return {d.id: d for d in standing(log) if d.action != "skip"}


def seen_ids(log: pa.Table) -> set[str]:
    """Ids with a standing entry, skips included: where a new review session resumes."""
    return {d.id for d in standing(log)}


def write_csv(log: pa.Table, path: Path) -> None:
    """The log as CSV, the format the report downloads (round-trips through :func:`read_corrections`)."""
    pacsv.write_csv(log, path)


def now() -> datetime:
    """The current time, UTC (one place, so tests can pin it)."""
    return datetime.fromtimestamp(time.time(), UTC)


def corrections_digest(path: Path) -> str:
    """Fingerprint of a decision log's contents (every part of a folder, or the file), for the
    stage cache: a new decision re-runs ingest and what depends on it, an unchanged log does not."""
    import hashlib

    h = hashlib.sha256()
    files = sorted(path.glob("part-*.parquet")) if path.is_dir() else [path] if path.is_file() else []
    for f in files:
        h.update(f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest() if files else "missing"
