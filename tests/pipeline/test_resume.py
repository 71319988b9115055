"""kill -9 in the middle of a resumable stage, rerun, and get the same result as an
uninterrupted run (the weight stage checkpoints every epoch, embed every shard)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from tests.conftest import write_digits_features
from winnow.pipeline.cli import main
from winnow.pipeline.rundir import KILL_AFTER_SAVES_ENV


def _winnow(args: list[str]) -> None:
    res = CliRunner().invoke(main, args + ["-q"])
    assert res.exit_code == 0, res.output


def _record(run: Path, stage: str) -> dict:
    import json

    return json.loads((run / stage / "stage.json").read_text())


def _killed(args: list[str], after_saves: int) -> None:
    """Run `winnow ARGS` in a subprocess that SIGKILLs itself after `after_saves` checkpoints."""
    env = {**os.environ, KILL_AFTER_SAVES_ENV: str(after_saves), "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-m", "winnow.pipeline.cli", *args, "-q"], env=env, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, f"expected a SIGKILL, got {proc.returncode}: {proc.stderr[-2000:]}"


@pytest.fixture(scope="module")
def feature_table(tmp_path_factory) -> Path:
    """Digits as a feature table (pixels as embedding): the cheapest realistic input."""
    path = tmp_path_factory.mktemp("feat") / "feats.parquet"
    write_digits_features(path)
    return path


def _prepare(run: Path, feature_table: Path) -> None:
    _winnow(["ingest", str(feature_table), "--features", "embedding", "--run-dir", str(run)])
    _winnow(["embed", "--run-dir", str(run), "--model", "features", "--folds", "3"])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["l2rw", "mwn"])
def test_weight_resumes_after_kill9(tmp_path: Path, feature_table: Path, method: str) -> None:
    # One thread count for the killed run and the rerun: it is part of the cache key, and a checkpoint
    # is only resumed by the key that wrote it.
    args = ["weight", "--method", method, "--rounds", "2", "--epochs", "3", "--device", "cpu", "--threads", "1"]
    killed, fresh = tmp_path / "killed", tmp_path / "fresh"
    for run in (killed, fresh):
        _prepare(run, feature_table)
    _killed(args + ["--run-dir", str(killed)], after_saves=4)  # dies in round 2
    assert not (killed / "weight").exists(), "a killed stage commits nothing"
    assert list((killed / ".work" / "weight").rglob("*.pt")), "the epoch checkpoints survive the kill"
    _winnow(args + ["--run-dir", str(killed)])
    _winnow(args + ["--run-dir", str(fresh)])
    assert _record(killed, "weight")["metrics"]["resumed_from_epoch"] == 4, "the rerun resumed after epoch 4"
    assert _record(fresh, "weight")["metrics"]["resumed_from_epoch"] == 0
    a = pq.read_table(killed / "weight" / "weights.parquet")
    b = pq.read_table(fresh / "weight" / "weights.parquet")
    assert a.equals(b), "resumed run must equal the uninterrupted run"
    assert not (killed / ".work" / "weight").exists(), "checkpoints are removed once the stage commits"


def test_a_stage_refuses_upstream_outputs_made_from_an_earlier_ingest(tmp_path: Path, feature_table: Path) -> None:
    """ingest, embed; re-ingest other data; export alone must not join embed's old probabilities."""
    run = tmp_path / "run"
    _prepare(run, feature_table)
    _winnow(["export", "--run-dir", str(run)])
    _winnow(["ingest", str(feature_table), "--features", "embedding", "--run-dir", str(run),
             "--inject-noise", "uniform:0.1"])
    res = CliRunner().invoke(main, ["export", "--run-dir", str(run), "-q"])
    assert res.exit_code == 1 and "embed's outputs were computed from an earlier ingest" in res.output
    assert "winnow embed --run-dir" in res.output
    _winnow(["embed", "--run-dir", str(run), "--model", "features", "--folds", "3"])
    _winnow(["export", "--run-dir", str(run)])
    manifest = pq.read_table(run / "ingest" / "manifest.parquet")
    assert pq.read_table(run / "export" / "curated.parquet")["label"].equals(manifest["label"])
