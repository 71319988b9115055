"""What a stage command prints on the terminal (stderr) after its stage: a stage's numbers for a
person (:data:`PRINTERS`), and notes about what the user may not have meant (:data:`NOTES`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from winnow.pipeline import contract
from winnow.pipeline.io.export import audit_counts, missing_upstream
from winnow.pipeline.rundir import RunDir


def print_evaluation(run: RunDir, console: Any) -> None:
    """The evaluate stage's numbers as a table (what `winnow evaluate` shows a person)."""
    from rich.table import Table
    from rich.text import Text

    evaluation = json.loads(run.path("evaluate", contract.EVALUATION).read_text())
    overall = evaluation["flags"]["overall"]
    table = Table(title="flags against the truth")
    for col in ("", "precision", "recall", "F1", "AUROC (score)", "AUROC (weight)"):
        table.add_column(col, justify="right")

    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    table.add_row("all", *[fmt(overall.get(k)) for k in ("precision", "recall", "f1", "auroc_score", "auroc_weight")])
    for name, m in evaluation["flags"].get("per_class", {}).items():
        table.add_row(Text(str(name)), *[fmt(m.get(k)) for k in ("precision", "recall", "f1", "auroc_score", "auroc_weight")])
    console.print(table)
    for name, acc in evaluation.get("downstream", {}).items():
        if "test_accuracy" in acc:
            console.print(f"test accuracy, {name} training: {acc['test_accuracy']:.3f} "
                          f"(best {acc.get('best_test_accuracy', float('nan')):.3f})")


PRINTERS: dict[str, Callable[[RunDir, Any], None]] = {"evaluate": print_evaluation}


def select_notes(run: RunDir, params: Any) -> list[str]:
    """A budget of 1 or more is a row count, not a fraction: say so with what it selected."""
    if params.budget < 1:
        return []
    metrics = (run.record("select") or {}).get("metrics", {})
    selected, classes = metrics.get("n_selected"), len(metrics.get("per_class", {}))
    line = f"select: budget {params.budget:g} = a row count (a fraction is < 1); {selected} rows selected"
    if selected is not None and selected > params.budget:
        line += f" (at least one per class: {classes} classes)"
    return [line]


def weight_notes(run: RunDir, params: Any) -> list[str]:
    """Meta-Weight-Net's weight is a function of the loss, so its ranking is the loss's, or the
    reverse where its learned curve rises: say so, since the user reads ``weight`` as "clean"."""
    path = run.stage_dir("weight") / contract.MWN_CURVE  # not run.path: a skipped stage has none
    if not path.is_file():
        return []
    import numpy as np
    import pyarrow.parquet as pq

    curve = pq.read_table(path).to_pydict()
    loss, weight = np.asarray(curve["loss"], dtype=float), np.asarray(curve["weight"], dtype=float)
    if np.ptp(weight) == 0 or np.corrcoef(loss, weight)[0, 1] <= 0:
        return []
    return [f"weight: Meta-Weight-Net learned to weigh high-loss rows UP (its curve goes from {weight[0]:.3f} at "
            f"loss 0 to {weight[-1]:.3f} at loss {loss[-1]:.2f}): here its weight ranks likely-mislabelled rows "
            "high, not low (a head that underfits gains most from its high-loss rows, about half of them clean). Export's "
            "meta-agreement check decides whether the weights are used; --method l2rw reads each row's own "
            "gradient instead (docs/design-notes.md, 'Meta-Weight-Net on a hard task')"]


def export_notes(run: RunDir, params: Any) -> list[str]:
    """What export lacks because an upstream stage has not run (:func:`missing_upstream`), and the
    audit's findings that change how a user reads the results: leakage first."""
    lines = missing_upstream(run)
    path = run.stage_dir("export") / "summary.json"
    audit = json.loads(path.read_text()).get("audit") if path.is_file() else None
    if audit:
        dups = audit.get("duplicates") or {}
        leak = dups.get("leakage") or {}
        if leak.get("rows"):
            a, b = leak["examples"][0]
            lines.append(f"export: LEAKAGE: {leak['rows']} test row(s) duplicate a train or trusted row (e.g. {a!r} "
                         f"~ {b!r}); test accuracy on them measures memory, not generalisation: drop them from the "
                         "test split (duplicate_of in curated.parquet names each twin)")
        c = audit_counts(audit)
        if c["exact_duplicates"] or c["near_duplicates"] or c["outliers"] or c["near_empty_classes"]:
            lines.append(f"export: audit: {c['exact_duplicates'] or 0} exact and {c['near_duplicates'] or 0} near "
                         f"duplicate row(s), {c['outliers'] or 0} outlier(s)"
                         + (f", near-empty classes {c['near_empty_classes']}" if c["near_empty_classes"] else "")
                         + " (summary.json 'audit'; columns duplicate_of, duplicate_kind, outlier_flag)")
    return lines


# Lines printed after a stage (unless -q), whether it ran or was cached.
NOTES: dict[str, Callable[[RunDir, Any], list[str]]] = {"select": select_notes, "weight": weight_notes,
                                                         "export": export_notes}
