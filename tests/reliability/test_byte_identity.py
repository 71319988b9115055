"""Two full runs of every stage in two run directories give the same bytes: every Parquet, JSON,
model and HTML file, and every ``stage.json`` once its timings are left out (nothing
timing-dependent may reach an output file, whose digest is the next stage's cache input). The runs
are the kill matrix's short configuration (400 digits, every stage, one thread), half the demo's
time, so that the suite's heavy tests stay few."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from benchmarks.reliability.kill_matrix import leftovers, reference
from winnow.pipeline.io.train import untimed
from winnow.pipeline.rundir import json_digest


def _full_run(folder: Path) -> Path:
    """Every stage, as ``winnow run`` in a new process; returns the run directory."""
    folder.mkdir()
    return reference(folder)


KEY_FIELDS = ("stage", "params", "inputs", "seed", "device", "threads", "winnow")


def _fingerprint(run: Path) -> dict[str, str]:
    """sha256 of each file by its path in the run directory; stage.json files without timings and
    without the code digest (another person editing ``stages/`` between the runs changes it) and
    the cache key that depends on it (checked apart: a function of the recorded key fields only)."""
    out = {}
    for path in sorted(p for p in run.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.name == "stage.json":
            record = untimed(json.loads(data))
            assert record["cache_key"] == json_digest({k: record[k] for k in KEY_FIELDS}), "the key holds nothing else"
            record["inputs"].pop("code")
            record.pop("cache_key")
            data = json.dumps(record, sort_keys=True).encode()
        out[path.relative_to(run).as_posix()] = hashlib.sha256(data).hexdigest()
    return out


@pytest.mark.slow
def test_two_full_runs_are_byte_identical(tmp_path: Path) -> None:
    a, b = _full_run(tmp_path / "a"), _full_run(tmp_path / "b")
    fa, fb = _fingerprint(a), _fingerprint(b)
    assert sorted(fa) == sorted(fb)
    assert {"export/flags.parquet", "embed/features.parquet", "train/metrics.json", "report/report.html"} <= set(fa)
    assert [name for name in fa if fa[name] != fb[name]] == []
    assert leftovers(a) == [] and leftovers(b) == []
    for stage in ("embed", "train", "report"):  # the records carry timings, and they are all that differ
        ra, rb = (json.loads((r / stage / "stage.json").read_text()) for r in (a, b))
        assert ra["digest"] == rb["digest"] and ra["timings"]["seconds"] >= 0
        assert ra["inputs"]["code"] != rb["inputs"]["code"] or ra["cache_key"] == rb["cache_key"]
    assert "seconds" not in json.loads((a / "train" / "metrics.json").read_text())
