"""``winnow review``: page through flagged rows in the terminal and record one decision per key.

Each decision is appended at once to ``<run>/review/corrections.parquet`` (see
:mod:`winnow.stages.review.corrections`), so Ctrl-C or kill -9 loses nothing, and a new session
starts after the rows already decided or skipped. Apply the decisions with
``winnow ingest ... --corrections <run>/review/corrections.parquet``.
"""

from __future__ import annotations

import getpass
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table
from rich.text import Text

from winnow.pipeline.artifacts import read_table
from winnow.stages.common import schema
from winnow.stages.common.arrow import vectors_from_arrow
from winnow.stages.common.rows import labels_array, split_array, usable_mask
from winnow.stages.report.inspect import known_class_names
from winnow.stages.review.corrections import (
    CORRECTIONS,
    Decision,
    append_decision,
    now,
    read_corrections,
    seen_ids,
    standing,
)
from winnow.stages.review.order import ORDERS, expected_gain, review_order
from winnow.stages.select.knn import normalize

KEYS = {"a": "accept the suggestion", "k": "keep the given label", "l": "set a label", "d": "drop the row",
        "s": "skip", "u": "undo the last decision", "q": "quit"}
NEIGHBOURS = 5


@dataclass
class Queue:
    """The run's curated table, the rows to show in order, and what the screen shows beside them."""

    curated: pa.Table
    rows: list[int]
    classes: list[str]
    labels: np.ndarray  # given labels, -1 where missing (read once, not per key press)
    gain: np.ndarray
    neighbours: dict[int, list[int]]  # row -> nearest trusted rows (by embedding), when features exist


def _neighbours(run_dir: Path, curated: pa.Table, rows: list[int]) -> dict[int, list[int]]:
    """The nearest trusted rows of each queued row, from embed's embeddings (empty without them)."""
    path = run_dir / "embed" / schema.FEATURES
    if not path.exists() or not rows:
        return {}
    import faiss

    emb = vectors_from_arrow(read_table(path, columns=[schema.EMBEDDING])[schema.EMBEDDING])
    if len(emb) != curated.num_rows:
        return {}
    trusted = np.flatnonzero(usable_mask(curated) & (split_array(curated) == schema.TRUSTED)
                             & np.isfinite(emb).all(axis=1))
    if len(trusted) == 0:
        return {}
    # Cosine, the similarity every stage uses (select.knn); one normalize call, so an all-zero
    # row's extra coordinate is the same for both sides.
    x_hat = normalize(np.ascontiguousarray(emb[np.r_[trusted, rows]], dtype=np.float32))
    index = faiss.IndexFlatIP(x_hat.shape[1])
    index.add(np.ascontiguousarray(x_hat[: len(trusted)]))
    _, nn = index.search(np.ascontiguousarray(x_hat[len(trusted):]), min(NEIGHBOURS, len(trusted)))
    return {r: trusted[n[n >= 0]].tolist() for r, n in zip(rows, nn)}


def load_queue(run_dir: Path, *, order: str, flagged_only: bool) -> Queue:
    """What a session shows: export's flagged rows (or all scored rows) not yet decided or skipped."""
    path = run_dir / "export" / schema.CURATED
    if not path.exists():
        raise click.ClickException(f"no export in {run_dir}: review needs export's {schema.CURATED}; run "
                                   f"`winnow export --run-dir {run_dir}` first")
    curated = read_table(path)
    log = run_dir / "review" / CORRECTIONS
    done = seen_ids(read_corrections(log)) if log.exists() else set()
    rows = review_order(curated, order=order, flagged_only=flagged_only, exclude=done).tolist()
    return Queue(curated, rows, known_class_names(curated), labels_array(curated), expected_gain(curated),
                 _neighbours(run_dir, curated, rows))


def _image(curated: pa.Table, row: int, console: Console) -> Text | str:
    """The image as coloured half-blocks where the terminal shows colour, else its path or size."""
    data = curated["image"][row].as_py() if "image" in curated.column_names else None
    uri = curated["uri"][row].as_py() if "uri" in curated.column_names else None
    if data is None and uri is None:
        return "(no image)"
    if not (console.is_terminal and console.color_system):
        return f"image: {uri}" if uri else f"image: {len(data)} bytes"
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data) if data is not None else uri).convert("RGB")
    except OSError:
        return f"image: {uri or 'unreadable bytes'}"
    w = min(32, img.width * 4)
    img = img.resize((w, max(2, round(img.height * w / img.width / 2) * 2)), Image.Resampling.NEAREST)
    px = np.asarray(img)
    text = Text()
    for y in range(0, px.shape[0], 2):
        for x in range(px.shape[1]):
            top, bottom = px[y, x], px[y + 1, x]
            text.append("▀", style=f"rgb({top[0]},{top[1]},{top[2]}) on rgb({bottom[0]},{bottom[1]},{bottom[2]})")
        text.append("\n")
    return text


