"""The demo data (digits) through ``--executor beam`` and through the local executor: every artifact
of ingest, embed, select and export must match (ids, labels, errors, flags, selections
exactly; vectors, probabilities, weights and scores within 1e-5).

The local runner runs in memory with two workers (threads of this process: the pipeline is
still serialised, its DoFns pickled, its elements encoded), which starts each of the stages'
~10 pipelines in well under a second where worker processes take ~5 s; and two threads is how
a Python SDK worker runs bundles on Dataflow, the case that found the unit-at-a-time lock of
``map_on_workers``. Worker processes are exercised by tests/beam/test_beam_units.py (the
cross-fit's heads fitted in other processes equal the local fit bit for bit).

The digits are cut to 600 rows and the embed warm-up to 1 epoch to keep the test near a
minute; nothing else differs from the demo's settings for these stages.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.beam.compare import compare_stage
from winnow.pipeline.cli import main

STAGES = {
    "ingest": ["ingest", "digits", "--max-rows", "600", "--inject-noise", "uniform:0.4", "--trusted-per-class", "10"],
    "embed": ["embed", "--warmup", "1", "--head-iters", "30", "--batch-size", "64"],
    "select": ["select", "--budget", "0.1"],
    "export": ["export", "--policy", "coreset", "--shard-rows", "200"],
}
BEAM = ["--executor", "beam", "--beam-option", "direct_num_workers=2", "--beam-option",
        "direct_running_mode=in_memory"]


def _run(root: Path, extra: list[str]) -> dict[str, dict]:
    runner = CliRunner()
    out = {}
    for stage, args in STAGES.items():
        res = runner.invoke(main, [*args, "--run-dir", str(root), "--device", "cpu", "--seed", "3", "--json", "-q", *extra])
        assert res.exit_code == 0, f"{stage} {extra}: {res.output}"
        out[stage] = json.loads(res.stdout)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    local, beam = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("beam")
    _run(local, [])
    _run(beam, BEAM)
    return local, beam


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_beam_artifacts_equal_local(runs: tuple[Path, Path], stage: str):
    local, beam = runs
    assert compare_stage(local, beam, stage) == []


@pytest.mark.slow
def test_the_comparison_sees_a_difference(runs: tuple[Path, Path], tmp_path: Path):
    # Guard against a comparison that passes everything: one changed selection must show.
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    local, _ = runs
    (tmp_path / "select").mkdir()
    table = pq.read_table(local / "select" / "coreset.parquet")
    flipped = table.set_column(1, table.schema.field("selected"), pc.invert(table["selected"]))
    pq.write_table(flipped, tmp_path / "select" / "coreset.parquet")
    (tmp_path / "select" / "stage.json").write_text("{}")
    assert any("selected" in p for p in compare_stage(local, tmp_path, "select"))


@pytest.mark.slow
def test_the_executor_is_recorded_but_not_part_of_the_cache_key(runs: tuple[Path, Path]):
    local, beam = runs
    for stage in STAGES:
        a = json.loads((local / stage / "stage.json").read_text())
        b = json.loads((beam / stage / "stage.json").read_text())
        assert (a["executor"], b["executor"]) == ("local", "beam")
        assert a["cache_key"] == b["cache_key"] and a["digest"] == b["digest"]
    # The beam run's results are the local executor's cache: re-running locally is a no-op.
    res = CliRunner().invoke(main, [*STAGES["select"], "--run-dir", str(beam), "--device", "cpu", "--seed", "3",
                                    "--json", "-q"])
    assert res.exit_code == 0 and json.loads(res.stdout)["cached"] is True


@pytest.mark.slow
def test_crossfit_backbone_on_beam_equals_local(runs: tuple[Path, Path], tmp_path: Path):
    # The fold networks are trained on the driver from the same options: same probs as local.
    import shutil

    local, _ = runs
    args = [*STAGES["embed"], "--crossfit", "backbone", "--folds", "2", "--device", "cpu", "--seed", "3", "--json", "-q"]
    roots = []
    for name, extra in (("local", []), ("beam", BEAM)):
        root = tmp_path / name
        shutil.copytree(local / "ingest", root / "ingest")
        res = CliRunner().invoke(main, [*args, "--run-dir", str(root), *extra])
        assert res.exit_code == 0, f"{name}: {res.output}"
        assert len(json.loads(res.stdout)["metrics"]["fold_backbone_accuracy"]) == 2
        roots.append(root)
    assert compare_stage(roots[0], roots[1], "embed") == []


@pytest.mark.slow
def test_a_killed_beam_embed_resumes_from_its_finished_shards(runs: tuple[Path, Path], tmp_path: Path):
    # The worker that finishes a shard saves it; kill -9 right after the first save (the in-memory
    # runner runs the workers' code in this process), rerun: the finished shard is loaded, the
    # others embedded, and the result equals an uninterrupted local run.
    import os
    import shutil
    import signal
    import subprocess
    import sys

    from winnow.pipeline.rundir import KILL_AFTER_SAVES_ENV

    local, _ = runs
    args = ["embed", "--warmup", "0", "--head-iters", "30", "--batch-size", "64", "--shard-size", "200",
            "--device", "cpu", "--seed", "3", "--json", "-q"]
    in_memory = ["--executor", "beam", "--beam-option", "direct_running_mode=in_memory",
                 "--beam-option", "direct_num_workers=1"]
    killed, fresh = tmp_path / "killed", tmp_path / "fresh"
    for root in (killed, fresh):
        shutil.copytree(local / "ingest", root / "ingest")
    env = {**os.environ, KILL_AFTER_SAVES_ENV: "1", "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-m", "winnow.pipeline.cli", *args, "--run-dir", str(killed), *in_memory],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, f"expected a SIGKILL, got {proc.returncode}: {proc.stderr[-2000:]}"
    assert not (killed / "embed").exists(), "a killed stage commits nothing"
    assert len(list((killed / ".work" / "embed").rglob("shard-*.pt"))) == 1, "the finished shard survives the kill"

    res = CliRunner().invoke(main, [*args, "--run-dir", str(killed), *in_memory])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout)["metrics"]
    assert (metrics["shards"], metrics["shards_loaded"], metrics["images_embedded"]) == (3, 1, 400)
    assert not (killed / ".work" / "embed").exists(), "checkpoints are removed once the stage commits"
    res = CliRunner().invoke(main, [*args, "--run-dir", str(fresh)])
    assert res.exit_code == 0, res.output
    assert compare_stage(fresh, killed, "embed") == []
