"""What ``pip install .`` installs: one import name, ``winnow``, and apache-beam only as an extra.

The wheel is built from a copy of the working tree (build/ and *.egg-info stay out of the
repository), offline and without build isolation: the venv's setuptools builds it in seconds.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(".git", ".venv", ".*_cache", "runs", "build", "dist", "*.egg-info", "__pycache__")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=SKIP)  # the whole tree: a stray package at the top must show
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         str(src), "-w", str(tmp / "out")],
        capture_output=True, text=True, cwd=tmp,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = (tmp / "out").glob("winnow_curate-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_installs_only_the_winnow_package(wheel: zipfile.ZipFile):
    tops = {name.split("/")[0] for name in wheel.namelist()}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert len(dist_info) == 1 and next(iter(dist_info)).startswith("winnow_curate-")
    assert tops - dist_info == {"winnow"}, f"top-level names besides winnow: {sorted(tops - dist_info - {'winnow'})}"
    names = set(wheel.namelist())
    # every subpackage made it, and nothing of the repository's other folders did
    for module in ("winnow/__init__.py", "winnow/pipeline/cli.py", "winnow/pipeline/api.py",
                   "winnow/pipeline/beam/__init__.py", "winnow/stages/select/core.py", "winnow/models/__init__.py"):
        assert module in names
    assert not [n for n in names if n.startswith(("winnow/tests", "winnow/benchmarks")) or "/tests/" in n]
    # and every file of the package folder, package data (the report's templates) included
    on_disk = {p.relative_to(ROOT).as_posix() for p in (ROOT / "winnow").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert not sorted(on_disk - names), f"files of winnow/ missing from the wheel: {sorted(on_disk - names)[:5]}"


def _metadata(wheel: zipfile.ZipFile) -> list[str]:
    (meta,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return wheel.read(meta).decode().splitlines()


def test_apache_beam_is_only_in_the_beam_extra(wheel: zipfile.ZipFile):
    requires = [line.split(":", 1)[1].strip() for line in _metadata(wheel) if line.startswith("Requires-Dist:")]
    beam = [r for r in requires if r.lower().startswith("apache-beam")]
    assert beam and all(r.endswith('extra == "beam"') for r in beam), beam
    assert "Provides-Extra: beam" in _metadata(wheel)
    core = [r for r in requires if "extra ==" not in r]
    assert core and not [r for r in core if "beam" in r.lower()]


def test_console_script_points_into_the_package(wheel: zipfile.ZipFile):
    (entry,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "winnow = winnow.pipeline.cli:main" in wheel.read(entry).decode()
