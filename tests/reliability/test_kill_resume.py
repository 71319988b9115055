"""kill -9 at a random moment of every stage, rerun: the same bytes as an uninterrupted run and
nothing left behind (the harness is ``benchmarks.reliability.kill_matrix``, which does 5 kills a stage).

Every stage runs as its own process on one CPU thread (results are bit-exact for one thread
count), on 400 digits with a 4-epoch warm-up. Every stage commits through the same
``RunDir.commit``; the suite kills the three whose own writes add risk (embed and weight resume
checkpoints, export writes sharded manifests), about 22 s; all eight run in the benchmark's matrix
(5 kills each: ``python -m benchmarks.reliability.kill_matrix``), which keeps the suite's heavy
tests few.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks.reliability import kill_matrix as km
from winnow.pipeline.rundir import KILL_AFTER_SAVES_ENV
from winnow.pipeline.runner import code_digest


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return km.reference(tmp_path_factory.mktemp("kill"))


SUITE_STAGES = ("embed", "weight", "export")


@pytest.mark.slow
@pytest.mark.parametrize("stage", SUITE_STAGES)
def test_a_stage_killed_at_a_random_moment_reruns_to_the_same_bytes(reference: Path, tmp_path: Path,
                                                                     stage: str) -> None:
    rng = random.Random(f"kill-{stage}")  # seeded: a failure names a moment that can be replayed
    kill = km.kill_and_rerun(reference, tmp_path, stage, mode="fresh", rng=rng)
    assert kill.identical, f"{stage} killed after {kill.delay_s}s: {kill.differing} differ from the reference"
    assert kill.leftovers == [], f"{stage} killed after {kill.delay_s}s left {kill.leftovers}"
    assert set(km.file_digests(tmp_path / "run" / stage)) == set(km.file_digests(reference / stage))


@pytest.mark.slow
def test_a_killed_force_rerun_then_a_cached_rerun_leaves_no_checkpoints(reference: Path, tmp_path: Path) -> None:
    """The issue's case, at a fixed moment: ``--force`` killed after its second checkpoint (warm-up
    epoch 2), then a plain rerun, which is a cache hit, used to keep warmup.pt forever."""
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    config = km.write_config(tmp_path / "embed.toml", run, ("embed",), 400)
    proc = subprocess.run(km.command(config, "--force"), cwd=km.ROOT, env={**km.env(), KILL_AFTER_SAVES_ENV: "2"},
                          capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert list((run / ".work" / "embed").rglob("*.pt")), "the killed rerun left its checkpoints"
    rerun = subprocess.run(km.command(config, "--json"), cwd=km.ROOT, env=km.env(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert km.leftovers(run) == []
    assert km.file_digests(run / "embed") == km.file_digests(reference / "embed")
    if json.loads((reference / "embed" / "stage.json").read_text())["inputs"]["code"] != code_digest():
        pytest.skip("stages/ or models/ changed since the reference ran (a shared checkout): no cache hit to test")
    assert json.loads(rerun.stdout)["stages"]["embed"]["cached"], "the rerun was a cache hit"


def test_leftovers_names_what_a_killed_run_leaves(tmp_path: Path) -> None:
    """The check itself: each kind of debris is reported (so an empty list means something)."""
    for name in (".tmp-abcd1234-embed", ".old-abcd1234-embed", ".work/embed/0123", "select"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / ".lock-abcd1234-embed").touch()
    (tmp_path / "ingest").mkdir()
    (tmp_path / "ingest" / "stage.json").write_text("{}")
    (tmp_path / "ingest" / ".summary.json.tmp-0badf00d").touch()
    assert km.leftovers(tmp_path) == sorted([".lock-abcd1234-embed", ".old-abcd1234-embed", ".tmp-abcd1234-embed",
                                             ".work", "ingest/.summary.json.tmp-0badf00d", "select"])


def test_the_suite_kills_a_subset_of_the_matrix_stages() -> None:
    assert set(SUITE_STAGES) < set(km.STAGES)
