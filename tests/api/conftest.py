"""One curated digits run per session, made by examples/curate_digits.py through the Python API.

Its options are the demo's, so the run directory is laid out as ``runs/demo`` under a temporary
folder: the README's snippets, which read ``runs/demo``, run there unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "curate_digits.py"


def one_thread_env() -> dict[str, str]:
    """The environment of a child process: one CPU thread (a shared 2-core machine), winnow importable."""
    return {**os.environ, "WINNOW_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="session")
def curated_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(folder holding runs/demo, the example's stdout) after running the example there."""
    cwd = tmp_path_factory.mktemp("api")
    done = subprocess.run([sys.executable, str(EXAMPLE)], cwd=cwd, env=one_thread_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return cwd, done.stdout
