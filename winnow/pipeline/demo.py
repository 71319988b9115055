"""``winnow demo``: its settings, declared once, and the summary it prints and returns."""

from __future__ import annotations

import json
from typing import Any

from winnow.pipeline import contract
from winnow.pipeline.rundir import RunDir
from winnow.stages.common import schema

# Each stage's options for the demo (the run-level ones are RunSettings' defaults, run_dir runs/demo).
DEMO_RUN_DIR = "runs/demo"
DEMO_CONFIG: dict[str, dict[str, Any]] = {
    "ingest": {"source": "digits", "inject_noise": "uniform:0.4", "trusted_per_class": 10},
    "embed": {},
    "select": {},
    "weight": {"method": "l2rw", "rounds": 2, "epochs": 5},
    "export": {"policy": "weight"},
    "train": {},
    "evaluate": {},
    "report": {},
}


def describe(config: dict[str, dict[str, Any]]) -> str:
    """The demo's data in words, from its ingest options: ``digits, 40% uniform label noise, 10
    trusted images per class``; the CLI's help, the table it prints and the API's docstring say
    this, so that they follow :data:`DEMO_CONFIG` when it changes."""
    ingest = config["ingest"]
    kind, _, rate = ingest["inject_noise"].partition(":")
    return (f"{ingest['source']}, {float(rate):.0%} {kind} label noise, "
            f"{ingest['trusted_per_class']} trusted images per class")


DEMO_DESCRIPTION = describe(DEMO_CONFIG)


def demo_summary(run: RunDir) -> dict[str, Any]:
    """What the demo found against the truth, and where its manifests and report are."""
    evaluation = json.loads(run.path("evaluate", contract.EVALUATION).read_text())
    flags = evaluation["flags"].get("overall", evaluation["flags"])
    return {
        "run_dir": str(run.root),
        "flags": {"precision": flags.get("precision"), "recall": flags.get("recall"), "f1": flags.get("f1"),
                  "auroc": flags.get("auroc_score")},
        "downstream": evaluation.get("downstream", {}),
        "manifests": {name: str(run.stage_dir("export") / name) for name in (schema.CURATED, schema.TRAIN_MANIFEST, schema.FLAGS)},
        "report": str(run.stage_dir("report") / schema.REPORT),
    }


def print_demo(summary: dict[str, Any], console: Any) -> None:
    """The demo's summary as a table on ``console`` (``winnow demo`` without ``--json``)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"winnow demo: {DEMO_DESCRIPTION}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for k, v in summary["flags"].items():
        table.add_row(f"flags {k}", "n/a" if v is None else f"{v:.3f}")
    for name, acc in summary["downstream"].items():
        if "test_accuracy" in acc:
            table.add_row(f"test accuracy, {name} training", f"{acc['test_accuracy']:.3f}")
    console.print(table)
    for name, path in summary["manifests"].items():
        console.print(Text(f"{name}: {path}"))
    console.print(Text(f"report: {summary['report']}"))
    console.print(f"({summary.get('seconds', 0)} s)")

