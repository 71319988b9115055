"""Without the ``beam`` extra winnow imports and runs locally, and ``--executor beam`` says what to
install. Each case runs the CLI in a fresh process in which ``import apache_beam`` fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HINT = "pip install 'winnow-curate[beam]'"
# sys.modules[name] = None makes every later `import name` raise ImportError.
NO_BEAM = "import sys; sys.modules['apache_beam'] = None\n"


def _winnow(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    code = NO_BEAM + "from winnow.pipeline.cli import main\nmain()\n"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_executor_beam_without_apache_beam_names_the_extra(tmp_path: Path):
    done = _winnow("ingest", "digits", "--run-dir", str(tmp_path / "r"), "--executor", "beam", "--threads", "1",
                   "-q", cwd=tmp_path)
    assert done.returncode != 0
    assert HINT in done.stderr and "--executor local" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "r" / "ingest" / "stage.json").exists()


def test_run_with_executor_beam_without_apache_beam_names_the_extra(tmp_path: Path):
    config = tmp_path / "p.toml"
    config.write_text('executor = "beam"\nthreads = 1\nstages = ["ingest"]\n[ingest]\nsource = "digits"\n')
    done = _winnow("run", str(config), "--run-dir", str(tmp_path / "r"), "-q", cwd=tmp_path)
    assert done.returncode != 0
    assert HINT in done.stderr and "Traceback" not in done.stderr


def test_cli_imports_and_runs_locally_without_apache_beam(tmp_path: Path):
    done = _winnow("ingest", "digits", "--run-dir", str(tmp_path / "r"), "--trusted-per-class", "2", "--threads", "1",
                   "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r" / "ingest" / "manifest.parquet").is_file()


def test_importing_winnow_loads_neither_beam_nor_torch():
    code = ("import sys, winnow, winnow.pipeline.cli\n"
            "print(sorted(m for m in ('apache_beam', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
