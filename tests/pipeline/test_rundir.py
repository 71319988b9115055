"""The run-directory contract: atomic commits that survive SIGKILL, cache hits and invalidation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from winnow.pipeline.artifacts import read_table, read_vectors, write_table
from winnow.pipeline.rundir import DiskCheckpoints, RunDir
from winnow.pipeline.runner import run_stage
from winnow.stages.common.arrow import vectors_to_arrow

KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from winnow.pipeline.rundir import RunDir
    run = RunDir(sys.argv[1])
    with run.commit("stage", {"params": {"v": 2}}) as out:
        (out / "small.txt").write_text("new")
        with open(out / "big.bin", "wb") as f:
            f.write(b"x" * 1000)
            f.flush()
            Path(sys.argv[2]).write_text("writing")
            while True:          # keep writing until killed
                f.write(b"y" * 4096)
                f.flush()
                time.sleep(0.001)
    """
)


def _good_state(run: RunDir) -> None:
    with run.commit("stage", {"params": {"v": 1}}) as out:
        (out / "small.txt").write_text("old")
        (out / "big.bin").write_bytes(b"o" * 100)


def _kill_when_ready(cmd: list[str], ready: Path) -> None:
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": os.getcwd()})
    deadline = time.time() + 60
    while not ready.exists():
        assert proc.poll() is None, "writer exited before it was killed"
        assert time.time() < deadline, "writer never started writing"
        time.sleep(0.02)
    time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_mid_write_keeps_previous_state(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    _good_state(run)
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER)
    _kill_when_ready([sys.executable, str(script), str(run.root), str(tmp_path / "ready")], tmp_path / "ready")

    # The killed writer left its temporary folder; the stage folder is the previous good one.
    assert any(p.name.startswith(".tmp-") for p in run.root.iterdir())
    stage = run.root / "stage"
    assert (stage / "small.txt").read_text() == "old"
    assert (stage / "big.bin").read_bytes() == b"o" * 100
    assert json.loads((stage / "stage.json").read_text())["params"] == {"v": 1}
    RunDir(run.root)  # the next start cleans up
    assert sorted(p.name for p in run.root.iterdir()) == ["stage"]


