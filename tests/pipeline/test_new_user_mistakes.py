"""Mistakes a new user makes are said on the terminal (issue 20): an export that lacks an upstream
stage, a select budget that is a row count, options of a run made by another winnow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from winnow.pipeline.cli import main


def _cli(run: Path, *args: str) -> object:
    return CliRunner().invoke(main, [*args, "--run-dir", str(run), "--threads", "1"])


@pytest.fixture(scope="module")
def features_run(tmp_path_factory) -> Path:
    """Digits as a feature table with a trusted split, ingested (no network anywhere)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = np.arange(0, len(d.target), 3)
    labels = d.target[keep]
    split = np.array(["train"] * len(keep), dtype=object)
    rng = np.random.default_rng(0)
    for c in range(10):
        split[rng.permutation(np.flatnonzero(labels == c))[:5]] = "trusted"
    root = tmp_path_factory.mktemp("mistakes")
    pq.write_table(pa.table({"id": [f"d{i}" for i in keep], "label": labels, "split": list(split),
                             "embedding": list((d.data[keep] / 16.0).astype(np.float32))}), root / "feats.parquet")
    run = root / "run"
    res = _cli(run, "ingest", str(root / "feats.parquet"), "--features", "embedding", "-q")
    assert res.exit_code == 0, res.output
    return run


def test_export_right_after_ingest_says_embed_is_missing(tmp_path: Path):
    run = tmp_path / "run"
    assert _cli(run, "ingest", "digits", "--max-rows", "300", "--trusted-per-class", "3", "-q").exit_code == 0
    res = _cli(run, "export")
    assert res.exit_code == 0, res.output  # the files are right for what exists: nothing scored
    assert f"export: no embeddings or class probabilities (run `winnow embed --run-dir {run}`" in res.output
    assert "nothing is flagged" in res.output
    assert "no embeddings" not in _cli(run, "export", "-q").output  # -q: only errors


def test_budget_above_one_is_named_a_row_count(features_run: Path):
    res = _cli(features_run, "select", "--budget", "2")
    assert res.exit_code == 0, res.output
    assert "select: budget 2 = a row count (a fraction is < 1); 10 rows selected (at least one per class: " \
           "10 classes)" in res.output
    res = _cli(features_run, "select", "--budget", "0.1")
    assert res.exit_code == 0 and "row count" not in res.output


def test_export_without_weight_says_weight_is_missing(features_run: Path):
    res = _cli(features_run, "export", "--json")
    assert res.exit_code == 0, res.output
    assert f"export: no weights (run `winnow weight --run-dir {features_run}`" in res.stderr
    assert json.loads(res.stdout)["stage"] == "export"  # stdout stays machine-readable


def test_an_option_renamed_since_the_run_asks_for_force(features_run: Path, tmp_path: Path):
    """Reading an older stage.json's params raised an uncaught TypeError; now a message, nothing deleted."""
    assert _cli(features_run, "select", "--budget", "0.2", "-q").exit_code == 0
    record_path = features_run / "select" / "stage.json"
    record = json.loads(record_path.read_text())
    record["params"]["old_budget"] = record["params"].pop("budget")
    record_path.write_text(json.dumps(record))
    files = sorted(p.name for p in (features_run / "select").iterdir())
    res = _cli(features_run, "weight", "--subset", "coreset", "--epochs", "1")
    assert res.exit_code == 1, res.output
    assert (f"select in {features_run} was made with options this winnow no longer has (old_budget); "
            f"re-run it with `winnow select --run-dir {features_run} --force`") in res.output
    assert "Traceback" not in res.output and not (features_run / "weight").exists()
    assert sorted(p.name for p in (features_run / "select").iterdir()) == files


def _hard_features(root: Path, rows: int = 1000) -> Path:
    """Clustered features whose classes overlap (centres x 0.15): a linear head underfits them."""
    from benchmarks.synthetic import clustered_features, write_table

    return write_table(clustered_features(rows, seed=0, scale=0.15, trusted_per_class=30), root / "hard.parquet")


def test_meta_weight_net_weighing_high_losses_up_is_said(tmp_path: Path, features_run: Path):
    run = tmp_path / "run"
    res = _cli(run, "ingest", str(_hard_features(tmp_path)), "--features", "embedding", "-q")
    assert res.exit_code == 0, res.output
    assert _cli(run, "embed", "--model", "features", "-q").exit_code == 0
    res = _cli(run, "weight", "--method", "mwn")
    assert res.exit_code == 0, res.output
    assert "weight: Meta-Weight-Net learned to weigh high-loss rows UP" in res.output
    assert "weigh high-loss rows UP" not in _cli(run, "weight", "--method", "mwn", "-q").output  # -q: only errors
    # On digits' pixels, which a head fits, its curve falls and nothing is said.
    import shutil

    digits = tmp_path / "digits"
    shutil.copytree(features_run, digits)
    assert _cli(digits, "embed", "--model", "features", "-q").exit_code == 0
    res = _cli(digits, "weight", "--method", "mwn")
    assert res.exit_code == 0, res.output
    assert "Meta-Weight-Net" not in res.output
