"""`winnow demo` end to end: every stage on digits, the table's numbers, and a cached rerun."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipeline.cli import main


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("demo") / "run"
    res = CliRunner().invoke(main, ["demo", "--run-dir", str(run), "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    return run, json.loads(res.stdout)


@pytest.mark.slow
def test_demo_finds_the_noise_and_helps_training(demo_run):
    run, summary = demo_run
    flags = summary["flags"]
    assert flags["f1"] > 0.9 and flags["auroc"] > 0.95, flags
    acc = summary["downstream"]
    assert acc["curated"]["test_accuracy"] > acc["plain"]["test_accuracy"] + 0.05, acc
    for path in [*summary["manifests"].values(), summary["report"]]:
        assert Path(path).is_file()
    curated = pq.read_table(summary["manifests"]["curated.parquet"])
    for column in ("id", "label", "split", "error", "true_label", "selected", "coreset_weight", "weight",
                   "noise_score", "noise_flag", "suggested_label", "suggested_confidence"):
        assert column in curated.column_names
    assert curated.num_rows == 1797, "every manifest row is in curated.parquet"


@pytest.mark.slow
def test_demo_rerun_is_cached_and_inspect_reads_it(demo_run):
    run, _ = demo_run
    res = CliRunner().invoke(main, ["demo", "--run-dir", str(run), "--device", "cpu"])
    assert res.exit_code == 0
    assert res.output.count("cached") == 8, res.output
    res = CliRunner().invoke(main, ["inspect", "--run-dir", str(run), "--top", "5", "--json"])
    rows = json.loads(res.stdout)["rows"]
    assert len(rows) == 5 and rows[0]["noise_score"] >= rows[-1]["noise_score"]
    res = CliRunner().invoke(main, ["inspect", "--run-dir", str(run), "--top", "3"])
    assert res.exit_code == 0 and "suggested" in res.output and "noise score" in res.output
    res = CliRunner().invoke(main, ["evaluate", "--run-dir", str(run), "--device", "cpu"])
    assert res.exit_code == 0 and "flags against the truth" in res.output and "plain training" in res.output
    res = CliRunner().invoke(main, ["inspect", "--run-dir", str(run), "--class", "nope"])
    assert res.exit_code == 1 and "nope" in res.output


@pytest.mark.slow
def test_train_on_embeddings_joins_them_from_the_features_table(demo_run, tmp_path):
    """train.parquet carries no vectors: --features embedding joins embed's column by id."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(demo_run[0], run)
    args = ["--run-dir", str(run), "--device", "cpu", "--json", "-q"]
    res = CliRunner().invoke(main, ["train", "--features", "embedding", "--model", "mlp", "--epochs", "3", *args])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout)["metrics"]
    assert metrics["test_accuracy"] > 0.8, metrics
    res = CliRunner().invoke(main, ["evaluate", *args])
    assert res.exit_code == 0, res.output
    downstream = json.loads(res.stdout)["metrics"]["downstream"]
    assert downstream["plain"]["test_accuracy"] > 0.3 and downstream["curated"] == {
        k: metrics[k] for k in ("test_accuracy", "best_test_accuracy")}
    res = CliRunner().invoke(main, ["train", "--features", "nope", "--model", "mlp", *args])
    assert res.exit_code == 1 and "'nope'" in res.output and "embedding" in res.output
