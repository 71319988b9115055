"""Every Python snippet of the README runs, as written, against a curated digits run at
``runs/demo`` (the session's, made by examples/curate_digits.py with the demo's options), so the
snippets cannot drift from the code again."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.api.conftest import ROOT, one_thread_env

BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)


def test_the_readme_has_its_python_snippets():
    assert len(BLOCKS) >= 3
    assert any("ManifestDataset(" in b for b in BLOCKS) and any("winnow.export(" in b for b in BLOCKS)


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_snippet_runs(curated_dir, index: int):
    cwd, _ = curated_dir
    done = subprocess.run([sys.executable, "-c", BLOCKS[index]], cwd=cwd, env=one_thread_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"README python block {index} failed:\n{BLOCKS[index]}\n{done.stderr[-3000:]}"
    if "winnow.export(" in BLOCKS[index]:
        # the README's stage calls are the example's and the demo's: the session's run answers them
        assert "StageRun('export', cached" in done.stdout, done.stdout
