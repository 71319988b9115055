"""`winnow demo` end to end: every stage on digits, the table's numbers, and a cached rerun."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from winnow.pipeline.cli import main


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


@pytest.fixture
def mlp_run(demo_run, tmp_path) -> tuple[Path, list[str], dict]:
    """A copy of the demo run whose `winnow train` is an MLP on the embeddings (3 epochs):
    the run directory, the common CLI arguments and the train metrics."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(demo_run[0], run)
    args = ["--run-dir", str(run), "--device", "cpu", "--json", "-q"]
    res = CliRunner().invoke(main, ["train", "--features", "embedding", "--model", "mlp", "--epochs", "3", *args])
    assert res.exit_code == 0, res.output
    return run, args, json.loads(res.stdout)["metrics"]


@pytest.mark.slow
def test_train_on_embeddings_joins_them_from_the_features_table(mlp_run):
    """train.parquet carries no vectors: --features embedding joins embed's column by id."""
    run, args, metrics = mlp_run
    assert metrics["test_accuracy"] > 0.8, metrics
    res = CliRunner().invoke(main, ["evaluate", *args])
    assert res.exit_code == 0, res.output
    downstream = json.loads(res.stdout)["metrics"]["downstream"]
    assert downstream["plain"]["test_accuracy"] > 0.3 and downstream["curated"] == {
        k: metrics[k] for k in ("test_accuracy", "best_test_accuracy")}
    res = CliRunner().invoke(main, ["train", "--features", "nope", "--model", "mlp", *args])
    assert res.exit_code == 1 and "'nope'" in res.output and "embedding" in res.output


@pytest.mark.slow
def test_evaluate_compares_export_policies(mlp_run):
    """--policies trains `winnow train`'s model on train.parquet as each policy would write it."""
    from dataclasses import replace

    from winnow.pipeline.io.embed import with_feature_column
    from winnow.pipeline.io.export import export_result
    from winnow.pipeline.io.train import test_table
    from winnow.pipeline.rundir import RunDir
    from winnow.stages.export.params import ExportParams
    from winnow.stages.train.core import train_model
    from winnow.stages.train.params import TrainParams

    run, args, _ = mlp_run
    before = (run / "evaluate" / "evaluation.json").read_text()
    # A bad option value is bad usage: exit 2, checked before anything runs.
    res = CliRunner().invoke(main, ["evaluate", "--no-downstream", "--policies", "soft,everything", *args])
    assert res.exit_code == 2 and "'everything'" in res.output and "soft" in res.output
    assert (run / "evaluate" / "evaluation.json").read_text() == before  # nothing half-written

    res = CliRunner().invoke(main, ["evaluate", "--no-downstream", "--policies", "soft, drop-flagged", *args])
    assert res.exit_code == 0, res.output
    downstream = json.loads(res.stdout)["metrics"]["downstream"]
    assert set(downstream) == {"curated", "policy soft", "policy drop-flagged"}
    # the same numbers as exporting with that policy and training by hand
    rd = RunDir(run)
    params = TrainParams(features="embedding", model="mlp", epochs=3)
    test = with_feature_column(rd, test_table(rd), "embedding", what="test")
    table = export_result(rd, replace(ExportParams(), policy="drop-flagged"), seed=0).train
    assert table["weight"].to_numpy().min() == 1.0  # drop-flagged: only kept rows, weight 1
    expected = train_model(with_feature_column(rd, table, "embedding", what="t"), test, params,
                           num_classes=10, seed=0).metrics["test_accuracy"]
    assert downstream["policy drop-flagged"]["test_accuracy"] == expected
    assert 0.5 < downstream["policy soft"]["test_accuracy"] <= 1.0
