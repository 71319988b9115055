"""Stages that run no torch do not load it (0.65 GB of resident memory for its CUDA build), and
the thread count they record is the one torch would have chosen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_digits_features

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**base, **env}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


@pytest.mark.parametrize("env", [{}, {"OMP_NUM_THREADS": "1"}])
def test_default_threads_is_torchs_default_without_importing_torch(env):
    out = _python("import sys; from winnow.stages.common.threads import default_threads; "
                  "ours, loaded = default_threads(), 'torch' in sys.modules; import torch; "
                  "print(ours, loaded, torch.get_num_threads())", **env)
    ours, loaded, torchs = out.split()
    assert loaded == "False" and ours == torchs


def test_ingest_select_export_never_load_torch(tmp_path):
    src = tmp_path / "f.parquet"
    write_digits_features(src)
    run = tmp_path / "run"
    out = _python(f"""
import sys
from winnow.pipeline.cli import main
for args in (["ingest", {str(src)!r}, "--features", "embedding"], ["select", "--budget", "0.2"], ["export"]):
    try:
        main([*args, "--run-dir", {str(run)!r}, "-q"])
    except SystemExit as exc:
        assert not exc.code, (args, exc.code)
print("torch" in sys.modules)
""")
    assert out.splitlines()[-1] == "False"
    assert (run / "export" / "curated.parquet").exists()