def _show(q: Queue, row: int, position: int, console: Console) -> None:
    c = q.curated
    label, suggested = q.labels[row], c["suggested_label"][row].as_py()

    def name(k: int | None) -> str:
        return "-" if k is None or k < 0 else f"{q.classes[k]} ({k})"

    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_row("row", f"{position + 1} of {len(q.rows)}   id {c['id'][row].as_py()}")
    t.add_row("given", name(int(label)))
    conf = c["suggested_confidence"][row].as_py()
    t.add_row("suggested", f"{name(suggested)}" + (f"   confidence {conf:.2f}" if conf is not None else ""))
    t.add_row("score", f"{c['noise_score'][row].as_py():.3f}   expected gain {q.gain[row]:.2f}")
    if row in q.neighbours:
        labels = q.labels[q.neighbours[row]]
        t.add_row("neighbours", ", ".join(q.classes[k] for k in labels) + "   (nearest trusted rows)")
    console.print(t)
    console.print(_image(c, row, console))
    console.print("  ".join(f"[bold]{k}[/bold] {v}" for k, v in KEYS.items()))


def _key() -> str:
    """One key press; from a pipe or a test's input, the next character ("" at the end: quit)."""
    while True:
        key = click.getchar() if sys.stdin.isatty() else sys.stdin.read(1)
        if key not in ("\n", "\r", " "):
            return key


def _ask_label(q: Queue) -> int | None:
    """A class name or index, typed; None (back to the row) on an empty answer."""
    while True:
        answer = click.prompt("label (name or index, empty to go back)", default="", show_default=False).strip()
        if not answer:
            return None
        if answer in q.classes:
            return q.classes.index(answer)
        if answer.isdigit() and int(answer) < len(q.classes):
            return int(answer)
        click.echo(f"unknown class {answer!r}; classes: {', '.join(q.classes)}")


def review_session(run_dir: Path, *, order: str = "gain", flagged_only: bool = True, reviewer: str = "",
                   console: Console | None = None) -> dict[str, int]:
    """Run one review session; returns the number of decisions taken per action."""
    console = console or Console()
    reviewer = reviewer or getpass.getuser()
    log = run_dir / "review" / CORRECTIONS
    q = load_queue(run_dir, order=order, flagged_only=flagged_only)
    counts: dict[str, int] = {}
    if not q.rows:
        console.print("nothing to review: every flagged row has a decision" if log.exists()
                      else "nothing to review: export flagged no rows")
        return counts
    index = {rid: i for i, rid in enumerate(q.curated["id"].to_pylist())}
    i = 0
    while i < len(q.rows):
        row = q.rows[i]
        _show(q, row, i, console)
        key = _key()
        rid = q.curated["id"][row].as_py()
        label = None
        if key in ("q", ""):
            break
        if key == "u":
            mine = [d for d in standing(read_corrections(log)) if d.reviewer == reviewer] if log.exists() else []
            if not mine:
                console.print("nothing to undo")
                continue
            append_decision(log, Decision(mine[-1].id, "undo", None, reviewer, now()))
            counts["undo"] = counts.get("undo", 0) + 1
            back = index[mine[-1].id]
            if back in q.rows[:i]:
                i = q.rows.index(back)
            else:  # decided in an earlier session: show it again here
                q.rows.insert(i, back)
            continue
        if key == "a":
            suggested = q.curated["suggested_label"][row].as_py()
            if suggested is None:
                console.print("this row has no suggestion; press l to set a label")
                continue
            action, label = "accept", int(suggested)
        elif key == "k":
            action, label = "keep", int(q.labels[row])
        elif key == "l":
            label = _ask_label(q)
            if label is None:
                continue
            action = "relabel"
        elif key == "d":
            action = "drop"
        elif key == "s":
            action = "skip"
        else:
            console.print(f"unknown key {key!r}; keys: {', '.join(KEYS)}")
            continue
        append_decision(log, Decision(rid, action, label, reviewer, now()))
        counts[action] = counts.get(action, 0) + 1
        i += 1
    decided = sum(v for k, v in counts.items() if k != "undo")
    console.print(f"{decided} decision(s) recorded in {log}; apply them with "
                  f"`winnow ingest <source> --run-dir {run_dir} --corrections {log}`")
    return counts


@click.command("review")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/demo"),
              show_default=True, help="Run directory with an export.")
@click.option("--order", type=click.Choice(ORDERS), default="gain", show_default=True,
              help="gain: most labels corrected per decision first; score: noise score; class: by given class.")
@click.option("--all-rows", is_flag=True, help="Continue past the flagged rows to every scored training row.")
@click.option("--reviewer", default="", help="Name recorded with each decision (default: the login name).")
def review_cmd(run_dir: Path, order: str, all_rows: bool, reviewer: str) -> None:
    """Review flagged rows one key per decision; decisions are saved at once and a new session resumes.

    Keys: a accept the suggestion, k keep the given label, l set a label, d drop, s skip,
    u undo, q quit.

    Example:
      winnow review --run-dir runs/demo
    """
    if not run_dir.is_dir():
        raise click.ClickException(f"no run directory {run_dir}; give the --run-dir of an exported run")
    review_session(run_dir, order=order, flagged_only=not all_rows, reviewer=reviewer)