def test_kill_between_the_two_renames_is_repaired(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    _good_state(run)
    os.replace(run.root / "stage", run.root / ".old-abcd1234-stage")  # as if killed right after the first rename
    RunDir(run.root)
    assert (run.root / "stage" / "small.txt").read_text() == "old"
    assert run.record("stage")["params"] == {"v": 1}


def test_another_command_leaves_a_running_stage_alone(tmp_path: Path) -> None:
    """`winnow inspect` started while embed runs used to delete embed's temporary folder."""
    run = RunDir(tmp_path / "run")
    with run.commit("stage", {"params": {"v": 2}}) as out:
        (out / "small.txt").write_text("new")
        RunDir(run.root)  # what every command does first (flock conflicts across open files too)
        assert (out / "small.txt").read_text() == "new"
    assert run.record("stage")["params"] == {"v": 2}
    assert sorted(p.name for p in run.root.iterdir()) == ["stage"]


def test_failed_stage_leaves_nothing(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    with pytest.raises(RuntimeError):
        with run.commit("stage", {}) as out:
            (out / "partial.txt").write_text("half")
            raise RuntimeError("boom")
    assert list(run.root.iterdir()) == []


def _adapter(log: list[str], name: str, payload: str):
    def adapter(ctx):
        log.append(name)
        (ctx.out / "out.txt").write_text(payload)
        return {"payload": payload}

    return adapter


def test_cache_hit_and_invalidation_downstream(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    log: list[str] = []

    def pipeline(a_param: int, force: bool = False) -> None:
        run_stage(run, "a", params={"p": a_param}, inputs={"src": "s1"}, adapter=_adapter(log, "a", f"a{a_param}"),
                  seed=0, device="cpu", force=force)
        run_stage(run, "b", params={}, inputs={"a": run.record("a")["digest"]}, adapter=_adapter(log, "b", "b"),
                  seed=0, device="cpu")

    pipeline(1)
    assert log == ["a", "b"]
    pipeline(1)
    assert log == ["a", "b"], "an identical second run must be a cache hit"
    pipeline(2)
    assert log == ["a", "b", "a", "b"], "a changed parameter re-runs the stage and everything downstream"
    pipeline(2, force=True)
    assert log[-1] == "a", "--force re-runs; the unchanged output keeps downstream cached"
    (run.root / "a" / "out.txt").unlink()
    pipeline(2)
    assert log[-2:] == ["a", "a"] and (run.root / "a" / "out.txt").is_file(), "a deleted output is made again"
    out = run_stage(run, "a", params={"p": 2}, inputs={"src": "s2"}, adapter=_adapter(log, "a", "a2"), seed=0, device="cpu")
    assert not out.cached, "a changed input re-runs the stage"
    out = run_stage(run, "a", params={"p": 2}, inputs={"src": "s2"}, adapter=_adapter(log, "a", "a2"), seed=1, device="cpu")
    assert not out.cached, "a changed seed re-runs the stage"


def test_stage_json_records_what_it_should(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run_stage(run, "a", params={"p": 1}, inputs={"src": "x"}, adapter=_adapter([], "a", "z"), seed=3, device="cpu")
    rec = run.record("a")
    assert rec["params"] == {"p": 1} and rec["inputs"] == {"src": "x"} and rec["seed"] == 3
    assert rec["metrics"] == {"payload": "z"}
    assert "torch" in rec["versions"] and rec["timings"]["seconds"] >= 0
    assert set(rec["outputs"]) == {"out.txt"}


def test_vectors_read_without_copy(tmp_path: Path) -> None:
    import numpy as np

    x = np.random.default_rng(0).normal(size=(1000, 16)).astype(np.float32)
    write_table(pa.table({"id": [str(i) for i in range(1000)], "v": vectors_to_arrow(x)}), tmp_path / "t.parquet")
    table = read_table(tmp_path / "t.parquet", columns=["v"])
    from winnow.stages.common.arrow import vectors_from_arrow

    v = vectors_from_arrow(table["v"])
    # The array is a view of Arrow's values buffer (the global allocation counter this test used
    # to compare moved with other threads' frees when the whole suite ran).
    assert table["v"].num_chunks == 1
    buf = table["v"].chunk(0).values.buffers()[1]
    assert buf.address <= v.__array_interface__["data"][0] < buf.address + buf.size, "must not copy"
    assert not v.flags.writeable and np.array_equal(v, x)
    assert np.array_equal(read_vectors(tmp_path / "t.parquet", "v"), x)


def test_null_vectors_read_as_nan(tmp_path: Path) -> None:
    import numpy as np

    x = np.ones((3, 2), np.float32)
    col = vectors_to_arrow(x, valid=np.array([True, False, True]))
    pq.write_table(pa.table({"v": col}), tmp_path / "t.parquet")
    v = read_vectors(tmp_path / "t.parquet", "v")
    assert np.isnan(v[1]).all() and (v[[0, 2]] == 1).all()


def test_sharded_write_reads_back(tmp_path: Path) -> None:
    table = pa.table({"id": [str(i) for i in range(25)], "x": list(range(25))})
    parts = write_table(table, tmp_path / "t.parquet", shard_rows=10)
    assert len(parts) == 3
    assert read_table(tmp_path / "t.parquet").equals(table)


def test_disk_checkpoints_roundtrip_and_refuse_pickles(tmp_path: Path) -> None:
    import torch

    ck = DiskCheckpoints(tmp_path / "ck")
    assert ck.load("epoch") is None
    ck.save("epoch", {"w": torch.arange(3), "n": 2})
    state = ck.load("epoch")
    assert state["n"] == 2 and torch.equal(state["w"], torch.arange(3))

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"x": Evil()}, tmp_path / "ck" / "bad.pt")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        ck.load("bad")


def _checkpointing(log: list[str], fail: bool = False, scratch: bool = False):
    """An adapter that saves one checkpoint (and, with ``scratch``, temporary files as Beam's
    executor does beside it), then fails or writes its output."""

    def adapter(ctx):
        log.append("ran")
        ctx.checkpoints.save("step", {"n": 1})
        if scratch:
            (ctx.checkpoints.folder / "beam-embed-0123abcd").mkdir()
            (ctx.checkpoints.folder / "beam-embed-0123abcd" / "part-0").write_text("rows")
            (ctx.checkpoints.folder / "rows.tmp").write_text("rows")
        if fail:
            raise RuntimeError("boom")
        (ctx.out / "out.txt").write_text("x")
        return {}

    return adapter


def _work_files(run: RunDir) -> list[str]:
    return sorted(p.relative_to(run.root).as_posix() for p in (run.root / ".work").rglob("*")) \
        if (run.root / ".work").exists() else []


def test_a_failed_stage_leaves_no_empty_work_folder(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")

    def refuse(ctx):
        raise ValueError("bad input")

    with pytest.raises(ValueError):
        run_stage(run, "a", params={}, inputs={}, adapter=refuse, seed=0, device="cpu")
    assert sorted(p.name for p in run.root.iterdir()) == [], "no .work, no .tmp, no .lock"
    with pytest.raises(RuntimeError):
        run_stage(run, "a", params={}, inputs={}, adapter=_checkpointing([], fail=True, scratch=True), seed=0,
                  device="cpu")
    kept = _work_files(run)
    assert kept[-1].endswith("/step.pt") and len(kept) == 3, f"the checkpoint is kept, the scratch files not: {kept}"
    run_stage(run, "a", params={}, inputs={}, adapter=_checkpointing([]), seed=0, device="cpu")
    assert sorted(p.name for p in run.root.iterdir()) == ["a"], "completion removes the checkpoints and .work"


def test_a_cache_hit_removes_what_a_killed_force_rerun_left(tmp_path: Path) -> None:
    """The issue's case: a --force rerun killed mid-way, then a plain (cached) rerun."""
    run = RunDir(tmp_path / "run")
    log: list[str] = []
    args = dict(params={"p": 1}, inputs={}, seed=0, device="cpu")
    run_stage(run, "a", adapter=_checkpointing(log), **args)
    key = run.record("a")["cache_key"]
    leftover = DiskCheckpoints(run.work_dir("a", key))  # what the killed --force rerun saved
    leftover.save("shard-00000", {"n": 1})
    (run.work_dir("a", key) / ".warmup.pt.tmp-0badf00d").write_bytes(b"half")  # killed mid-save
    (run.root / ".work" / "a" / "0123456789abcdef").mkdir()  # an old key's empty folder
    out = run_stage(run, "a", adapter=_checkpointing(log), **args)
    assert out.cached and log == ["ran"]
    assert not (run.root / ".work").exists(), _work_files(run)


def test_completion_keeps_the_checkpoints_of_a_stage_another_process_runs(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    args = dict(inputs={}, seed=0, device="cpu")
    with run.commit("a", {}):  # another run of stage a, with other parameters, is under way
        live = DiskCheckpoints(run.work_dir("a", "f" * 64))
        live.save("epoch", {"n": 1})
        run_stage(run, "a", params={"p": 1}, adapter=_checkpointing([]), **args)
        assert _work_files(run) == [".work/a", ".work/a/ffffffffffffffff", ".work/a/ffffffffffffffff/epoch.pt"]
    run_stage(run, "a", params={"p": 1}, adapter=_checkpointing([]), **args)
    assert not (run.root / ".work").exists(), "once no other run is live, a completion clears the stage's work"


def test_thread_count_is_part_of_the_key_where_given(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    log: list[str] = []
    args = dict(params={}, inputs={}, seed=0, device="cpu")
    run_stage(run, "a", adapter=_adapter(log, "a", "x"), threads=1, thread_dependence="the training", **args)
    assert run_stage(run, "a", adapter=_adapter(log, "a", "x"), threads=1, **args).cached
    assert not run_stage(run, "a", adapter=_adapter(log, "a", "x"), threads=2, thread_dependence="the training",
                         **args).cached, "another thread count is another key"
    rec = run.record("a")
    assert rec["threads"] == 2 and rec["thread_dependence"] == "the training"
    run_stage(run, "b", adapter=_adapter(log, "b", "x"), **args)
    assert run.record("b")["threads"] is None and run.record("b")["thread_dependence"] is None


def test_read_vectors_over_row_groups_and_shards(tmp_path: Path) -> None:
    """Several row groups (the last partial) and a sharded folder read into one (n, d) array."""
    import numpy as np

    x = np.arange(26 * 3, dtype=np.float32).reshape(26, 3)
    valid = np.ones(26, bool)
    valid[11] = False
    table = pa.table({"id": [str(i) for i in range(26)], "v": vectors_to_arrow(x, valid=valid)})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=4)
    assert pq.ParquetFile(tmp_path / "t.parquet").num_row_groups == 7
    want = x.copy()
    want[11] = np.nan
    np.testing.assert_array_equal(read_vectors(tmp_path / "t.parquet", "v"), want)
    write_table(table, tmp_path / "s.parquet", shard_rows=10)
    np.testing.assert_array_equal(read_vectors(tmp_path / "s.parquet", "v"), want)
